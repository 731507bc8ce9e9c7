"""Cheap preconditions, checked before any data is read, any model is built or Ray starts: a typo in a
path costs one line instead of a data pipeline, a cluster start-up and a failed trial.

Relative paths resolve against the working directory. Inside a Ray job (``ray job submit``) that is the
job's temporary copy of ``--working-dir``: a relative input must lie inside it (a path that leaves it
would resolve next to the copy, not next to the directory it was copied from), and a relative output
is refused (it would land in the copy, which Ray may delete once the job ends).

Config paths (:func:`check_paths`), output folders and files (:func:`check_output_dir`,
:func:`check_output_file`), model dirs (:func:`check_model_dir`, JSON only), and where a model's
lexicon is (:func:`find_lexicon`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from raydetox.config import ConfigError, ExperimentConfig
from raydetox.data.io import DataError, detect_format
from raydetox.errors import ModelError

# What raydetox.modeling.save_trained writes beside an adapter: its format and its base model's path.
TRAINED_META = "raydetox_model.json"
# How many folders above a model dir a lexicon is looked for: a sweep's checkpoint sits five below the
# sweep folder that holds data/lexicon.json (NAME/train/train-ID/checkpoint_N/checkpoints/stage-NN-x).
RUN_SEARCH_DEPTH = 5

# Set by Ray's job supervisor in a submitted job's entrypoint (Ray 2.60 strips RAY_JOB_ID there; this one
# carries the job's runtime env and submission id, and Ray's own tasks and actors do not inherit it).
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    """Whether this process is (a child of) the entrypoint of a submitted Ray job."""
    return JOB_ENV in os.environ


def _where(key: str, origin: str) -> str:
    """How an error names a path's source: a command-line option or an environment variable alone, a
    config key with its file."""
    if key.startswith("--"):
        return f"option '{key}'"
    return f"environment variable {key}" if key.isupper() else f"{origin}: key '{key}'"


def _job_context() -> str:
    return (f"inside a Ray job, relative paths resolve in the job's working directory {Path.cwd()} "
            "(a temporary copy of --working-dir)")


def check_job_path(path: str | None, key: str, origin: str = "<config>", output: bool = False) -> None:
    """Inside a Ray job, raise a :class:`ConfigError` naming ``key`` for a relative ``output`` path (it would
    land in the job's temporary copy of the working dir) or a relative input path that leaves that copy
    (``../data`` is not the ``../data`` of the submit-time directory). Outside a job, do nothing."""
    if not path or not in_ray_job() or "://" in path:
        return
    expanded = Path(path).expanduser()
    if expanded.is_absolute():
        return
    if output:
        raise ConfigError(
            f"{_where(key, origin)}: {path}: {_job_context()}, which Ray may delete once the job ends: give an "
            "absolute path (on the cluster's nodes) or a URI such as s3://bucket/prefix"
        )
    if os.path.normpath(expanded).split(os.sep)[0] == os.pardir:
        raise ConfigError(
            f"{_where(key, origin)}: {path}: {_job_context()}, and this path leaves it: give an absolute path "
            "(e.g. $PWD/... expanded at submit time)"
        )


def check_paths(cfg: ExperimentConfig, origin: str = "<config>", data_key: str = "data.source") -> None:
    """Raise a :class:`ConfigError` naming ``origin`` and the key when a local path of ``cfg`` is missing.

    Checks ``data.source`` (named ``data_key``, e.g. ``--data`` when it came from there; a missing path
    that looks like a hub id ``owner/name`` is left to the loader), the embedded base's
    ``model.embedded.sources``, the judge's ``metrics.judge.sources``, ``split.split_file`` and
    ``lexicon.wordlists`` (a plain list must exist; a ``{lang}`` list may lack some languages, which the
    prepare report lists). Inside a Ray job, also the rules of :func:`check_job_path`, and a ``{lang}``
    list's directory must exist: otherwise every language's list would be skipped, e.g. when the files
    were left out of the uploaded working dir (.gitignore).
    """
    _check_source(cfg.data, data_key, origin)
    if cfg.model.name_or_path == "embedded":  # the base's extra pretraining texts
        for i, extra in enumerate(cfg.model.embedded.sources):
            _check_source(extra, f"model.embedded.sources.{i}.source", origin)
    for i, labelled in enumerate(cfg.metrics.judge.sources):
        key = f"metrics.judge.sources.{i}.path"
        check_job_path(labelled.path, key, origin)
        if not Path(labelled.path).expanduser().exists():
            raise ConfigError(f"{origin}: key '{key}': {labelled.path}: file or directory not found"
                              f"{_job_hint(labelled.path)}")
    split_file = cfg.split.split_file
    check_job_path(split_file, "split.split_file", origin)
    if split_file is not None and not Path(split_file).expanduser().is_file():
        raise ConfigError(f"{origin}: key 'split.split_file': {split_file}: file not found{_job_hint(split_file)}")
    for i, spec in enumerate(cfg.lexicon.wordlists):
        key = f"lexicon.wordlists.{i}"
        check_job_path(spec, key, origin)
        if "{lang}" not in spec:
            if not Path(spec).expanduser().is_file():
                raise ConfigError(f"{origin}: key '{key}': {spec}: word list not found{_job_hint(spec)}")
        elif in_ray_job():
            parts = Path(spec).expanduser().parts
            first = next(n for n, part in enumerate(parts) if "{lang}" in part)
            fixed = Path(*parts[:first]) if first else Path(".")  # the directories before any {lang}
            if not fixed.is_dir():
                raise ConfigError(f"{origin}: key '{key}': {spec}: directory {fixed} not found{_job_hint(spec)}")


def _check_source(data: Any, key: str, origin: str) -> None:
    """A data section's ``source`` exists (a missing path that looks like a hub id is the loader's)."""
    source = data.source
    if data.format != "hub":
        check_job_path(source, key, origin)
    try:
        if data.format is None:
            detect_format(source)  # also knows hub ids and data-file suffixes
        elif data.format != "hub" and not Path(source).expanduser().exists():
            raise DataError(f"{source}: file or directory not found")
    except DataError as err:
        raise ConfigError(f"{_where(key, origin)}: {err}{_job_hint(source)}") from None


def _job_hint(path: str) -> str:
    """Why a relative path may be missing inside a job although it exists where the job was submitted."""
    if in_ray_job() and not Path(path).expanduser().is_absolute():
        return f" ({_job_context()}; files matched by .gitignore or .rayignore are not uploaded)"
    return ""


def check_output_dir(path: str | Path, option: str) -> None:
    """Raise a :class:`ConfigError` naming ``option`` unless ``path`` is, or can be created as, a
    writable directory: a file in the way or a read-only folder fails now, not after the work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a directory")
    _check_creatable(path, option)


