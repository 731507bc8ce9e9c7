"""Pipeline step 2, split: train/validation/test per row of the pairs table.

From a split file, a split column, or a seeded random split per language that keeps rows sharing a
toxic text together (no train/test leak). Later steps learn only from the train rows
(:func:`reference_rows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raydetox.config import ConfigError, SplitConfig
from raydetox.data.io import DataError, read_table
from raydetox.data.pairs import check_pairs, text_key

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""Canonical split names, in the order a duplicate is kept (a train copy wins over an evaluation copy)."""

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "validation": "validation",
    "dev": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
"""Accepted split names (after strip + casefold) → canonical name."""


def _normalise_splits(
    values: pd.Series, ids: pd.Series, origin: str, rows: Sequence[str] | None = None
) -> pd.Series:
    """Map split names through :data:`SPLIT_ALIASES`; the first bad value raises naming its row."""
    canon = values.map(lambda v: SPLIT_ALIASES.get(v.strip().casefold()) if isinstance(v, str) else None)
    bad = canon.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = rows[i] if rows is not None else f"row id {ids.iloc[i]!r}"
        raise DataError(
            f"{origin}, {where}: split {values.iloc[i]!r} is not one of {sorted(SPLIT_ALIASES)}"
        )
    return canon.astype(str)


def _read_split_file(path: Path, ids: pd.Series) -> pd.Series:
    """Split per row of the pairs table from a CSV/TSV with columns ``id`` and ``split``."""
    if not path.is_file():
        raise DataError(f"split file {path}: not found")
    assignment = read_table(path)  # the strict reader: a malformed line is an error naming it
    missing = [c for c in ("id", "split") if c not in assignment.columns]
    if missing:
        raise DataError(f"split file {path}: missing column(s) {missing}; has {list(assignment.columns)}")
    # File row numbers as a spreadsheet shows them: line 1 is the header.
    rows = [f"row {i + 2}" for i in range(len(assignment))]
    assignment["split"] = _normalise_splits(assignment["split"], assignment["id"], f"split file {path}", rows)
    repeated = assignment["id"].duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise DataError(f"split file {path}, {rows[i]}: id {assignment['id'].iloc[i]!r} is listed twice")
    known = set(ids.astype(str))
    unknown = ~assignment["id"].isin(known).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataError(
            f"split file {path}, {rows[i]}: id {assignment['id'].iloc[i]!r} is not in the pairs table "
            f"({int(unknown.sum())} unknown id(s) in all)"
        )
    split = ids.astype(str).map(assignment.set_index("id")["split"])
    absent = split.isna().to_numpy()
    if absent.any():
        example = ids[absent].astype(str).tolist()[:5]
        raise DataError(
            f"split file {path}: {int(absent.sum())} id(s) of the pairs table are missing, e.g. {example}"
        )
    return split.astype(str)


def _group_rank(key: str, seed: int) -> int:
    """A toxic text's place in its language's order: a seeded 64-bit hash of its :func:`text_key`."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, key=str(seed).encode("utf-8"))
    return int.from_bytes(digest.digest(), "big")


def _random_splits(pairs: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """Seeded split per language; rows sharing a toxic text stay together (no train/test leak).

    Each distinct toxic text is ranked by a seeded hash of its text, and the ranked rows are cut at the
    split fractions. A text's rank depends on nothing else, so adding or removing rows (a new data
    version) moves only texts next to a cut from one split to another, never reshuffles the rest, and
    neither row order, ids nor other languages change the result.
    """
    split = np.empty(len(pairs), dtype=object)
    ids = pairs["id"].astype(str).to_numpy()
    toxic = pairs["toxic"].to_numpy()
    langs = pairs["lang"].astype(str).to_numpy()
    for lang in np.unique(langs):
        rows = np.flatnonzero(langs == lang)
        n = len(rows)
        # Empty toxic texts (dropped later by cleaning) must not form one big group.
        keys = [text_key(t) if isinstance(t, str) and t.strip() else f"\0{i}" for t, i in zip(toxic[rows], ids[rows])]
        ranks = [_group_rank(k, cfg.seed) for k in keys]
        order = sorted(range(n), key=lambda j: (ranks[j], keys[j], ids[rows[j]]))
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        codes = pd.factorize(pd.Series(keys, dtype=object))[0]
        # A group goes where its first row lands, so splits are exact (±1 row) for unique toxic texts.
        group_start = pd.Series(position).groupby(codes).transform("min").to_numpy()
        cut_train = round(cfg.train * n)
        cut_val = round((cfg.train + cfg.validation) * n)
        split[rows] = np.where(
            group_start < cut_train, "train", np.where(group_start < cut_val, "validation", "test")
        )
    return split


def split_pairs(pairs: pd.DataFrame, cfg: SplitConfig, split_column: str | None = None) -> pd.DataFrame:
    """Return ``pairs`` with a ``split`` column (train/validation/test); row order is unchanged.

    Source of the split, first that applies: ``cfg.split_file`` (CSV/TSV with columns id,split; every
    table id must appear once, unknown ids are an error naming the file row), then ``split_column``,
    then an existing ``split`` column (values validated, dev/val/valid → validation), else a seeded
    random split stratified by language with fractions ``cfg.train/validation/test`` where rows
    sharing the same toxic text are kept in one split.
    """
    check_pairs(pairs)
    out = pairs.copy()
    if cfg.split_file and split_column:
        raise ConfigError(
            f"split_pairs: both split.split_file ({cfg.split_file!r}) and split column {split_column!r} "
            "are given; use one"
        )
    if cfg.split_file:
        out["split"] = _read_split_file(Path(cfg.split_file), out["id"]).to_numpy()
    elif split_column or "split" in out.columns:
        column = split_column or "split"
        if column not in out.columns:
            raise DataError(f"pairs table: split column {column!r} not found; has {list(out.columns)}")
        out["split"] = _normalise_splits(out[column], out["id"], f"pairs table column {column!r}").to_numpy()
    else:
        out["split"] = _random_splits(out, cfg)
    out["split"] = out["split"].astype(str)
    return out



def reference_rows(table: pd.DataFrame) -> np.ndarray:
    """Rows that define ranks and quantiles: the train split when there is one, else every row."""
    if "split" in table.columns:
        return (table["split"] == "train").to_numpy()
    return np.ones(len(table), dtype=bool)
