"""Property-based fuzzing of the readers and the config loader (hypothesis, derandomized: CI repeats).

Readers: any bytes in a .tsv/.csv/.jsonl file, any table written as one, and any small parquet either
load into pairs that cleaning accounts for row by row (kept + dropped = input), or raise a
:class:`DataError`. Config loader: any YAML text and any YAML value give an :class:`ExperimentConfig` or
a :class:`ConfigError`. Any other exception fails the test (hypothesis shrinks it to a minimal input).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raydetox.config import CleaningConfig, ConfigError, DataConfig, ExperimentConfig, load_config
from raydetox.data.clean import clean_pairs
from raydetox.data.io import DataError, load_pairs

# Bounded so that the whole module runs in well under a minute on a shared 2-core machine.
FUZZ = settings(derandomize=True, max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The lexicon rules need a lexicon: not what the readers are about.
CLEANING = CleaningConfig(drop_already_neutral=False, drop_still_toxic=False)

COLUMNS = ["toxic", "neutral", "neutral2", "lang", "id", "toxicity_score", "toxic_sentence", "neutral_sentence",
           "source", "target", "other", ""]
# Text that breaks naive readers: quotes, separators, line breaks, BOMs, NULs, placeholders, RTL, CJK.
HOSTILE = ["\"", "'", ",", "\t", "\n", "\r\n", "\r", "\ufeff", "\x00", "\u2028", "\\", "NaN", "None", "null", "N/A",
           "{", "}", "[", "]", ":", "en", "EN", "xx", "ሰላም", "مرحبا", "你好", "Привіт", " ", "", "\ud800", "\udfff"]
cells = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE) | st.text(max_size=5), max_size=4).map("".join),
    st.text(max_size=12),
)


@contextmanager
def _file(name: str, data: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="raydetox-fuzz-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        yield path


def _load_or_data_error(path: Path, **kw: Any) -> int | None:
    """Rows loaded (cleaning accounts for each of them), or None for a DataError."""
    try:
        pairs = load_pairs(DataConfig(source=str(path), **kw))
    except DataError as err:
        assert str(err) and "\n" not in str(err), repr(err)
        return None
    result = clean_pairs(pairs, CLEANING)
    assert len(result.kept) + len(result.dropped) == len(pairs)
    assert sorted([*result.kept["id"], *result.dropped["id"]]) == sorted(pairs["id"])
    # What prepare does next: the loaded cells must be writable (valid Unicode) as parquet and CSV.
    result.kept.to_parquet(io.BytesIO())
    result.dropped.to_csv(io.StringIO())
    result.dropped.to_parquet(io.BytesIO())
    return len(pairs)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".tsv", ".csv", ".jsonl"]), lang=st.booleans())
def test_any_bytes_load_or_data_error(data: bytes, suffix: str, lang: bool) -> None:
    with _file("pairs" + suffix, data) as path:
        _load_or_data_error(path, default_lang="en" if lang else None)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=6))
    return header, rows


@FUZZ
@given(table=tables(), fmt=st.sampled_from(["tsv", "csv", "jsonl"]), lang=st.booleans())
def test_any_table_loads_every_row_or_data_error(table: tuple[list[str], list[list[str]]], fmt: str,
                                                 lang: bool) -> None:
    header, rows = table
    if fmt == "jsonl":
        # ensure_ascii: lone surrogates and every control character travel as escapes.
        text = "".join(json.dumps(dict(zip(header, row))) + "\n" for row in rows)
        n_input = len(rows)
    else:
        buffer = io.StringIO(newline="")
        csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n").writerows([header, *rows])
        text = buffer.getvalue()
        n_input = len(rows)
    data = text.encode("utf-8", errors="surrogatepass")
    with _file(f"pairs.{fmt}", data) as path:
        loaded = _load_or_data_error(path, default_lang="en" if lang else None)
    if loaded is not None:
        # A delimited row that is blank is not a row; a JSON object with a duplicate key is one row.
        blank = sum(1 for row in rows if fmt != "jsonl" and not "".join(row).strip() and len(row) == 1)
        assert loaded == n_input - blank


PARQUET_VALUES = {
    "string": (pa.string(), cells.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))),
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "bool": (pa.bool_(), st.booleans()),
    "binary": (pa.binary(), st.binary(max_size=6)),
    "list": (pa.list_(pa.string()), st.lists(st.text(max_size=4), max_size=2)),
}


@st.composite
def parquet_tables(draw: st.DrawFn) -> pa.Table:
    names = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=5))
    n = draw(st.integers(0, 5))
    arrays = []
    for _ in names:
        kind, values = PARQUET_VALUES[draw(st.sampled_from(sorted(PARQUET_VALUES)))]
        column = draw(st.lists(st.none() | values, min_size=n, max_size=n))
        arrays.append(pa.array(column, type=kind))
    return pa.table(arrays, names=names)  # names may repeat: pyarrow allows it, pandas does not


@FUZZ
@given(table=parquet_tables(), lang=st.booleans())
def test_any_parquet_loads_every_row_or_data_error(table: pa.Table, lang: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="raydetox-fuzz-") as tmp:
        path = Path(tmp) / "pairs.parquet"
        pq.write_table(table, path)
        loaded = _load_or_data_error(path, default_lang="en" if lang else None)
    assert loaded is None or loaded == table.num_rows


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes_as_parquet_is_a_data_error(data: bytes) -> None:
    with _file("pairs.parquet", data) as path:
        _load_or_data_error(path, default_lang="en")


# ------------------------------------------------------------------------------------------ config


def _config_keys() -> dict[str, list[str]]:
    """Top-level key → its section's field names (from the dataclasses, so new keys are fuzzed too)."""
    defaults = ExperimentConfig()
    return {
        f.name: [g.name for g in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else []
        for f in dataclasses.fields(ExperimentConfig)
        for value in [getattr(defaults, f.name)]
    }


SECTIONS = _config_keys()
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["easy", "medium", "hard", "full", "en", "..", "/tmp", "hub", "tsv"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                              max_size=3),
                      max_leaves=8)


