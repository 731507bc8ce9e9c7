"""Write the bad inputs that are too big or too binary to commit (see README.md in this folder).

Usage: ``python tests/bad_inputs/make_inputs.py OUT_DIR``; the tests call :func:`make_inputs` on tmp_path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

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
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_inputs.py OUT_DIR")
    for path in make_inputs(sys.argv[1]).values():
        print(path)
