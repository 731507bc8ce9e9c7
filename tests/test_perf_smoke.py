"""Smoke run of ``benchmarks/perf.py --quick``: the benchmark's jobs run and print their tables.

The timings of a quick run mean nothing (tiny model, tiny data); this only keeps the benchmark working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_perf_quick_runs_and_reports(mpd_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "perf"
    cmd = [sys.executable, str(REPO / "benchmarks" / "perf.py"), "--quick", "--cases", "1,4,5",
           "--out", str(out), "--data", str(mpd_dir), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for title in ("### 1. Ray overhead", "### 4. Generation throughput", "### 5. Scoring throughput"):
        assert title in proc.stdout and title in (out / "perf.md").read_text()
    result = json.loads((out / "perf.json").read_text())
    overhead = result["cases"]["1"]["rows"]
    assert len(overhead) == 4 and all(r["wall s"] > 0 and r["peak RSS tree MiB"] > 0 for r in overhead)
    # Ray's processes are part of the measured tree: a sweep's peak is above the plain script's.
    assert overhead[2]["peak RSS tree MiB"] > overhead[0]["peak RSS tree MiB"]
    scoring = result["cases"]["5"]["rows"][0]
    assert scoring["BERTScore model loads"] == 1 and scoring["n outputs"] == 200
