"""The bad-input corpus (tests/bad_inputs/README.md): every malformed file gives a one-line DataError naming
the file (and its line/row/column), or loads with its bad rows in the dropped report with a reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raydetox.cli import main
from raydetox.config import CleaningConfig, ConfigError, DataConfig, load_config
from raydetox.data.clean import REASONS, clean_pairs
from raydetox.data.io import DataError, load_pairs
from tests.bad_inputs.make_inputs import make_inputs

CORPUS = Path(__file__).parent / "bad_inputs"
REPO = Path(__file__).resolve().parents[1]

# file → (where, column, message pattern): each must appear in the error message ("" = not applicable).
ERRORS: dict[str, tuple[str, str, str]] = {
    "empty.tsv": ("", "", r"empty file \(0 bytes\)"),
    "header_only.tsv": ("", "", r"no rows \(header only\)"),
    "missing_column.csv": ("", "", r"no reference column for toxic column\(s\) \['toxic'\] among \['toxic', 'lang'\]"),
    "ambiguous_columns.csv": ("", "", r"ambiguous columns \(scheme toxic_sentence: .*scheme toxic: .*data\.toxic_column"),
    "undecodable.tsv": ("line 3", "", r"undecodable bytes b'\\xe9' at byte offset 61 \(not UTF-8"),
    "cp1251.csv": ("line 3", "", r"undecodable bytes b'\\xf2' at byte offset 78 \(not UTF-8: .*\); save it as UTF-8 "
                   r"\(e\.g\. iconv -f CP1251 -t UTF-8"),
    "unbalanced_quote.tsv": ("line 4", "", r"cannot parse as TSV .*the field quoted at line 2 is not closed"),
    "short_row.tsv": ("line 2 (row 1)", "", r"cannot parse as TSV .*1 field, the header has 3 \(a line break"),
    "extra_field.csv": ("line 3 (row 2)", "", r"cannot parse as CSV .*4 fields, the header has 3 \(an unquoted ','"),
    "number_cell.jsonl": ("line 2", "neutral", r"expected text, got int 42"),
    "invalid_json.jsonl": ("line 2", "", r"invalid JSON"),
    "unknown_lang.csv": ("row 2", "lang", r"'english' is not a language code"),
    "corrupt.parquet": ("", "", r"cannot read as parquet: ArrowInvalid: .*magic bytes"),
    "nul_byte.tsv": ("row 2", "toxic", r"NUL character \(\\x00\) at position 13"),
    "utf16_bom.tsv": ("line 1", "", r"undecodable bytes b'\\xff' .*looks like UTF-16"),
    "utf16_nobom.tsv": ("line 1", "", r"NUL byte at byte offset 1: not UTF-8 text"),
    "wrong_types.parquet": ("row 1", "neutral", r"expected text, got int 7"),
    "duplicate_columns.parquet": ("", "", r"duplicate column names \['toxic'\]$"),
    "lone_surrogate.jsonl": ("line 1", "toxic", r"invalid Unicode: a lone surrogate '\\udc00'"),
    "deep_nesting.jsonl": ("line 1", "", r"invalid JSON: arrays/objects nested too deeply"),
    "blank_quoted_header.tsv": ("", "", r"no header: every line is blank"),
    # per-language directories: every data file is read, or the load stops naming it
    "dir_stray_file": ("", "", r"not named LANG… .*'new_pairs.tsv' \('new' is ISO 639-3 Nepal Bhasa"),
    "dir_unknown_code": ("", "", r"not named LANG… with an ISO 639-1 code .*: 'xx.tsv'; "),
    "dir_dangling_link": ("", "", r"unreadable data file\(s\): 'de.tsv' dangling symbolic link to .*moved-away.tsv$"),
    "dir_fifo": ("", "", r"unreadable data file\(s\): 'de.tsv' is a FIFO \(named pipe\), not a file$"),
    "dir_subdir_named_like_data": ("", "", r"unreadable data file\(s\): 'de.tsv' is a directory, not a file$"),
}

# config file in configs/ → (dotted key or YAML position, message pattern): one ConfigError line naming the file.
CONFIG_ERRORS: dict[str, tuple[str, str]] = {
    "duplicate_key.yaml": ("invalid YAML at line 3, column 3", r"duplicate key 'source' \(first given at line 2\)"),
    "syntax_error.yaml": ("invalid YAML at line 3, column 14", r"mapping values are not allowed here"),
    "top_level_list.yaml": ("", r"expected a mapping \(key: value lines\) at the top level, got list$"),
    "name_escapes_storage.yaml": ("key 'name'", r"plain folder name .*must stay inside STORAGE \(got '\.\./\.\.'\)"),
    "absolute_ray_name.yaml": ("key 'ray.name'", r"plain folder name"),
    "nan_threshold.yaml": ("key 'cleaning.min_chrf'", r"finite number \(got nan\)"),
    "inverted_bounds.yaml": ("key 'cleaning.min_length_ratio'", r"must be < cleaning.max_length_ratio \(3 >= 0.5\)"),
    "negative_overlap.yaml": ("key 'cleaning.min_token_overlap'", r"greater than or equal to 0 \(got -0.5\)"),
    "negative_seed.yaml": ("key 'split.seed'", r"greater than or equal to 0 \(got -1\)"),
    "negative_min_count.yaml": ("key 'lexicon.min_count'", r"greater than or equal to 1 \(got -5\)"),
    "stage_twice.yaml": ("key 'sweep.orderings'", r"stage\(s\) \['easy'\] listed twice"),
    "empty_grid.yaml": ("key 'sweep.lr'", r"at least one value"),
    "alias_repeats_a_mistake.yaml": ("key 'sweep.lr.0'", r"valid number .*key 'sweep.lr.4'.*; and 4 more$"),
}

# file → (expected ids, {id: drop reason}; ids not listed are kept).
LOADS: dict[str, tuple[list[str], dict[str, str]]] = {
    "bom.csv": (["bom-1", "bom-2"], {}),
    "crlf.tsv": (["crlf-1", "crlf-2"], {}),
    "multiline_quoted.tsv": (["multiline_quoted-1", "multiline_quoted-2"], {}),
    "nan_none_numbers.csv": (
        [f"p{i}" for i in range(1, 8)],
        {"p1": "empty_neutral", "p2": "empty_toxic", "p3": "empty_toxic", "p4": "identical", "p5": "noisy",
         "p7": "empty_toxic"},
    ),
    "missing_cells.jsonl": (
        [f"j{i}" for i in range(1, 6)],
        {"j1": "empty_neutral", "j2": "empty_toxic", "j3": "empty_toxic", "j4": "empty_neutral"},
    ),
    "duplicate_ids.csv": (["7-1", "7-2", "8-1", "8-2"], {"7-2": "duplicate"}),
    "lang_case.csv": (["lang_case-1", "lang_case-2", "lang_case-3"], {}),
    "semicolon.csv": (["s1", "s2"], {}),
    "long_line.tsv": (["long_line-1", "long_line-2"], {"long_line-1": "too_long"}),
}

# The lexicon rules need a lexicon; they are not what this corpus is about.
CLEANING = CleaningConfig(drop_already_neutral=False, drop_still_toxic=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("bad_inputs"))


def corpus_path(name: str, generated: dict[str, Path]) -> Path:
    return generated[name] if name in generated else CORPUS / name


def load(path: Path) -> pd.DataFrame:
    return load_pairs(DataConfig(source=str(path), default_lang="en"))


def test_every_corpus_file_has_an_expected_outcome(generated: dict[str, Path]) -> None:
    assert {p.name for p in (CORPUS / "configs").iterdir()} == set(CONFIG_ERRORS)
    committed = {p.name for p in CORPUS.iterdir() if p.is_file() and p.suffix not in (".md", ".py", "")}
    committed -= {".gitattributes"}
    files = committed | set(generated)
    assert files == set(ERRORS) | set(LOADS), "add the new file's outcome to ERRORS or LOADS"
    assert not set(ERRORS) & set(LOADS)
    assert not committed & set(generated)
    big = [name for name in committed if (CORPUS / name).stat().st_size > 4096]
    assert not big, f"generate big inputs in make_inputs.py instead of committing them: {big}"


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_file_gives_a_clear_error(name: str, generated: dict[str, Path]) -> None:
    path = corpus_path(name, generated)
    where, column, pattern = ERRORS[name]
    with pytest.raises(DataError) as info:
        load(path)
    msg = str(info.value)
    assert type(info.value) is DataError  # ours, not a pandas/pyarrow exception passed through
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg and "Traceback" not in msg
    if where:
        assert f" {where}" in msg, msg
    if column:
        assert f"column '{column}'" in msg, msg
    assert re.search(pattern, msg), msg


@pytest.mark.parametrize("name", sorted(CONFIG_ERRORS))
def test_bad_config_gives_one_line_naming_file_and_key(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / "configs" / name
    where, pattern = CONFIG_ERRORS[name]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {where}"), msg
    assert "\n" not in msg and re.search(pattern, msg), msg
    # The same through the CLI, with a data override applied on top (a list config used to crash here).
    assert main(["prepare", str(path), "--data", str(CORPUS / "bom.csv"), "--set", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert err == f"raydetox prepare: error: {msg}\n"


@pytest.mark.parametrize("name", sorted(LOADS))
def test_bad_rows_are_dropped_with_a_reason(name: str, generated: dict[str, Path]) -> None:
    path = corpus_path(name, generated)
    ids, reasons = LOADS[name]
    pairs = load(path)
    assert pairs["id"].tolist() == ids
    for column in ("toxic", "neutral", "lang"):
        assert not pairs[column].str.contains("\r|\ufeff|\x00").any(), column
    result = clean_pairs(pairs, CLEANING)
    assert len(result.kept) + len(result.dropped) == len(pairs)
    assert sorted([*result.kept["id"], *result.dropped["id"]]) == sorted(ids)
    assert dict(zip(result.dropped["id"], result.dropped["reason"])) == reasons
    assert set(result.dropped["reason"]) <= set(REASONS)
    assert (result.dropped["detail"].str.len() > 0).all()
    assert len(result.kept) >= 1  # each file also holds a good pair, which must survive


def test_loaded_cells_are_what_the_file_says(generated: dict[str, Path]) -> None:
    bom = load(CORPUS / "bom.csv")
    assert bom["toxic"].tolist() == ["you are a stupid person", "this crap movie is boring"]
    crlf = load(CORPUS / "crlf.tsv")
    assert crlf[["toxic", "neutral", "lang"]].values.tolist() == bom[["toxic", "neutral", "lang"]].values.tolist()
    multi = load(CORPUS / "multiline_quoted.tsv")
    assert multi["toxic"].iloc[0] == "you are a stupid person,\nreally stupid"
    assert multi["neutral"].iloc[0] == "you are a person,\nreally"
    # Placeholder cells are missing values: they must not become references of anything.
    nan = load(CORPUS / "nan_none_numbers.csv")
    assert nan.set_index("id").loc["p1", "refs"] == [] and nan.set_index("id").loc["p4", "toxic"] == "42"
    assert nan["toxicity_score"].isna().tolist() == [False, True, True, True, False, False, True]
    assert load(CORPUS / "lang_case.csv")["lang"].tolist() == ["en", "en", "xx"]
    semicolon = load(CORPUS / "semicolon.csv").set_index("id")  # read as ';'-separated: commas stay in the text
    assert semicolon.loc["s1", "toxic"] == "you are a stupid person, really" and semicolon.loc["s2", "lang"] == "en"
    dropped = clean_pairs(load(CORPUS / "duplicate_ids.csv"), CLEANING).dropped.set_index("id")
    assert dropped.loc["7-2", "detail"] == "same (lang, toxic, neutral) as id 7-1"
    long = clean_pairs(load(generated["long_line.tsv"]), CLEANING).dropped.set_index("id")
    assert long.loc["long_line-1", "detail"] == "toxic text has 1000000 characters > cleaning.max_chars 2000"
    assert clean_pairs(load(generated["long_line.tsv"]), CleaningConfig(max_chars=None, drop_noisy=False,
                       drop_already_neutral=False, drop_still_toxic=False)).dropped.empty


@pytest.fixture()
def cli_config(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(f"output_dir: {tmp_path / 'runs'}\ndata:\n  default_lang: en\n")
    return path


@pytest.mark.parametrize("name", ["unbalanced_quote.tsv", "number_cell.jsonl"])
def test_cli_prepare_prints_one_line_and_exits_2(
    name: str, cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CORPUS / name
    code = main(["prepare", str(cli_config), "--data", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"raydetox prepare: error: {path}: "), err


def test_cli_process_has_no_traceback(cli_config: Path, tmp_path: Path) -> None:
    # The real entry point in a fresh interpreter: what a user sees on the terminal.
    path = CORPUS / "unknown_lang.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "raydetox.cli", "prepare", str(cli_config), "--data", str(path),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        f"raydetox prepare: error: {path}: row 2, column 'lang': 'english' is not a language code "
        "(expected an ISO 639 code like 'en' or 'uk', optionally with a subtag like 'pt-BR')\n"
    )


# ------------------------------------------------------------------------------ detox inputs (no model)


def test_detox_text_lines_end_at_cr_lf_or_crlf_and_refuse_nul(tmp_path: Path) -> None:
    from raydetox.detox import read_inputs

    old_mac = tmp_path / "cr.txt"
    old_mac.write_bytes(b"one idiot\rtwo idiot\r\rthree\r")
    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes("one idiot\r\ntwo idiot\n\rthree\u2028still three\n".encode())
    assert read_inputs(old_mac).texts == ["one idiot", "two idiot", "", "three"]
    assert read_inputs(old_mac).ids == ["1", "2", "3", "4"]
    assert read_inputs(mixed).texts == ["one idiot", "two idiot", "", "three\u2028still three"]
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"ok line\nbad\x00line\n")
    with pytest.raises(DataError, match=re.escape(f"{nul}: line 2: NUL character (\\x00) at position 3 of ")):
        read_inputs(nul)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_blank_line_of_a_one_column_table_is_an_empty_input(fmt: str, tmp_path: Path) -> None:
    from raydetox.detox import read_inputs

    one = tmp_path / f"one.{fmt}"
    one.write_text("\ntext\nhello idiot\n\n   \nNone\n\"\"\n\"two\nlines\"\nlast\n", encoding="utf-8")
    inputs = read_inputs(one, "text")
    # Every line after the header is an input, in order: row numbers stay the lines' own.
    assert inputs.texts == ["hello idiot", "", "   ", "None", "", "two\nlines", "last"]
    assert inputs.ids == [str(i) for i in range(1, 8)]
    # With several columns a blank line holds no row: it stays skipped (the pairs' rule).
    two = tmp_path / f"two.{fmt}"
    sep = "\t" if fmt == "tsv" else ","
    two.write_text(f"id{sep}text\na{sep}hello\n\nb{sep}bye\n", encoding="utf-8")
    assert read_inputs(two, "text").texts == ["hello", "bye"] and read_inputs(two, "text").ids == ["a", "b"]


def test_a_json_array_file_is_read_as_its_rows(tmp_path: Path) -> None:
    from raydetox.data.io import read_table
    from raydetox.detox import read_inputs

    array = tmp_path / "in.json"
    array.write_text('[{"id": "a", "text": "you idiot"},\n {"id": "b", "text": null}]\n', encoding="utf-8")
    inputs = read_inputs(array, "text")
    assert inputs.ids == ["a", "b"] and inputs.texts == ["you idiot", ""]
    assert read_table(array)["text"].tolist()[0] == "you idiot"
    lines = tmp_path / "lines.json"  # JSON Lines under .json, as before
    lines.write_text('{"text": "one"}\n{"text": "two"}\n', encoding="utf-8")
    assert read_inputs(lines, "text").texts == ["one", "two"]
    for text, message in [('[{"text": "a"}, "b"]', "row 2: expected a JSON object per array element, got str"),
                          ('[{"text": "a"},\n {"text": }]', "line 2: invalid JSON: Expecting value"),
                          ('[{"text": "\\udc00"}]', "row 1, column 'text': invalid Unicode: a lone surrogate")]:
        array.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as info:
            read_inputs(array, "text")
        assert str(info.value).startswith(f"{array}: {message}"), info.value
