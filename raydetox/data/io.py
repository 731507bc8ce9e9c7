"""Readers: any supported source → the canonical pairs table (see :mod:`raydetox.data`).

Sources: a TSV/CSV/JSONL/parquet file, a directory of per-language files (``LANG-….parquet``,
``LANG.tsv``, …), a dataset saved with ``datasets`` ``save_to_disk`` (Dataset or DatasetDict), or a
Hugging Face hub id (``owner/name``). Every source goes through the same column mapping and validation,
and every problem is a :class:`DataError` whose one-line message names the file, the row (1-based data
row, header excluded; the line for JSONL) and the column. Only the named exceptions of the libraries
that read a file (pyarrow, datasets, huggingface_hub, the OS) are turned into a :class:`DataError`;
anything else is a bug and stays a traceback.

A row's language comes from a language column, else the file or split name, else ``data.default_lang``,
else it is identified from its text (:mod:`raydetox.data.langid`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import logging
import math
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import regex as re

from raydetox.config import LANG_CODE, DataConfig
from raydetox.data.langid import identify, unidentified
from raydetox.errors import DataError, one_line
from raydetox.errors import short as _short

FORMATS: tuple[str, ...] = ("tsv", "csv", "jsonl", "parquet", "dir", "saved", "hub")
FILE_SUFFIXES: dict[str, str] = {
    ".tsv": "tsv",
    ".tab": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Split names that look like 2–3 letter language codes but are not languages.
_SPLIT_NAMES = frozenset({"train", "dev", "val", "valid", "validation", "test", "eval", "all"})
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_ID_COLUMNS = ("id", "idx")
_LANG_COLUMNS = ("lang", "language")
_SCORE_COLUMN = "toxicity_score"
# Whole cells that spreadsheets and pandas write for a missing value (pandas' default NA strings).
_PLACEHOLDERS = frozenset(
    {"nan", "NaN", "-nan", "-NaN", "None", "null", "NULL", "NA", "N/A", "n/a", "<NA>", "#N/A", "#NA"}
)
_HUB_PROBE_SECONDS = 10.0
CAPPED = "capped_rows"
"""Key of :func:`load_pairs`' ``DataFrame.attrs``: the rows ``data.max_rows_per_lang`` left out."""
LANGUAGES_LEFT_OUT = "languages_left_out"
"""Key of :func:`load_pairs`' ``DataFrame.attrs``: rows per language that ``data.languages`` left out."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns feed the pairs table (``None``: the source has no such column)."""

    toxic: str
    neutrals: tuple[str, ...]
    lang: str | None = None
    id: str | None = None
    score: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class _Scheme:
    """A known column naming: a toxic column and its reference columns.

    ``toxic`` may capture a prefix ``p`` (e.g. ``en_`` in s-nlp/paradetox's ``en_toxic_comment``) that
    the reference column names must share; ``n`` captures a reference number for natural ordering.
    """

    name: str
    toxic: str
    neutrals: tuple[str, ...]


_SCHEMES: tuple[_Scheme, ...] = (
    _Scheme("toxic_sentence", r"(?P<p>)toxic_sentence", (r"{p}neutral_sentence(?P<n>\d*)",)),
    _Scheme(
        "toxic_comment",
        r"(?P<p>(?:[a-z]{2,3}_)?)toxic_comment",
        (r"{p}neutral_comment(?P<n>\d*)", r"{p}civil_comment(?P<n>\d*)"),
    ),
    _Scheme("toxic", r"(?P<p>)toxic", (r"{p}neutral(?P<n>\d*)",)),
    _Scheme("source", r"(?P<p>)source", (r"{p}target(?P<n>\d*)",)),
)


@dataclass
class FileTable:
    """A table read from one file, rows numbered 0..n-1, that knows where each row is in the file:
    ``where(i, column)`` is the ``origin: row N, column 'c'`` (JSONL: ``line N``) that error messages quote.
    Read it with :func:`read_file_table`; read its cells with :func:`text_cells` / :func:`lang_code_cells`."""

    frame: pd.DataFrame
    origin: str
    lines: list[int] | None = None  # JSONL: the file line of each row

    def where(self, i: int, column: str | None = None) -> str:
        """``origin: row N, column 'c'`` for the 0-based position ``i``."""
        loc = f"line {self.lines[i]}" if self.lines is not None else f"row {i + 1}"
        return f"{self.origin}: {loc}" + (f", column '{column}'" if column else "")


@dataclass(kw_only=True)
class _Part(FileTable):
    """One table of a pairs source, with what its location implies (language, split, id prefix)."""

    id_prefix: str
    lang: str | None = None
    split: str | None = None
    id_start: int = 0


# ---------------------------------------------------------------------------------------------- formats


