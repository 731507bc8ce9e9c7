"""Cheap preconditions, checked before any data is read, any model is built or Ray starts: a typo in a
path costs one line instead of a data pipeline, a cluster start-up and a failed trial.

Relative paths resolve against the working directory. Inside a Ray job (``ray job submit``) that is the
job's temporary copy of ``--working-dir``: a relative input must lie inside it (a path that leaves it
would resolve next to the copy, not next to the directory it was copied from), and a relative output
is refused (it would land in the copy, which Ray may delete once the job ends).
"""

from __future__ import annotations

import os
from pathlib import Path

from raydetox.config import ConfigError, ExperimentConfig
from raydetox.data.io import DataError, detect_format

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
    that looks like a hub id ``owner/name`` is left to the loader), ``split.split_file`` and
    ``lexicon.wordlists`` (a plain list must exist; a ``{lang}`` list may lack some languages, which the
    prepare report lists). Inside a Ray job, also the rules of :func:`check_job_path`, and a ``{lang}``
    list's directory must exist: otherwise every language's list would be skipped, e.g. when the files
    were left out of the uploaded working dir (.gitignore).
    """
    source = cfg.data.source
    if cfg.data.format != "hub":
        check_job_path(source, data_key, origin)
    try:
        if cfg.data.format is None:
            detect_format(source)  # also knows hub ids and data-file suffixes
        elif cfg.data.format != "hub" and not Path(source).expanduser().exists():
            raise DataError(f"{source}: file or directory not found")
    except DataError as err:
        raise ConfigError(f"{_where(data_key, origin)}: {err}{_job_hint(source)}") from None
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


def _job_hint(path: str) -> str:
    """Why a relative path may be missing inside a job although it exists where the job was submitted."""
    if in_ray_job() and not Path(path).expanduser().is_absolute():
        return f" ({_job_context()}; files matched by .gitignore or .rayignore are not uploaded)"
    return ""