@st.composite
def config_values(draw: st.DrawFn) -> Any:
    """A YAML value shaped like a config: known sections and keys with arbitrary values, or anything."""
    if draw(st.integers(0, 4)) == 0:
        return draw(values)
    raw: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True)):
        keys = SECTIONS[section]
        if keys and draw(st.booleans()):
            raw[section] = {k: draw(values) for k in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))}
        else:
            raw[section] = draw(values)
    return raw


def _load_or_config_error(path: Path, overrides: dict[str, Any] | None = None) -> None:
    try:
        cfg = load_config(path, overrides)
    except ConfigError as err:
        # The file, then (when the overrides made it wrong) which ones: "FILE with overrides of a.b, c: ..."
        named = str(err).startswith(f"{path}: ") or str(err).startswith(f"{path} with overrides of ")
        assert named and "\n" not in str(err), repr(err)
        return
    assert isinstance(cfg, ExperimentConfig)
    for value in (cfg.cleaning.min_chrf, cfg.cleaning.min_length_ratio, cfg.split.train, cfg.data.min_lang_confidence):
        assert not math.isnan(value)


@FUZZ
@given(value=config_values(), overrides=st.none() | st.dictionaries(
    st.sampled_from(["seed", "data.source", "cleaning.min_chrf", "a.b.c", "name"]), scalars, max_size=2))
def test_any_yaml_value_gives_a_config_or_config_error(value: Any, overrides: dict[str, Any] | None) -> None:
    text = yaml.safe_dump(value, allow_unicode=True)
    with _file("exp.yaml", text.encode("utf-8", errors="surrogatepass")) as path:
        _load_or_config_error(path, overrides)


YAML_TOKENS = ["data:", "  source: x", "name:", " ", "\n", "\t", "- ", "[", "]", "{", "}", ": ", "&a ", "*a", "<<: ",
               "!!python/object:os.system", "!!binary", "---", "...", "#", "'", '"', "|", ">", ".nan", ".inf", "~",
               "seed: 1", "seed: -1", "cleaning:", "  min_chrf: ", "sweep:", "  orderings: [[easy, easy]]", "?"]


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.lists(st.sampled_from(YAML_TOKENS), max_size=14).map("".join)))
def test_any_yaml_text_gives_a_config_or_config_error(text: str) -> None:
    with _file("exp.yaml", text.encode("utf-8", errors="surrogatepass")) as path:
        _load_or_config_error(path)


def test_fuzz_strategies_reach_both_outcomes() -> None:
    """The properties would hold vacuously if every input were an error: some must load."""
    with _file("pairs.tsv", b"toxic\tneutral\nyou idiot\tyou\n") as path:
        assert _load_or_data_error(path, default_lang="en") == 1
    with _file("exp.yaml", b"seed: 3\n") as path:
        assert load_config(path).seed == 3