def detect_format(source: str) -> str:
    """The format of ``source``: 'tsv', 'csv', 'jsonl', 'parquet', 'dir', 'saved' or 'hub'.

    An existing directory is 'saved' when it holds a ``save_to_disk`` layout, else 'dir'; a file goes by its
    suffix; a non-existent ``owner/name`` without a data-file suffix is a hub id.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return "saved" if _is_saved_dataset(path) else "dir"
    if path.is_file():
        fmt = FILE_SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{source}: unknown format (suffix {path.suffix!r}); expected one of "
                f"{sorted(FILE_SUFFIXES)} or set data.format to one of {list(FORMATS)}"
            )
        return fmt
    if path.exists():
        raise DataError(f"{source}: not a regular file or directory")
    if _HUB_ID.fullmatch(source) and path.suffix.lower() not in FILE_SUFFIXES:
        return "hub"
    raise DataError(f"{source}: file or directory not found (and not a hub id 'owner/name')")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


# ---------------------------------------------------------------------------------------------- columns


def detect_columns(columns: list[str], cfg: DataConfig, origin: str) -> ColumnMap:
    """Map source ``columns`` to the pairs table: explicit ``cfg`` names first, else auto-detection.

    Auto-detection tries the schemes (toxic_sentence; neutral_sentence), ([xx_]toxic_comment;
    neutral_comment*, civil_comment), (toxic; neutral, neutral1..N), (source; target); a scheme matches
    when its toxic column and at least one reference column exist, and exactly one scheme may match.
    """
    columns = [str(c) for c in columns]

    def explicit(name: str | None, key: str) -> str | None:
        if name is not None and name not in columns:
            raise DataError(f"{origin}: column '{name}' (data.{key}) not found; columns: {columns}")
        return name

    toxic = explicit(cfg.toxic_column, "toxic_column")
    neutrals: tuple[str, ...] | None = None
    if cfg.neutral_columns is not None:
        if not cfg.neutral_columns:
            raise DataError(f"{origin}: data.neutral_columns is empty; name at least one reference column")
        neutrals = tuple(explicit(c, "neutral_columns") for c in cfg.neutral_columns)  # type: ignore[misc]

    if toxic is None or neutrals is None:
        toxic, neutrals = _auto_text_columns(columns, toxic, neutrals, origin)
    if toxic in neutrals:
        raise DataError(f"{origin}: column '{toxic}' is both the toxic column and a reference column")

    def auto(name: str | None, key: str, candidates: tuple[str, ...]) -> str | None:
        if name is not None:
            return explicit(name, key)
        return next((c for c in candidates if c in columns), None)

    return ColumnMap(
        toxic=toxic,
        neutrals=neutrals,
        lang=auto(cfg.lang_column, "lang_column", _LANG_COLUMNS),
        id=auto(cfg.id_column, "id_column", _ID_COLUMNS),
        score=auto(cfg.score_column, "score_column", (_SCORE_COLUMN,)),
        split=explicit(cfg.split_column, "split_column"),
    )


def _scheme_neutrals(scheme: _Scheme, prefix: str, columns: list[str], exclude: str | None) -> list[str]:
    """Reference columns of ``scheme`` present in ``columns``, in pattern then numeric order."""
    found: list[tuple[int, int, str]] = []
    for rank, template in enumerate(scheme.neutrals):
        pattern = re.compile(template.replace("{p}", re.escape(prefix)))
        for col in columns:
            m = pattern.fullmatch(col)
            if m and col != exclude:
                found.append((rank, int(m.group("n") or 0), col))
    return [col for *_, col in sorted(found)]


def _auto_text_columns(
    columns: list[str], toxic: str | None, neutrals: tuple[str, ...] | None, origin: str
) -> tuple[str, tuple[str, ...]]:
    """Fill in whichever of the toxic column / reference columns the config left unset."""
    found: list[tuple[str, str, list[str]]] = []  # (scheme, toxic column, its reference columns present)
    for scheme in _SCHEMES:
        if toxic is not None:
            m = re.fullmatch(scheme.toxic, toxic)
            candidates = [(toxic, m.group("p") if m else "")]
        else:
            candidates = [
                (c, m.group("p"))
                for c in columns
                if (m := re.fullmatch(scheme.toxic, c)) and c not in (neutrals or ())
            ]
        found += [(scheme.name, c, _scheme_neutrals(scheme, p, columns, exclude=c)) for c, p in candidates]
    if neutrals is None:
        matches = [(s, c, r) for s, c, r in found if r]
    else:  # references given: any toxic candidate, preferably one whose scheme names those references
        given = list(neutrals)
        matches = [(s, c, given) for s, c, r in found if set(r) & set(given)]
        matches = matches or [(s, c, given) for s, c, _ in found]
    hint = "set data.toxic_column and data.neutral_columns"
    if not matches:
        found_toxic = sorted({c for _, c, _ in found})
        if toxic is None and neutrals is None and found_toxic:
            raise DataError(
                f"{origin}: no reference column for toxic column(s) {found_toxic} among {columns} (expected "
                "e.g. neutral_sentence, neutral_comment, neutral, neutral1 or target); " + hint
            )
        what = "reference" if toxic is not None else "toxic" if neutrals is not None else "toxic/neutral"
        raise DataError(f"{origin}: no {what} columns recognised among {columns}; {hint}")
    if len({(c, tuple(r)) for _, c, r in matches}) > 1:
        listed = "; ".join(f"scheme {s}: toxic='{c}', neutral={r}" for s, c, r in matches)
        raise DataError(f"{origin}: ambiguous columns ({listed}); {hint}")
    _, col, refs = matches[0]
    return col, tuple(refs)


# ---------------------------------------------------------------------------------------------- readers


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text of ``raw`` without a BOM; an undecodable byte is reported by offset and line.

    A NUL in the header line means the file is not UTF-8 text at all (typically UTF-16 without a BOM);
    a NUL further down is left for the cell checks, which name its row and column.
    """
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    # What to do: the encoding a byte came from cannot be known (cp1251, latin-1, …), only named by the user.
    hint = ("; the file looks like UTF-16: save it as UTF-8" if utf16
            else "; save it as UTF-8 (e.g. iconv -f CP1251 -t UTF-8, naming the encoding it was written in)")
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = raw.count(b"\n", 0, offset) + 1
        bad = raw[offset : skip + err.end]
        raise DataError(
            f"{path}: line {line}: undecodable bytes {bad!r} at byte offset {offset} "
            f"(not UTF-8: {err.reason}){hint}"
        ) from err
    first_line = text.split("\n", 1)[0]
    if "\x00" in first_line:
        offset = skip + len(first_line[: first_line.index("\x00")].encode("utf-8"))
        raise DataError(
            f"{path}: line 1: NUL byte at byte offset {offset}: not UTF-8 text "
            "(UTF-16 without a BOM, or a binary file?); save it as UTF-8"
        )
    return text


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as err:  # permissions, I/O errors: the file exists but cannot be read
        raise DataError(f"{path}: cannot read: {one_line(err)}") from err
    if not raw:
        raise DataError(f"{path}: empty file (0 bytes): no rows")
    return raw


