"""The quality benchmark: its config shares the quickstart's base and judge, and a tiny run goes end to end.

The figures of a tiny run mean nothing (a 1-layer base trained for a few steps); the smoke test only
keeps the benchmark working: sweep with seeds, selection on validation, confirmation on test, its report.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from raydetox.config import config_to_dict, dump_config, load_config
from raydetox.sweep import variants
from tests.conftest import REPO
from tests.tiny import tiny_config

QUALITY = REPO / "experiments" / "quality.yaml"


def test_quality_config_is_the_quickstart_but_its_sweep() -> None:
    quality, quickstart = load_config(QUALITY), load_config(REPO / "experiments" / "quickstart.yaml")
    # Equal sections → the same cache keys: the benchmark reuses the quickstart's embedded base and judge.
    mine, theirs = config_to_dict(quality), config_to_dict(quickstart)
    for key in ("name", "sweep"):
        mine.pop(key), theirs.pop(key)
    # every stage checkpoint kept, for the confirmation of whichever row is chosen (see quality.yaml)
    assert mine["training"].pop("keep_checkpoints") == 0
    theirs["training"].pop("keep_checkpoints")
    assert mine == theirs
    sweep = quality.sweep
    assert sweep.seeds is not None and len(sweep.seeds) >= 3
    assert sweep.include_baseline and sweep.untrained
    kinds = {v["pacing"] for v in variants(quality) if not v["is_baseline"] and not v["is_untrained"]}
    assert len(kinds) >= 2 and len(sweep.toxic_penalty) * len(sweep.copy_penalty) >= 2


@pytest.mark.slow
def test_quality_benchmark_runs_end_to_end(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    cfg = tiny_config(mpd_dir, tmp_path / "work", embedded_cache, name="quality", **{
        "sweep.orderings": [["easy", "hard"]], "sweep.pacing": ["disjoint", "cumulative"], "sweep.seeds": [0, 1],
        "sweep.toxic_penalty": [0.0, float("inf")], "sweep.objective": "j", "sweep.max_degenerate_rate": 1.0,
    })
    config = tmp_path / "quality.yaml"
    dump_config(cfg, config)
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--config", str(config), "--data", str(mpd_dir),
         "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "quality.md").read_text(encoding="utf-8")
    assert report in proc.stdout
    # 3 trained variants × 2 seeds + the untrained trial, each variant ranked with its seed spread
    assert "3 trained variants × 2 seeds = 6 trained trials + 1 untrained trial" in report
    ranked = report.split("## Variants on validation")[1].split("## Confirmation")[0]
    for variant in ("| easy>hard ", "| cumulative:easy>hard ", "| baseline:full ", "| untrained "):
        assert variant in ranked
    assert re.search(r"\| +2 \| \d\.\d{4} ± \d\.\d{4} \[", ranked), ranked  # two seeds: mean ± std [interval]
    # every phase timed, and the trials of each kind costed
    for phase in ("sweep: trials", "selection on validation", "confirmation on test", "total"):
        seconds = re.search(rf"\| {re.escape(phase)}[^|]*\| +([\d.]+) *\|", report)
        assert seconds and float(seconds.group(1)) > 0, (phase, report.split("## Variants")[0])
    for kind in ("disjoint", "cumulative", "baseline:full", "untrained"):
        assert re.search(rf"^\| {re.escape(kind)} +\| +\d", report, re.M), kind
    # Confirmed on the test split: every system, the paired verdicts, the targets. Which row wins is the
    # objective's call on a few training steps (a tie with the untrained base goes to the untrained base,
    # selection.best_row; a curriculum can edge past it on another machine's float order), so the report is
    # checked for the row it says it chose.
    confirmation = report.split("## Confirmation on untouched data")[1]
    targets = confirmation.split("## Targets (issue 13), on the test split")[1]
    first = re.search(r"^\| the objective chose a curriculum, not a reference point +\| ([^|]+?) +\| (yes|no) +\|$",
                      targets, re.M)
    assert first, targets
    chosen, met = first.groups()
    systems = {"best", "copy", "delete"}
    if chosen == "chose the untrained base":
        assert met == "no" and "the objective picked the untrained base itself" in confirmation
        systems |= {"baseline"}
        compared = ("baseline", "delete")
    elif chosen == "chose the baseline":
        assert met == "no" and "the objective picked the baseline trial itself" in confirmation
        systems |= {"untrained"}
        compared = ("delete",)
    else:
        assert met == "yes" and chosen.startswith("chose `") and "easy>hard" in chosen, chosen
        systems |= {"baseline", "untrained"}
        compared = ("baseline", "delete")
    for system in systems:
        assert re.search(rf"^\| {system} +\| \d", confirmation, re.M), system
    for other in compared:
        assert f"the chosen schedule − {other} = " in confirmation
    assert len(re.findall(r"\| (yes|no) +\|$", targets, re.M)) == 5
    assert (out / "sweeps" / "quality" / "analysis" / "confirmation.csv").is_file()
