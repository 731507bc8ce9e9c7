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