def _csv_records(path: Path, text: str, sep: str, name: str, blank_cells: bool = False) -> list[list[str]]:
    """Records of a delimited text, parsed strictly; blank lines skipped (with ``blank_cells``, after the
    header of a one-column text, each is a cell of its own instead); errors name the line.

    Strict parsing matters: a field that starts with an unbalanced quote would otherwise swallow the
    rows after it into one cell without any error.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    records: list[list[str]] = []
    start = 1  # the line the current record starts on (quoted fields may span lines)
    limit = csv.field_size_limit()
    # A huge cell is for cleaning to judge (and drop as too long), not a parse error.
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                reason = str(err).replace("\t", "\\t")
                quoted = f"the field quoted at line {start} is not closed; " if reader.line_num > start else ""
                raise DataError(
                    f"{path}: cannot parse as {name} at line {reader.line_num}: {reason} ({quoted}a field that "
                    'starts with \'"\' is quoted, and a quote inside it must be doubled: "")'
                ) from err
            blank = not record or (len(record) == 1 and not record[0].strip())
            if blank and blank_cells and records and len(records[0]) == 1:
                records.append(record or [""])  # its cell as written ("   " stays "   ")
            elif not blank:
                records.append(record)
                if len(records) > 1 and len(record) != len(records[0]):
                    n, m, row = len(record), len(records[0]), len(records) - 1
                    fields = f"{n} field" + "s" * (n != 1)
                    cause = f"an unquoted {sep!r} inside a field" if n > m else "a line break inside an unquoted field"
                    raise DataError(
                        f"{path}: cannot parse as {name} at line {start} (row {row}): {fields}, the header has {m} "
                        f"({cause}? quote the field)"
                    )
            start = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)
    return records


def _csv_separator(text: str) -> tuple[str, str]:
    """(separator, name) of a CSV text: ',' unless the header holds ';' and no ',' (spreadsheets in
    locales whose decimal mark is ',' export semicolon-separated "CSV"; read as ',' it is one column)."""
    header = next((line for line in text.split("\n") if line.strip()), "")
    if ";" in header and "," not in header:
        return ";", "semicolon-separated CSV"
    return ",", "CSV"


def _read_delimited(path: Path, fmt: str, blank_cells: bool = False) -> pd.DataFrame:
    """A TSV/CSV file as a table of strings (quoted fields may span lines; empty cells are ""; with
    ``blank_cells`` a blank line of a one-column file is an empty cell, see :func:`_csv_records`).

    Every row must have as many fields as the header; a malformed row is an error naming its line.
    """
    text = _decode(path, _read_bytes(path))
    if not text.strip():
        raise DataError(f"{path}: empty file (no header): no rows")
    sep, name = ("\t", "TSV") if fmt == "tsv" else _csv_separator(text)
    records = _csv_records(path, text, sep, name, blank_cells)
    if not records:  # e.g. a line holding only "" (an empty quoted field): blank, like an empty line
        raise DataError(f"{path}: no header: every line is blank: no rows")
    header = [h.strip() or f"Unnamed: {i}" for i, h in enumerate(records[0])]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: line 1: duplicate column names {dupes}")
    return pd.DataFrame(records[1:], columns=header, dtype=object)


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """A JSON Lines file (one object per line, blank lines skipped) and the line of each row."""
    text = _decode(path, _read_bytes(path))
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    # Split on "\n" only: JSON strings may hold U+2028 and friends that str.splitlines() would cut.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
        except RecursionError as err:  # the json module parses nested arrays/objects recursively
            raise DataError(f"{path}: line {lineno}: invalid JSON: arrays/objects nested too deeply") from err
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}: line {lineno}: expected a JSON object per line, got {type(obj).__name__}"
            )
        _check_unicode(obj, f"{path}: line {lineno}")
        records.append(obj)
        lines.append(lineno)
    return pd.DataFrame.from_records(records), lines


def _read_parquet(path: Path) -> pd.DataFrame:
    """A parquet file as a table; duplicate column names are an error (pyarrow would dump its schema)."""
    _read_bytes(path)
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"{path}: duplicate column names {dupes}")
        return parquet.read().to_pandas()
    except (pa.ArrowException, OSError) as err:  # ArrowInvalid, ArrowNotImplementedError, ArrowIOError, …
        raise DataError(f"{path}: cannot read as parquet: {one_line(err)}") from err


def _lang_from_name(name: str, whole: bool) -> str | None:
    """The language code that a split name is (``whole``) or that a file name starts with (``en-0000…``)."""
    m = re.fullmatch(r"[A-Za-z]{2,3}", name) if whole else re.match(r"[A-Za-z]{2,3}(?=$|[-_.])", name)
    if not m or m.group(0).lower() in _SPLIT_NAMES:
        return None
    return m.group(0).lower()


@functools.cache
def _iso639_1() -> frozenset[str]:
    import pycountry

    return frozenset(lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2"))


def _iso639_3_name(code: str) -> str | None:
    import pycountry

    lang = pycountry.languages.get(alpha_3=code) if len(code) == 3 else None
    return lang.name if lang is not None else None


def _known_lang(code: str, cfg: DataConfig) -> bool:
    """An ISO 639-1 code, or any code that ``data.languages`` names.

    Three-letter codes need naming: ISO 639-3 holds many three-letter words ('new' is Newari, 'and',
    'old', 'raw' are languages too), so a stray ``new_pairs.tsv`` would otherwise become a language.
    """
    return code in _iso639_1() or (cfg.languages is not None and code in cfg.languages)


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a data file (dangling link, FIFO, directory, …), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"dangling symbolic link to {path.readlink()}" if path.is_symlink() else "file not found"
    except OSError as err:
        return f"cannot read: {one_line(err)}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a file"
    return "is not a regular file (socket or device)"


def read_file_table(path: str | Path, fmt: str, blank_cells: bool = False) -> FileTable:
    """The table in the file ``path`` of format ``fmt`` ('tsv', 'csv', 'jsonl' or 'parquet'), read by the
    strict readers of the pairs (CSV/TSV cells are strings, "" when empty); errors are :class:`DataError`
    lines naming the file (and row)."""
    path = Path(path)
    why = _not_a_file(path)
    if why is not None:
        raise DataError(f"{path}: {why}")
    if fmt in ("tsv", "csv"):
        return FileTable(_read_delimited(path, fmt, blank_cells).reset_index(drop=True), str(path))
    if fmt == "jsonl":
        if path.suffix.lower() == ".json" and (array := _json_array(path)) is not None:
            return FileTable(array, str(path))
        frame, lines = _read_jsonl(path)
        return FileTable(frame.reset_index(drop=True), str(path), lines=lines)
    return FileTable(_read_parquet(path).reset_index(drop=True), str(path))


def _json_array(path: Path) -> pd.DataFrame | None:
    """The rows of a ``.json`` file holding one JSON array of objects (as JSON tools write), or None when
    it holds JSON Lines instead."""
    text = _decode(path, _read_bytes(path))
    if not text.lstrip().startswith("["):
        return None
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # one array per line: JSON Lines, which its reader refuses by line
            return None
        raise DataError(f"{path}: line {err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from err
    except RecursionError as err:  # the json module parses nested arrays/objects recursively
        raise DataError(f"{path}: invalid JSON: arrays/objects nested too deeply") from err
    return _json_array_frame(path, rows)


def _read_file(path: Path, fmt: str, **hints: Any) -> _Part:
    table = read_file_table(path, fmt)
    return _Part(table.frame, table.origin, lines=table.lines, **hints)


def _read_dir(path: Path, cfg: DataConfig) -> list[_Part]:
    """Per-language files ``LANG…`` in sorted language order; the language comes from the name prefix.

    Every entry with a data suffix is either read (its prefix is a known language code, see
    :func:`_known_lang`), skipped (a language code that ``data.languages`` leaves out) or an error: a
    name without a known code, a dangling link, a FIFO, a directory. Entries without a data suffix
    (README.md, LICENSE) and hidden ones are not data.
    """
    try:
        entries = sorted(path.iterdir())
    except OSError as err:
        raise DataError(f"{path}: cannot list directory: {one_line(err)}") from err
    data = [(f, FILE_SUFFIXES[f.suffix.lower()]) for f in entries
            if f.suffix.lower() in FILE_SUFFIXES and not f.name.startswith(".")]
    if not data:
        raise DataError(f"{path}: no data files ({', '.join(sorted(FILE_SUFFIXES))}) in directory")
    keyed, strays = [], []
    for f, fmt in data:
        lang = _lang_from_name(f.name, whole=False)
        if lang is not None and _known_lang(lang, cfg):
            if cfg.languages is None or lang in cfg.languages:
                keyed.append((lang, f, fmt))
        elif lang is not None and cfg.languages is not None and (lang in _iso639_1() or _iso639_3_name(lang)):
            continue  # a language the explicit data.languages filter leaves out
        else:
            name = _iso639_3_name(lang) if lang is not None else None
            strays.append(f"{f.name!r}" + (f" ('{lang}' is ISO 639-3 {name}: list it in data.languages)"
                                           if name else ""))
    if strays:
        raise DataError(
            f"{path}: file(s) not named LANG… with an ISO 639-1 code or a code listed in data.languages: "
            f"{', '.join(strays)}; a directory source reads one language per file (e.g. en.tsv, "
            "de-00000-of-00001.parquet): rename or move them"
        )
    unreadable = [f"{f.name!r} {why}" for _, f, _ in keyed if (why := _not_a_file(f)) is not None]
    if unreadable:
        raise DataError(f"{path}: unreadable data file(s): {'; '.join(unreadable)}")
    parts: list[_Part] = []
    counts: dict[str, int] = {}
    for lang, f, fmt in sorted(keyed, key=lambda k: (k[0], k[1].name)):
        part = _read_file(f, fmt, id_prefix=lang, lang=lang, id_start=counts.get(lang, 0))
        counts[lang] = part.id_start + len(part.frame)
        parts.append(part)
    return parts


def _dataset_parts(
    obj: Any, cfg: DataConfig, name: str, origin: Callable[[str | None], str], lang_hint: str | None = None
) -> list[_Part]:
    """Tables of a ``datasets`` Dataset or DatasetDict; its keys are languages when all look like codes,
    else splits."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj.keys()]
        by_lang = bool(keys) and all((c := _lang_from_name(k, whole=True)) and _known_lang(c, cfg) for k in keys)
        parts = []
        for key in sorted(keys) if by_lang else keys:
            lang = key.lower() if by_lang else None
            if lang is not None and cfg.languages is not None and lang not in cfg.languages:
                continue
            frame = _to_pandas(obj[key], origin(key))
            parts.append(_Part(frame, origin(key), id_prefix=key, lang=lang, split=None if by_lang else key))
        return parts
    return [_Part(_to_pandas(obj, origin(None)), origin(None), id_prefix=name, lang=lang_hint)]