def check_output_file(path: str | Path, option: str) -> None:
    """Raise a :class:`ConfigError` naming ``option`` unless ``path`` can be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory, not a file")
    _check_creatable(path.parent, option, path)


def _check_creatable(folder: Path, option: str, shown: Path | None = None) -> None:
    """The nearest existing folder of ``folder`` must be a directory that this process may write in."""
    shown = shown or folder
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        what = "a dangling symbolic link" if existing.is_symlink() and not existing.exists() else "not a directory"
        raise ConfigError(f"{option} {shown}: {existing} is {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {shown}: {existing} is not writable")


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object, or a :class:`ModelError` naming the file, line and column."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except UnicodeDecodeError as err:
        raise ModelError(f"{path}: not UTF-8 text: {err.reason} at byte {err.start}") from None
    except OSError as err:
        raise ModelError(f"{path}: cannot read: {err.strerror or err}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def trained_max_source_length(model_dir: str | Path) -> int | None:
    """The ``model.max_source_length`` a model dir was trained with, as ``save_trained`` recorded it in
    :data:`TRAINED_META`; ``None`` without the record (a hub model, a dir saved before it was kept)."""
    meta_file = Path(model_dir) / TRAINED_META
    if not meta_file.is_file():
        return None
    value = _json_object(meta_file).get("max_source_length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{meta_file}: key 'max_source_length' must be a positive integer, got {value!r}")
    return value


def check_model_dir(model_dir: str | Path) -> str | None:
    """Raise a :class:`ModelError` unless ``model_dir`` is a model :func:`raydetox.modeling.load_trained`
    can load; return the base model an adapter names (``None`` for a full model).

    Reads JSON only (no torch, no weights): the dir exists, its ``config.json`` (full model) or
    ``adapter_config.json`` (adapter) parses, and an adapter's base is a local model dir that parses or,
    offline, a hub id in the local cache. Call it before any data is read.
    """
    path = Path(model_dir)
    if not path.exists():
        raise ModelError(f"{path}: model directory not found")
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (a trained model is a folder with config.json or adapter_config.json)")
    adapter_file = path / "adapter_config.json"
    if not adapter_file.is_file():
        _check_full_model(path)
        return None
    adapter = _json_object(adapter_file)
    meta = _json_object(path / TRAINED_META) if (path / TRAINED_META).is_file() else {}
    base = meta.get("base") or adapter.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise ModelError(f"{adapter_file}: key 'base_model_name_or_path' is empty: the adapter names no base model")
    _check_base(base, adapter_file)
    return base


def _check_full_model(path: Path) -> None:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{path}: not a model directory (no config.json nor adapter_config.json)")
    if not isinstance(_json_object(config_file).get("model_type"), str):
        raise ModelError(f"{config_file}: key 'model_type' is missing: not a Hugging Face model config")


def _check_base(base: str, adapter_file: Path) -> None:
    """The adapter's base must be a loadable local dir, or a hub id (offline: one in the local cache)."""
    local = Path(base).expanduser()
    if local.is_dir():
        try:
            _check_full_model(local)
        except ModelError as err:
            raise ModelError(f"{adapter_file}: base model {base!r}: {err}") from None
        return
    if local.is_absolute() or base.startswith((".", "~")) or local.exists():
        raise ModelError(f"{adapter_file}: base model {base!r} not found (moved or deleted since training?)")
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(base)
    except HFValidationError:
        raise ModelError(f"{adapter_file}: base model {base!r} is neither a local folder nor a hub id") from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(base, "config.json"), str):
        raise ModelError(
            f"{adapter_file}: base model {base!r} is neither a local folder nor in the Hugging Face cache, "
            "and the hub is offline (HF_HUB_OFFLINE)"
        )


def run_folders_above(model_dir: str | Path) -> list[Path]:
    """Where a model's run keeps its prepared data: the model dir and up to :data:`RUN_SEARCH_DEPTH`
    folders up (a train run's or a sweep's root), each also with its ``data/`` subfolder; nearest first."""
    path = Path(model_dir).resolve()
    return [c for folder in [path, *path.parents][: RUN_SEARCH_DEPTH + 1] for c in (folder, folder / "data")]


def find_lexicon(model_dir: str | Path) -> Path | None:
    """The ``lexicon.json`` nearest above ``model_dir`` (see :func:`run_folders_above`), or None."""
    return next((f / "lexicon.json" for f in run_folders_above(model_dir) if (f / "lexicon.json").is_file()), None)
