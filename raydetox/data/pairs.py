"""The canonical pairs table that every pipeline step reads and writes, and its check.

A pandas DataFrame with columns ``id`` (str, unique), ``lang`` (str), ``toxic`` (str), ``neutral`` (str,
the first reference) and ``refs`` (list[str], every reference), plus optional ``toxicity_score``
(float) and ``split`` (str: train/validation/test).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import regex

from raydetox.errors import DataError

PAIR_COLUMNS: tuple[str, ...] = ("id", "lang", "toxic", "neutral", "refs")

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "lang", "toxic", "neutral")


_FORMAT_CHARACTERS = regex.compile(r"\p{Cf}+")


def text_key(text: str) -> str:
    """The view under which two texts are the same text: Unicode NFC, format characters (zero-width
    space, BOM, …) removed, whitespace collapsed, casefolded. Splitting, duplicate and identical checks
    share it, so that an NFD or re-cased copy of a test sentence is not a new sentence."""
    return " ".join(_FORMAT_CHARACTERS.sub("", unicodedata.normalize("NFC", text)).split()).casefold()


def check_pairs(pairs: pd.DataFrame) -> None:
    """Raise a ValueError naming the column/row when ``pairs`` is not a valid pairs table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs table: missing column(s) {missing}; has {list(pairs.columns)}")
    for column in ("id", "lang"):
        null = pairs[column].isna()
        if null.any():
            where = int(np.flatnonzero(null.to_numpy())[0])
            raise ValueError(f"pairs table: column {column!r} is empty at row {where}")
    dup = pairs["id"].duplicated(keep=False)
    if dup.any():
        ids = pairs.loc[dup, "id"].unique()[:5].tolist()
        raise ValueError(f"pairs table: column 'id' must be unique; repeated ids: {ids}")


def check_rows(pairs: pd.DataFrame, column: str, bad: np.ndarray | pd.Series, problem: Callable[[Any], str]) -> None:
    """Raise a DataError ("pairs table: row id …, column …: <problem(value)>") at the first row where the
    boolean mask ``bad`` is set; return when no row is bad."""
    rows = np.flatnonzero(np.asarray(bad, dtype=bool))
    if len(rows):
        i = int(rows[0])
        value = pairs[column].iloc[i]
        raise DataError(f"pairs table: row id {pairs['id'].iloc[i]!r}, column {column!r}: {problem(value)}")