def _to_pandas(ds: Any, origin: str) -> pd.DataFrame:
    try:
        return ds.to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{origin}: cannot convert dataset to a table: {one_line(err)}") from err


def _datasets_errors() -> tuple[type[BaseException], ...]:
    """What ``datasets`` raises for a missing, unreachable or malformed dataset."""
    import datasets

    return (datasets.exceptions.DatasetsError, pa.ArrowException, OSError, ValueError, KeyError)


def _read_saved(path: Path, cfg: DataConfig) -> list[_Part]:
    import datasets  # slow import: only when needed

    if not _is_saved_dataset(path):
        raise DataError(f"{path}: not a dataset saved with save_to_disk (no dataset_dict.json or state.json)")
    try:
        obj = datasets.load_from_disk(str(path))
    except _datasets_errors() as err:
        raise DataError(f"{path}: cannot load saved dataset: {one_line(err)}") from err
    return _dataset_parts(obj, cfg, path.name, lambda key: str(path / key) if key else str(path))


def _probe_hub(source: str) -> None:
    """One request without retries, so that an unreachable hub is one line at once, not datasets' eleven
    lines of retries over half a minute. Offline mode (``HF_HUB_OFFLINE``) reads the cache: no probe."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return
    not_local = f"{source}: no local file or directory of that name, and"
    try:
        HfApi().dataset_info(source, timeout=_HUB_PROBE_SECONDS)
    except HfHubHTTPError as err:
        raise DataError(f"{not_local} hub dataset '{source}' cannot be loaded: {one_line(err)}") from err
    except (httpx2.TransportError, OSError) as err:
        raise DataError(
            f"{not_local} the Hugging Face hub cannot be reached ({one_line(err)}); give a local path, "
            "or set HF_HUB_OFFLINE=1 to use a cached copy"
        ) from err


def _read_hub(source: str, cfg: DataConfig) -> list[_Part]:
    import datasets  # slow import: only when needed

    _probe_hub(source)
    try:
        obj = datasets.load_dataset(source, split=cfg.hub_split)
    except _datasets_errors() as err:
        raise DataError(
            f"hub dataset '{source}' (split {cfg.hub_split!r}): cannot load: {one_line(err)}"
        ) from err

    def origin(key: str | None) -> str:
        split = key or cfg.hub_split
        return f"hub dataset '{source}'" + (f" split '{split}'" if split else "")

    hint = _lang_from_name(cfg.hub_split, whole=True) if cfg.hub_split else None
    return _dataset_parts(obj, cfg, cfg.hub_split or source.rsplit("/", 1)[-1], origin, lang_hint=hint)


def _read_parts(source: str, fmt: str, cfg: DataConfig) -> list[_Part]:
    if fmt == "hub":
        return _read_hub(source, cfg)
    if cfg.hub_split is not None:
        # Legitimate (a --data override of a hub config), but it must not look as if it chose rows.
        log.warning("%s: data.hub_split=%r applies to hub datasets only; every split of this local source "
                    "is read", source, cfg.hub_split)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{source}: file or directory not found")
    if fmt in ("dir", "saved"):
        if not path.is_dir():
            raise DataError(f"{source}: format '{fmt}' needs a directory, got a file")
        return _read_dir(path, cfg) if fmt == "dir" else _read_saved(path, cfg)
    if fmt not in FORMATS:
        raise DataError(f"{source}: unknown format {fmt!r}; expected one of {list(FORMATS)}")
    return [_read_file(path, fmt, id_prefix=path.stem)]


# ---------------------------------------------------------------------------------------------- cells


def is_missing(v: Any) -> bool:
    """Whether a cell is missing: ``None``, ``pd.NA`` or a float NaN."""
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def text_cells(table: FileTable, col: str, placeholders: bool = True) -> list[str]:
    """Text cells of ``col``: missing → "", anything but a string is an error naming row and column.

    A whole cell that is a missing-value placeholder (``NaN``, ``None``, ``null``, ``N/A``, …, as pandas
    and spreadsheets write a missing value) counts as missing (unless not ``placeholders``), so cleaning
    reports the row as empty and the placeholder never becomes a reference. A NUL character is an error
    (a corrupt or binary file).
    """
    values = table.frame[col].tolist()
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            if "\x00" in v:
                raise DataError(
                    f"{table.where(i, col)}: NUL character (\\x00) at position {v.index(chr(0))} of "
                    f"{_short(v)}: the file is corrupt or not UTF-8 text"
                )
            out.append("" if placeholders and v.strip() in _PLACEHOLDERS else v)
        elif is_missing(v):
            out.append("")
        else:
            raise DataError(f"{table.where(i, col)}: expected text, got {type(v).__name__} {_short(v)}")
    return out


def _labels(part: FileTable, col: str, what: str) -> list[str]:
    """Non-empty string labels (language, split) of ``col``."""
    out = []
    for i, v in enumerate(part.frame[col].tolist()):
        if not isinstance(v, str) or not v.strip():
            empty = is_missing(v) or isinstance(v, str)
            got = "an empty value" if empty else f"{type(v).__name__} {_short(v)}"
            raise DataError(f"{part.where(i, col)}: expected a {what}, got {got}")
        out.append(v.strip())
    return out


def lang_code_cells(table: FileTable, col: str) -> list[str]:
    """Language codes of ``col``, lower-cased (``EN`` and ``en`` are one language); a cell that is not a
    code (see :data:`LANG_CODE`) is an error naming row and column."""
    out = []
    for i, v in enumerate(_labels(table, col, "language code")):
        if not LANG_CODE.fullmatch(v):
            raise DataError(
                f"{table.where(i, col)}: {_short(v)} is not a language code (expected an ISO 639 code like "
                "'en' or 'uk', optionally with a subtag like 'pt-BR')"
            )
        out.append(v.lower())
    return out


def _ids_as_given(part: FileTable, col: str) -> list[str]:
    """Ids of ``col`` as written (no occurrence suffixes: an output row carries its input's own id)."""
    out = []
    for i, v in enumerate(part.frame[col].tolist()):
        if is_missing(v) or isinstance(v, (bool, np.bool_, list, dict, np.ndarray)) or str(v).strip() == "":
            raise DataError(f"{part.where(i, col)}: expected an id, got {_short(v)}")
        out.append(str(v).strip())
    return out


def _ids(part: FileTable, col: str) -> list[str]:
    """Ids from ``col``; repeated ids (one row per reference, like ``idx``) get ``-k`` occurrence suffixes."""
    ids = _ids_as_given(part, col)
    if len(set(ids)) < len(ids):
        seen: dict[str, int] = {}
        for i, v in enumerate(ids):
            seen[v] = seen.get(v, 0) + 1
            ids[i] = f"{v}-{seen[v]}"
    return ids


def _scores(part: FileTable, col: str) -> list[float]:
    """Numeric toxicity scores (missing → NaN); anything else is an error naming row and column."""
    out = []
    for i, v in enumerate(part.frame[col].tolist()):
        if is_missing(v) or (isinstance(v, str) and (not v.strip() or v.strip() in _PLACEHOLDERS)):
            out.append(math.nan)
            continue
        value = None
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
            value = float(v)
        elif isinstance(v, str):
            try:
                value = float(v)
            except ValueError:
                pass
        if value is None or not math.isfinite(value):
            raise DataError(f"{part.where(i, col)}: toxicity score is not a number: {_short(v)}")
        out.append(value)
    return out


# ---------------------------------------------------------------------------------------------- table


def _part_table(part: _Part, cfg: DataConfig, prefix_ids: bool) -> pd.DataFrame:
    """One part → pairs rows (with each row's own references in ``_own``)."""
    if len(part.frame) == 0:
        raise DataError(f"{part.origin}: no rows" + (" (header only)" if len(part.frame.columns) else ""))
    part.frame = part.frame.reset_index(drop=True)
    cols = detect_columns(list(part.frame.columns), cfg, part.origin)
    n = len(part.frame)
    toxic = text_cells(part, cols.toxic)
    neutral_cells = [text_cells(part, c) for c in cols.neutrals]
    own = [[r for r in row if r.strip()] for row in zip(*neutral_cells)]

    identified = None
    if cols.lang is not None:
        langs = lang_code_cells(part, cols.lang)
    else:
        m = re.fullmatch(r"([a-z]{2,3})_toxic_comment", cols.toxic)  # s-nlp/paradetox: en_toxic_comment
        lang = part.lang or (m.group(1) if m else None) or cfg.default_lang
        if lang is not None:
            langs = [lang] * n
        else:
            identified = _identify(part, cfg, [t + "\n" + "\n".join(refs) for t, refs in zip(toxic, own)])
            langs = identified.langs

    if cols.id is not None:
        ids = _ids(part, cols.id)
        if prefix_ids:  # several files/splits may reuse the same ids
            ids = [f"{part.id_prefix}-{i}" for i in ids]
    else:
        ids = [f"{part.id_prefix}-{part.id_start + i + 1}" for i in range(n)]

    table = pd.DataFrame(
        {
            "id": ids,
            "lang": langs,
            "toxic": toxic,
            "neutral": [refs[0] if refs else "" for refs in own],
            "refs": own,
            "_own": own,
            "_multi": len(cols.neutrals) > 1,
        }
    )
    if identified is not None:
        table["lang_guess"] = identified.guesses
        table["lang_confidence"] = np.asarray(identified.confidences, dtype=float)
    if cols.score is not None:
        table["toxicity_score"] = np.asarray(_scores(part, cols.score), dtype=float)
    if cols.split is not None:
        table["split"] = _labels(part, cols.split, "split name")
    elif part.split is not None:
        table["split"] = part.split
    return table


def _identify(part: _Part, cfg: DataConfig, texts: list[str]) -> Any:
    """Each row's language from its text (toxic side and references): see :mod:`raydetox.data.langid`."""
    try:
        return identify(texts, cfg.min_lang_confidence, cfg.languages)
    except ValueError as err:  # a data.languages code the identifier does not know
        raise DataError(
            f"{part.origin}: no language column, and {err} (data.languages); set data.lang_column or "
            "data.default_lang"
        ) from err


def _merge_refs(table: pd.DataFrame) -> pd.Series:
    """``refs`` = every distinct reference of the same toxic sentence (same language and, where the
    source gives splits, the same split), in source order."""
    own = table["_own"]
    key = table["lang"] + "\x00" + table["toxic"]
    if "split" in table.columns:  # a test row's reference must not become a train row's (nor the reverse)
        key = key + "\x00" + table["split"].astype(str)
    keyed = table["toxic"].str.strip() != ""
    merged = own[keyed].groupby(key[keyed], sort=False).agg(lambda s: _distinct(chain.from_iterable(s)))
    refs = own.map(_distinct)
    refs[keyed] = key[keyed].map(merged)
    return refs


def _distinct(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _expand(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (toxic, reference); ids of multi-reference sources get ``-k`` (k = reference number)."""
    table = table.assign(neutral=table["_own"].map(lambda r: r or [""]))
    counts = table["neutral"].map(len)
    out = table.explode("neutral", ignore_index=True)
    k = out.groupby(np.repeat(np.arange(len(table)), counts)).cumcount() + 1
    out["id"] = out["id"].where(~out["_multi"].astype(bool), out["id"] + "-" + k.astype(str))
    return out


def _quotas(sizes: list[int], limit: int) -> list[int]:
    """``limit`` rows shared among groups of ``sizes`` in proportion (largest remainders, earlier groups
    first on ties), every non-empty group keeping at least one row when ``limit`` allows it."""
    if sum(sizes) <= limit:
        return list(sizes)
    floor = [1 if n else 0 for n in sizes] if limit >= sum(1 for n in sizes if n) else [0] * len(sizes)
    rest, share = limit - sum(floor), [n - f for n, f in zip(sizes, floor)]
    exact = [rest * n / sum(share) for n in share]
    quota = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quota[i]), i))
    for i in by_remainder[: rest - sum(quota)]:
        quota[i] += 1
    return [f + q for f, q in zip(floor, quota)]


def _cap_rows(table: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The first ``limit`` rows per language (``data.max_rows_per_lang``), and a record per (language,
    split) of the rows it left out.

    With a ``split`` column the cap is shared among the language's splits in proportion to their sizes,
    each split keeping at least one row (the first rows of each split, in source order): a file listing
    its train rows first would otherwise lose its validation and test rows.
    """
    if "split" not in table.columns:
        keep = table.groupby("lang", sort=False).cumcount().to_numpy() < limit
        left = table.loc[~keep, "lang"].value_counts(sort=False)
        sizes = table["lang"].value_counts(sort=False)
        records = [{"lang": lang, "split": None, "rows": int(sizes[lang]), "kept": int(sizes[lang] - n),
                    "left_out": int(n)} for lang, n in left.items()]
        return table[keep], records
    keys = pd.DataFrame({"lang": table["lang"].astype(str), "split": table["split"].fillna("").astype(str)})
    position = keys.groupby(["lang", "split"], sort=False).cumcount().to_numpy()
    sizes = keys.groupby(["lang", "split"], sort=False).size()
    quota: dict[tuple[str, str], int] = {}
    records = []
    for lang, groups in sizes.groupby(level="lang", sort=False):
        splits = [split for _, split in groups.index]
        for split, n, q in zip(splits, groups.tolist(), _quotas(groups.tolist(), limit)):
            quota[(lang, split)] = q
            if q < n:
                records.append({"lang": lang, "split": split, "rows": n, "kept": q, "left_out": n - q})
    keep = position < np.array([quota[k] for k in zip(keys["lang"], keys["split"])], dtype=int)
    return table[keep], records


def load_pairs(cfg: DataConfig, source: str | None = None) -> pd.DataFrame:
    """Read ``source`` (default ``cfg.source``) into the canonical pairs table.

    Resolves the format (``cfg.format`` or :func:`detect_format`), maps and validates columns, optionally
    expands references (``cfg.expand_refs``), then keeps ``cfg.languages`` and the first
    ``cfg.max_rows_per_lang`` rows per language; with a split column (``cfg.split_column``, or the
    splits of a dataset) that cap is shared among the language's splits in proportion to their sizes,
    each keeping at least one row (:func:`_cap_rows`). The rows the cap left out are logged and listed
    in ``table.attrs[CAPPED]`` (one record per language and split); the rows of other languages than
    ``cfg.languages`` are counted per language in ``table.attrs[LANGUAGES_LEFT_OUT]``. Empty text cells become "" (cleaning
    drops them).
    Rows whose language was identified (no language column, file name or default) also get
    ``lang_guess`` and ``lang_confidence``; those under ``cfg.min_lang_confidence`` have lang ``und``.
    """
    src = str(source if source is not None else cfg.source)
    fmt = cfg.format or detect_format(src)
    parts = _read_parts(src, fmt, cfg)
    if not parts:
        raise DataError(f"{src}: no files or splits for languages {cfg.languages}")

    tables = [_part_table(p, cfg, prefix_ids=len(parts) > 1) for p in parts]
    table = pd.concat(tables, ignore_index=True)
    table["refs"] = _merge_refs(table)
    if cfg.expand_refs:
        table = _expand(table)

    dup = table["id"].duplicated(keep=False)
    if dup.any():
        shown = table.loc[dup, "id"].unique()[:5].tolist()
        raise DataError(f"{src}: duplicate ids {shown}; set data.id_column to a unique column")
    left_out: dict[str, int] = {}
    if cfg.languages is not None:
        missing = sorted(set(cfg.languages) - set(table["lang"]))
        if missing:
            raise DataError(
                f"{src}: languages {missing} (data.languages) not found; found {sorted(set(table['lang']))}"
            )
        # Unidentified rows stay: cleaning reports them (or keeps them as und), never a silent filter.
        keep = table["lang"].isin(cfg.languages) | unidentified(table)
        left_out = {str(k): int(v) for k, v in sorted(table.loc[~keep, "lang"].value_counts().items())}
        if left_out:
            log.info("%s: data.languages left out %d rows (%s)", src, sum(left_out.values()),
                     ", ".join(f"{k} {v}" for k, v in left_out.items()))
        table = table[keep]
    capped: list[dict[str, Any]] = []
    if cfg.max_rows_per_lang is not None:
        table, capped = _cap_rows(table, cfg.max_rows_per_lang)
        if capped:
            left = ", ".join(f"{r['lang']}" + (f" {r['split']}" if r["split"] is not None else "")
                             + f" {r['left_out']}" for r in capped)
            log.info("%s: data.max_rows_per_lang=%d left out %d rows (%s)", src, cfg.max_rows_per_lang,
                     sum(r["left_out"] for r in capped), left)

    columns = ["id", "lang", "toxic", "neutral", "refs"]
    columns += [c for c in ("toxicity_score", "split", "lang_guess", "lang_confidence") if c in table.columns]
    table = table[columns].reset_index(drop=True)
    if "lang_guess" in table.columns:  # "" for the rows of parts whose language was given
        table["lang_guess"] = table["lang_guess"].fillna("")
    for c in ("id", "lang", "toxic", "neutral", "split", "lang_guess"):
        if c in table.columns:
            table[c] = table[c].astype(str)
    table.attrs[CAPPED] = capped
    table.attrs[LANGUAGES_LEFT_OUT] = left_out
    return table


# ---------------------------------------------------------------------------------------------- texts

_LINE_END = re.compile(r"\r\n|\r|\n")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, one text each (BOM dropped; ``\\n``, ``\\r\\n`` or ``\\r`` ends).

    Lines split at those ends only: ``str.splitlines`` would also cut at U+2028, form feeds and friends,
    turning one input into several. A lone ``\\r`` ends a line as old Mac files end them (read whole, such
    a file would be one sentence). A NUL character is an error naming its line, as in the pairs' cells.
    Errors are :class:`DataError` lines naming the file (and line).
    """
    path = Path(path)
    why = _not_a_file(path)
    if why is not None:
        raise DataError(f"{path}: {why}")
    lines = _LINE_END.split(_decode(path, _read_bytes(path)))
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no new one
    for lineno, line in enumerate(lines, start=1):
        if "\x00" in line:
            raise DataError(
                f"{path}: line {lineno}: NUL character (\\x00) at position {line.index(chr(0))} of "
                f"{_short(line)}: the file is corrupt or not UTF-8 text"
            )
    return lines


def read_table(path: str | Path, default: str = "csv") -> pd.DataFrame:
    """A table file (CSV/TSV/JSONL/parquet by suffix, else ``default``) read by the same strict readers
    as the pairs: CSV/TSV cells are strings ("" when empty); errors are :class:`DataError` lines.
    See :func:`_read_input_table` for what a table may be beyond a pairs file."""
    return _read_input_table(Path(path), FILE_SUFFIXES.get(Path(path).suffix.lower(), default)).frame


def read_column(path: str | Path, column: str, id_column: str | None = None) -> tuple[list[str], list[str]]:
    """(ids, texts) of ``column`` of a table file (CSV/TSV/JSONL/parquet by suffix; other suffixes: TSV),
    read by the same strict readers as the pairs.

    Ids come from ``id_column``, else an ``id``/``idx`` column, else the 1-based row number. Texts are
    kept as written (a cell ``NaN`` is text here); a missing cell is "", and so is a blank line of a
    one-column CSV/TSV (see :func:`_read_input_table`). Errors are :class:`DataError` lines naming the
    file, the row and the column.
    """
    path = Path(path)
    table = _read_input_table(path, FILE_SUFFIXES.get(path.suffix.lower(), "tsv"))
    frame = table.frame
    columns = [str(c) for c in frame.columns]
    if column not in frame.columns:
        raise DataError(f"{path}: no column {column!r}; columns are {columns}")
    if len(frame) == 0:
        raise DataError(f"{path}: no rows (header only)")
    if id_column is not None and id_column not in frame.columns:
        raise DataError(f"{path}: no id column {id_column!r}; columns are {columns}")
    found = id_column or next((c for c in _ID_COLUMNS if c in frame.columns and c != column), None)
    ids = _ids_as_given(table, found) if found else [str(i + 1) for i in range(len(frame))]
    return ids, text_cells(table, column, placeholders=False)


def _read_input_table(path: Path, fmt: str) -> FileTable:
    """:func:`read_file_table`, and what a table of texts may also be that a pairs file may not: a
    one-column CSV/TSV whose blank lines are empty cells. The strict reader skips blank lines (in a table
    of several columns they hold no row), but in one column a blank line is an empty text, and skipping it
    would renumber every later row and lose an input's output.
    """
    return read_file_table(path, fmt, blank_cells=True)


def _json_array_frame(path: Path, rows: Any) -> pd.DataFrame:
    """The rows of a JSON array file: each element an object whose strings are valid Unicode."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i + 1}: expected a JSON object per array element, got {type(row).__name__}")
        _check_unicode(row, f"{path}: row {i + 1}")
    return pd.DataFrame.from_records(rows)


def _check_unicode(obj: dict[str, Any], where: str) -> None:
    """A :class:`DataError` naming ``where`` and the column if a key or string of a JSON object holds a
    lone surrogate: JSON may escape half of a UTF-16 pair ("\ud800"), which no file format can store later."""
    for key, value in obj.items():
        try:
            (key + (value if isinstance(value, str) else "")).encode("utf-8")
        except UnicodeEncodeError as err:
            raise DataError(
                f"{where}, column {key!r}: invalid Unicode: a lone surrogate "
                f"{err.object[err.start]!r} (an escaped half of a UTF-16 pair)"
            ) from err
