"""Write the bad inputs that are too big or too binary to commit (see README.md in this folder).

Usage: ``python tests/bad_inputs/make_inputs.py OUT_DIR``; the tests call :func:`make_inputs` on tmp_path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HEADER = "toxic\tneutral\tlang\n"
GOOD_ROW = "this crap movie is boring\tthis movie is boring\ten\n"


def make_inputs(out_dir: str | Path) -> dict[str, Path]:
    """Write each generated case into ``out_dir``; return {file name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        paths[name] = out / name
        paths[name].write_bytes(data)

    # One 1 MB line: a toxic "sentence" of a million characters (e.g. a file pasted into one cell).
    huge = ("you are an idiot and " * 50_000)[:1_000_000]
    write("long_line.tsv", (HEADER + f"{huge}\tyou are a person\ten\n" + GOOD_ROW).encode("utf-8"))
    # A NUL byte inside a cell of the second data row (a corrupt copy).
    write("nul_byte.tsv", (HEADER + GOOD_ROW + "you are an id\x00iot\tyou are wrong\ten\n").encode("utf-8"))
    # The same table saved as UTF-16, with and without a byte-order mark.
    text = HEADER + GOOD_ROW
    write("utf16_bom.tsv", text.encode("utf-16"))
    write("utf16_nobom.tsv", text.encode("utf-16-le"))
    # A parquet whose reference column holds integers, not text.
    paths["wrong_types.parquet"] = out / "wrong_types.parquet"
    pd.DataFrame(
        {"toxic": ["you are an idiot", "shut up you fool"], "neutral": [7, 42], "lang": ["en", "en"]}
    ).to_parquet(paths["wrong_types.parquet"], index=False)
    # The same table with its toxic column written twice (pyarrow allows it; its error is a schema dump).
    paths["duplicate_columns.parquet"] = out / "duplicate_columns.parquet"
    pq.write_table(
        pa.table([pa.array(["you are an idiot"]), pa.array(["you are wrong"]), pa.array(["again"])],
                 names=["toxic", "neutral", "toxic"]),
        paths["duplicate_columns.parquet"],
    )
    # 100,000 nested arrays on one JSON line: the json module recurses once per level.
    write("deep_nesting.jsonl", ("[" * 100_000 + "]" * 100_000 + "\n").encode("ascii"))

    # Per-language directories (the language comes from each file's name), each with one real file.
    def lang_dir(name: str, extra: Callable[[Path], None]) -> None:
        paths[name] = out / name
        paths[name].mkdir()
        (paths[name] / "en.tsv").write_text(HEADER + GOOD_ROW, encoding="utf-8")
        extra(paths[name])

    lang_dir("dir_stray_file", lambda d: (d / "new_pairs.tsv").write_text(HEADER + GOOD_ROW, encoding="utf-8"))
    lang_dir("dir_unknown_code", lambda d: (d / "xx.tsv").write_text(HEADER + GOOD_ROW, encoding="utf-8"))
    lang_dir("dir_dangling_link", lambda d: (d / "de.tsv").symlink_to(d / "moved-away.tsv"))
    lang_dir("dir_fifo", lambda d: os.mkfifo(d / "de.tsv"))
    lang_dir("dir_subdir_named_like_data", lambda d: (d / "de.tsv").mkdir())
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_inputs.py OUT_DIR")
    for path in make_inputs(sys.argv[1]).values():
        print(path)
