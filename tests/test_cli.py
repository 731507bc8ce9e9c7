"""The train → evaluate → detox path and the reference systems through the `raydetox` command."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from raydetox.cli import main
from raydetox.config import dump_config
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mpd_dir: Path, embedded_cache: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    dump_config(tiny_config(mpd_dir, root / "runs", embedded_cache), config)
    assert main(["train", str(config), "--out", str(root / "run"), "--baseline"]) == 0
    return config, root / "run"


def test_train_writes_runs_and_report(trained: tuple[Path, Path]) -> None:
    _, run = trained
    report = (run / "report.md").read_text()
    for name in ("curriculum", "baseline", "copy", "delete"):
        assert f"| {name}" in report, name
    stages = pd.read_csv(run / "curriculum" / "stages.csv")
    assert stages["stage"].tolist() == ["easy", "hard"]
    assert pd.read_csv(run / "baseline" / "stages.csv")["stage"].tolist() == ["full"]
    comparison = pd.read_csv(run / "comparison.csv", index_col=0)
    assert comparison.loc["copy", "copy_rate"] == 1.0


def test_evaluate_a_checkpoint_on_a_pairs_file(trained: tuple[Path, Path], tmp_path: Path, mpd_dir: Path) -> None:
    config, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--model", str(ckpt), "--data", str(mpd_dir / "en-00000-of-00001.parquet"),
                 "--config", str(config), "--set", "data.default_lang=en", "--set", "data.max_rows_per_lang=20",
                 "--decoding", "toxic_penalty=.inf", "--decoding", "num_beams=2", "--out", str(out)])
    assert code == 0
    scores = json.loads(out.read_text())
    assert scores["n"] == 20 and 0.0 <= scores["copy_rate"] <= 1.0 and "bertscore_f1/en" in scores
    # The per-sentence predictions beside the scores; the run's judge (found from the checkpoint) gave STA.
    from raydetox.results import read_predictions

    predictions = read_predictions(out.with_suffix(".predictions.parquet"))
    assert len(predictions) == 20 and predictions["copy"].mean() == pytest.approx(scores["copy_rate"])
    assert scores["sta"] == pytest.approx(1 - scores["judge_toxicity"]) and predictions["judge_toxicity"].notna().all()


def test_baselines_copy_and_delete(tmp_path: Path, mpd_dir: Path, shared_data: Path) -> None:
    out = tmp_path / "baselines.json"
    lists = f"lexicon.wordlists=['{shared_data}/lexicons/ldnoobw_v2/{{lang}}.txt']"
    code = main(["baselines", "--data", str(mpd_dir), "--set", "data.max_rows_per_lang=15", "--set", lists,
                 "--out", str(out)])
    assert code == 0
    scores = json.loads(out.read_text())
    assert scores["copy"]["copy_rate"] == 1.0
    assert scores["delete"]["toxicity"] == 0.0 and scores["delete"]["copy_rate"] < 1.0


def test_detox_rewrites_lines(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    src = tmp_path / "in.txt"
    src.write_text("you are a stupid idiot\nthis is fucking great\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["detox", "--model", str(ckpt), str(src), "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_bad_schedule_and_missing_input_are_one_line_errors(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, run = trained
    assert main(["train", str(config), "--out", str(tmp_path), "--schedule", "easy:1,extreme:1"]) == 2
    assert "extreme" in capsys.readouterr().err
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    assert main(["detox", "--model", str(ckpt), str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err
