"""``raydetox detox`` input and output: exactly one output record per input, whatever the texts hold.

Plain text in (one input a line) gives plain text out, one output a line, with the characters that
would start a new line escaped (:func:`escape_line`): an output that copies a line break can no longer
shift every later output. A table in (``--column`` on CSV/TSV/JSONL/parquet) gives a table out with
the input's ids (or row numbers), the input and the output, in a format that quotes line breaks.
``--out``'s suffix chooses the output format; without one it follows the input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pandas as pd
import regex as re

from raydetox.config import ConfigError
from raydetox.data.io import FILE_SUFFIXES, read_column, read_lines

# Every character str.splitlines() breaks at, and the backslash that makes the escapes reversible.
_ESCAPES: dict[str, str] = {
    "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\x0b": "\\x0b", "\x0c": "\\x0c", "\x1c": "\\x1c",
    "\x1d": "\\x1d", "\x1e": "\\x1e", "\x85": "\\x85", "\u2028": "\\u2028", "\u2029": "\\u2029",
}
_UNESCAPES: dict[str, str] = {v: k for k, v in _ESCAPES.items()}
_ESCAPED = re.compile("|".join(re.escape(e) for e in sorted(_UNESCAPES, key=len, reverse=True)))
_JSON_LINE_BREAKS = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"})
OUTPUT_FORMATS: tuple[str, ...] = ("text", "csv", "tsv", "jsonl", "parquet")
TEXT_SUFFIXES: tuple[str, ...] = ("", ".txt")  # --out suffixes that follow the input's format


def escape_line(text: str) -> str:
    """``text`` on one line: ``\\`` → ``\\\\``, a line break → ``\\n``, ``\\r`` → ``\\r``, and the other
    line separators (``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``, ``\\u2028``, ``\\u2029``) as
    those escapes; :func:`unescape_line` reverses it."""
    return text.translate(str.maketrans(_ESCAPES))


def unescape_line(line: str) -> str:
    """The text that :func:`escape_line` wrote as ``line``."""
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(0)], line)


@dataclass(frozen=True)
class DetoxInputs:
    """The texts to rewrite, each with its id (the input's id column, else its 1-based row or line)."""

    ids: list[str]
    texts: list[str]
    table: bool  # read from a table (``--column``): written back as one


def read_inputs(path: str | Path, column: str | None = None) -> DetoxInputs:
    """Inputs of ``raydetox detox``: ``column`` of a table file, or the lines of a text file.

    A table file (by its suffix) without ``column`` is refused: its header would become a sentence.
    """
    path = Path(path)
    if column is not None:
        ids, texts = read_column(path, column)
        return DetoxInputs(ids, texts, table=True)
    if path.suffix.lower() in FILE_SUFFIXES:
        raise ConfigError(
            f"{path}: a {FILE_SUFFIXES[path.suffix.lower()].upper()} table: name the column holding the "
            "sentences with --column (plain text input is one sentence a line)"
        )
    texts = read_lines(path)
    return DetoxInputs([str(i + 1) for i in range(len(texts))], texts, table=False)


def output_format(table: bool, out: str | Path | None) -> str:
    """``--out``'s table suffix decides (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``, …); with ``.txt``,
    no suffix or no ``--out`` a ``table`` input is written as CSV and plain text as plain text. Any other
    suffix is a :class:`ConfigError` listing the supported ones (``.xlsx`` would otherwise get CSV)."""
    suffix = Path(out).suffix.lower() if out is not None else ""
    if suffix not in FILE_SUFFIXES and suffix not in TEXT_SUFFIXES:
        supported = ", ".join(s for s in (*FILE_SUFFIXES, *TEXT_SUFFIXES) if s)
        raise ConfigError(f"--out {out}: unsupported suffix {suffix!r}; supported: {supported} (or none: the "
                          "input's format)")
    return FILE_SUFFIXES.get(suffix) or ("csv" if table else "text")


def write_outputs(inputs: DetoxInputs, outputs: list[str], out: str | Path | TextIO, fmt: str) -> None:
    """Write one record per input: ``fmt`` ``text`` (escaped lines), ``csv``/``tsv``/``parquet`` (columns
    id, input, output) or ``jsonl`` (one object a line)."""
    if len(outputs) != len(inputs.texts):
        raise AssertionError(f"detox: {len(inputs.texts)} inputs but {len(outputs)} outputs")
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"detox: unknown output format {fmt!r}; expected one of {OUTPUT_FORMATS}")
    frame = pd.DataFrame({"id": inputs.ids, "input": inputs.texts, "output": outputs})
    if fmt == "parquet":
        if not isinstance(out, (str, Path)):
            raise ConfigError("detox: parquet output needs --out FILE.parquet")
        frame.to_parquet(out, index=False)
        return
    if fmt == "text":
        text = "".join(escape_line(o) + "\n" for o in outputs)
    elif fmt == "jsonl":
        # json.dumps escapes control characters but leaves U+0085, U+2028 and U+2029 raw: a reader
        # splitting lines at them (str.splitlines) would cut a record in two.
        text = "".join(json.dumps(r, ensure_ascii=False).translate(_JSON_LINE_BREAKS) + "\n"
                       for r in frame.to_dict("records"))
    else:  # csv/tsv: a field holding a line break or separator is quoted (a strict reader reads it back)
        text = frame.to_csv(sep="\t" if fmt == "tsv" else ",", index=False, lineterminator="\n")
    if isinstance(out, (str, Path)):
        Path(out).write_text(text, encoding="utf-8")
    else:
        out.write(text)

