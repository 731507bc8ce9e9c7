"""Cheap preconditions, checked before any data is read, any model is built or Ray starts: a typo in a
path costs one line instead of a data pipeline, a cluster start-up and a failed trial."""

from __future__ import annotations

from pathlib import Path

from raydetox.config import ConfigError, ExperimentConfig
from raydetox.data.io import DataError, detect_format


def check_paths(cfg: ExperimentConfig, origin: str = "<config>") -> None:
    """Raise a :class:`ConfigError` naming ``origin`` and the key when a local path of ``cfg`` is missing.

    Checks ``data.source`` (a missing path that looks like a hub id ``owner/name`` is left to the
    loader), ``split.split_file`` and the plain (not ``{lang}``) ``lexicon.wordlists``; relative paths
    are taken from the working directory, as the pipeline reads them. Call it before Ray starts, so a
    typo costs one line instead of a cluster start-up and a failed trial.
    """
    source = cfg.data.source
    try:
        if cfg.data.format is None:
            detect_format(source)  # also knows hub ids and data-file suffixes
        elif cfg.data.format != "hub" and not Path(source).expanduser().exists():
            raise DataError(f"{source}: file or directory not found")
    except DataError as err:
        raise ConfigError(f"{origin}: key 'data.source': {err}") from None
    split_file = cfg.split.split_file
    if split_file is not None and not Path(split_file).expanduser().is_file():
        raise ConfigError(f"{origin}: key 'split.split_file': {split_file}: file not found")
    for i, spec in enumerate(cfg.lexicon.wordlists):
        if "{lang}" not in spec and not Path(spec).expanduser().is_file():
            raise ConfigError(f"{origin}: key 'lexicon.wordlists.{i}': {spec}: word list not found")
