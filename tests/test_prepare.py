"""`raydetox prepare` end to end on the real multilingual ParaDetox data (the issue's acceptance check)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from raydetox.cli import main
from raydetox.config import STAGES
from raydetox.data.prepare import load_prepared

REPO = Path(__file__).resolve().parents[1]
LANGS = ["am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh"]


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory, mpd_dir: Path, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    wordlists = f"lexicon.wordlists=['{shared_data}/lexicons/ldnoobw_v2/{{lang}}.txt']"
    code = main(
        ["prepare", str(REPO / "experiments" / "quickstart.yaml"), "--data", str(mpd_dir), "--out", str(out),
         "--set", wordlists]
    )
    assert code == 0
    return out


def test_prepare_accounts_for_every_row(prepared_dir: Path) -> None:
    kept = pd.read_parquet(prepared_dir / "pairs.parquet")
    dropped = pd.read_csv(prepared_dir / "dropped.csv")
    assert len(kept) + len(dropped) == 3600
    assert set(kept["id"]).isdisjoint(set(dropped["id"]))
    assert dropped["reason"].notna().all()
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    assert manifest["kept"] + manifest["dropped"] == manifest["input"] == 3600


def test_every_stage_non_empty_for_every_language(prepared_dir: Path) -> None:
    prepared = load_prepared(prepared_dir)
    assert prepared.languages == LANGS
    for stage in STAGES:
        per_lang = prepared.stages[stage].groupby("lang").size()
        assert sorted(per_lang.index) == LANGS, stage
        assert (per_lang > 0).all(), stage
    assert len(prepared.validation) and len(prepared.test)
    # Stages come from the train split only; easy/medium/hard partition full.
    full_ids = set(prepared.stages["full"]["id"])
    parts = [set(prepared.stages[s]["id"]) for s in ("easy", "medium", "hard")]
    assert set().union(*parts) == full_ids and sum(map(len, parts)) == len(full_ids)
    assert full_ids.isdisjoint(prepared.test["id"]) and full_ids.isdisjoint(prepared.validation["id"])


def test_report_and_artifacts_written(prepared_dir: Path) -> None:
    for name in ("report.md", "difficulty.png", "lexicon.json", "counts.csv", "config.yaml", "dropped.parquet"):
        assert (prepared_dir / name).is_file(), name
    report = (prepared_dir / "report.md").read_text()
    for lang in LANGS:
        assert re.search(rf"^\| {lang}\s+\|", report, re.MULTILINE), lang
    assert "kept + dropped = 3600" in report
    assert (prepared_dir / "difficulty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prepare_is_deterministic(prepared_dir: Path, mpd_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    wordlists = f"lexicon.wordlists=['{shared_data}/lexicons/ldnoobw_v2/{{lang}}.txt']"
    assert main(["prepare", str(REPO / "experiments/quickstart.yaml"), "--data", str(mpd_dir), "--out",
                 str(tmp_path), "--set", wordlists]) == 0
    a = pd.read_parquet(prepared_dir / "pairs.parquet")
    b = pd.read_parquet(tmp_path / "pairs.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_cli_reports_bad_input_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prepare", str(REPO / "experiments/quickstart.yaml"), "--data", str(tmp_path / "missing.tsv")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.tsv" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("cleaning:\n  min_chrf: lots\n")
    assert main(["prepare", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "cleaning.min_chrf" in err


def test_nothing_kept_is_an_error_naming_the_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "copies.tsv"
    path.write_text("toxic\tneutral\nyou are stupid\tyou are stupid\nshut up\tShut  up\n\tnothing\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # left by an earlier, successful run
    code = main(["prepare", str(REPO / "experiments/quickstart.yaml"), "--data", str(path), "--out", str(out),
                 "--set", "data.default_lang=en"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"raydetox prepare: error: {path}: no pair kept: all 3 rows dropped (identical 2, empty_toxic 1); "
                   f"each with its reason in {out / 'dropped.csv'}\n")
    dropped = pd.read_csv(out / "dropped.csv")
    assert sorted(dropped["reason"]) == ["empty_toxic", "identical", "identical"]
    # Nothing claims success: no manifest (what `sweep --resume` trusts), report or stage files.
    assert not (out / "manifest.json").exists() and not (out / "report.md").exists()
    assert not list((out / "stages").glob("*.parquet"))


@pytest.fixture(scope="module")
def unlabelled_pairs(tmp_path_factory: pytest.TempPathFactory, mpd_pairs: pd.DataFrame) -> Path:
    """40 real pairs per language in one file without a language column."""
    path = tmp_path_factory.mktemp("unlabelled") / "pairs.jsonl"
    mpd_pairs.groupby("lang").head(40)[["toxic", "neutral"]].to_json(
        path, orient="records", lines=True, force_ascii=False
    )
    return path


@pytest.mark.parametrize("keep", [False, True])
def test_prepare_identifies_languages_and_reports_them(unlabelled_pairs: Path, tmp_path: Path, keep: bool) -> None:
    # A high threshold, so that some rows are left undetermined.
    sets = ["data.min_lang_confidence=0.9", f"data.keep_unidentified={str(keep).lower()}"]
    code = main(["prepare", str(REPO / "experiments/quickstart.yaml"), "--data", str(unlabelled_pairs), "--out",
                 str(tmp_path), *[a for s in sets for a in ("--set", s)]])
    assert code == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    identified = manifest["identified_languages"]
    assert sum(identified.values()) == manifest["input"] == 360
    assert identified["und"] > 0 and identified["am"] == 40 and set(LANGS) <= set(identified)
    report = (tmp_path / "report.md").read_text()
    assert "## Languages identified from the text" in report
    assert re.search(rf"^\| und\s+\|\s+{identified['und']} \|$", report, re.MULTILINE), report
    kept = pd.read_parquet(tmp_path / "pairs.parquet")
    dropped = pd.read_csv(tmp_path / "dropped.csv")
    unidentified = dropped[dropped["reason"] == "unidentified_language"]
    if keep:
        assert unidentified.empty and (kept["lang"] == "und").any()
    else:
        assert "und" not in set(kept["lang"])
        assert len(unidentified) > 0 and set(unidentified["lang"]) == {"und"}
        assert unidentified["detail"].str.fullmatch(
            r"language identifier's best guess '\w+' has probability 0\.\d\d, under data\.min_lang_confidence"
        ).all()


# ----------------------------------------------------------------- evaluation-only languages, word lists, cap


def _prepare(data: Path, out: Path, *sets: str) -> int:
    return main(["prepare", str(REPO / "experiments/quickstart.yaml"), "--data", str(data), "--out", str(out),
                 *[a for s in sets for a in ("--set", s)]])


def _split_file(path: Path, frames: list[pd.DataFrame]) -> Path:
    pd.concat(frames)[["lang", "toxic", "neutral", "split"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def en_de_test_only(tmp_path_factory: pytest.TempPathFactory, mpd_pairs: pd.DataFrame) -> Path:
    """Real pairs with a split column: 40 English (30 train, 5 validation, 5 test), 10 German in test only."""
    en = mpd_pairs[mpd_pairs["lang"] == "en"].head(40).assign(split=["train"] * 30 + ["validation"] * 5 + ["test"] * 5)
    de = mpd_pairs[mpd_pairs["lang"] == "de"].head(10).assign(split="test")
    return _split_file(tmp_path_factory.mktemp("split") / "pairs.csv", [en, de])


def test_a_language_only_in_the_test_split_is_prepared_for_evaluation(
    en_de_test_only: Path, tmp_path: Path, shared_data: Path
) -> None:
    from raydetox.data.lexicon import Lexicon, read_wordlist
    from raydetox.data.stages import BUCKETS

    wordlists = f"lexicon.wordlists=['{shared_data}/lexicons/ldnoobw_v2/{{lang}}.txt']"
    with pytest.warns(UserWarning, match=r"language\(s\) de have no training pair .*evaluation only"):
        assert _prepare(en_de_test_only, tmp_path, "data.split_column=split", wordlists) == 0
    table = pd.read_parquet(tmp_path / "pairs.parquet")
    dropped = pd.read_csv(tmp_path / "dropped.csv")
    assert len(table) + len(dropped) == 50
    de = table[table["lang"] == "de"]
    assert len(de) and set(de["split"]) == {"test"} and set(de["bucket"]) <= set(BUCKETS)
    assert set(pd.read_parquet(tmp_path / "stages/test.parquet")["lang"]) == {"en", "de"}
    assert set(pd.read_parquet(tmp_path / "stages/full.parquet")["lang"]) == {"en"}
    # Its word list was loaded for cleaning and scoring; nothing is learned from evaluation rows.
    lexicon = Lexicon.load(tmp_path / "lexicon.json")
    assert set(lexicon.terms["de"]) == set(read_wordlist(shared_data / "lexicons/ldnoobw_v2/de.txt"))
    report = (tmp_path / "report.md").read_text()
    assert "- evaluation-only languages (no training pair): de" in report
    assert re.search(r"## Languages for evaluation only\n\n.*\n\n\| lang .*\n.*\n\| de ", report), report


def test_no_training_pair_left_is_one_line_naming_the_file_and_language(
    tmp_path: Path, mpd_pairs: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    en = mpd_pairs[mpd_pairs["lang"] == "en"].head(12).assign(split=["train"] * 8 + ["test"] * 4)
    en.loc[en.index[:8], "neutral"] = en["toxic"].iloc[:8].tolist()  # every train pair a copy: dropped
    path = _split_file(tmp_path / "copies.csv", [en])
    out = tmp_path / "out"
    assert _prepare(path, out, "data.split_column=split") == 2
    assert capsys.readouterr().err == (
        f"raydetox prepare: error: {path}: no training pair kept: cleaning dropped all 8 train rows (identical 8) "
        f"of language(s) en; each with its reason in {out / 'dropped.csv'}\n"
    )
    assert (pd.read_csv(out / "dropped.csv")["reason"] == "identical").sum() == 8
    assert not (out / "manifest.json").exists()


def test_missing_word_lists_are_warned_and_reported_and_a_wrong_path_is_an_error(
    en_de_test_only: Path, tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "en.txt").write_bytes((shared_data / "lexicons/ldnoobw_v2/en.txt").read_bytes())
    with pytest.warns(UserWarning, match=rf"no word list for language\(s\) de \({lists / 'de.txt'}\)"):
        assert _prepare(en_de_test_only, tmp_path / "out", "data.split_column=split",
                        f"lexicon.wordlists=['{lists}/{{lang}}.txt']") == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Word lists not found\n\n" in report and f"- `{lists / 'de.txt'}`" in report
    # No file for any language: the path is wrong (it used to leave en with 4 learned terms, silently).
    assert _prepare(en_de_test_only, tmp_path / "bad", "data.split_column=split",
                    f"lexicon.wordlists=['{tmp_path}/nowhere/{{lang}}.txt']") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raydetox prepare: error: lexicon.wordlists: '{tmp_path}/nowhere/{{lang}}.txt' matches "
                          "no file for any language") and err.count("\n") == 1, err


def test_max_rows_per_lang_keeps_every_split_and_reports_what_it_left_out(
    tmp_path: Path, mpd_pairs: pd.DataFrame
) -> None:
    en = mpd_pairs[mpd_pairs["lang"] == "en"].head(60).assign(split=["train"] * 50 + ["test"] * 10)
    path = _split_file(tmp_path / "train_first.csv", [en])
    assert _prepare(path, tmp_path / "out", "data.split_column=split", "data.max_rows_per_lang=40") == 0
    table = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    dropped = pd.read_csv(tmp_path / "out" / "dropped.csv")
    assert len(table) + len(dropped) == 40
    assert (pd.concat([table, dropped])["split"].value_counts().to_dict()) == {"train": 33, "test": 7}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- left out before that by data.max_rows_per_lang: 20 rows (see below)" in report
    assert re.search(r"^\| en +\| train +\| +50 \| +33 \| +17 \|$", report, re.MULTILINE), report
    assert re.search(r"^\| en +\| test +\| +10 \| +7 \| +3 \|$", report, re.MULTILINE), report


def test_a_split_column_of_any_name_and_a_test_sentence_shared_with_train(tmp_path: Path, mpd_pairs: pd.DataFrame) -> None:
    """data.split_column names the source's column (here `fold`); a validation/test row whose toxic text
    (NFD, re-cased or with a zero-width space included) is also a train row's is dropped as a duplicate,
    and no reference of it reaches the train row."""
    import unicodedata

    en = mpd_pairs[mpd_pairs["lang"] == "en"].head(40).assign(fold=["train"] * 30 + ["validation"] * 5 + ["test"] * 5)
    en = en[["lang", "toxic", "neutral", "fold"]].reset_index(drop=True)
    twin = en.iloc[0]["toxic"]
    en.loc[39, ["toxic", "neutral"]] = [unicodedata.normalize("NFD", twin.upper()) + "\u200b", "a test-only reference"]
    path = tmp_path / "pairs.csv"
    en.to_csv(path, index=False)
    assert _prepare(path, tmp_path / "out", "data.split_column=fold") == 0
    dropped = pd.read_csv(tmp_path / "out" / "dropped.csv")
    leak = dropped[dropped["detail"].astype(str).str.startswith("same toxic text as train id")]
    assert len(leak) == 1 and leak.iloc[0]["reason"] == "duplicate"
    table = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert (table["split"] == "train").sum() + (dropped["split"] == "train").sum() == 30
    refs = [r for refs in table["refs"] for r in refs]
    assert "a test-only reference" not in refs


def test_rows_of_languages_left_out_by_data_languages_are_counted_in_the_report(
    tmp_path: Path, mpd_pairs: pd.DataFrame
) -> None:
    en = mpd_pairs[mpd_pairs["lang"] == "en"].head(40).assign(split=["train"] * 30 + ["validation"] * 5 + ["test"] * 5)
    de = mpd_pairs[mpd_pairs["lang"] == "de"].head(7).assign(split="train")
    path = _split_file(tmp_path / "en_de.csv", [en, de])
    assert _prepare(path, tmp_path / "out", "data.split_column=split", "data.languages=[en]") == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- left out before that by data.languages: 7 rows of other languages (de 7)" in report
    assert set(pd.read_parquet(tmp_path / "out" / "pairs.parquet")["lang"]) == {"en"}
