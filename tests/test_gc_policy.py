"""The collector settings of the processes raydetox owns (raydetox.gc_policy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (the collector settings are process-wide) and read its last
    stdout line as JSON."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_relax_raises_the_young_threshold_and_never_lowers_or_enables() -> None:
    got = _run(
        "import gc, json; from raydetox import gc_policy as g\n"
        "g.relax_young_generation(); first = gc.get_threshold()\n"
        "gc.set_threshold(50000, 3, 4); g.relax_young_generation(); higher = gc.get_threshold()\n"
        "gc.set_threshold(0); g.relax_young_generation(); off = gc.get_threshold()[0]\n"
        "print(json.dumps({'first': first, 'higher': higher, 'off': off}))"
    )
    assert got["first"][0] == 10_000 and got["first"][1:] == [10, 10]  # CPython's other two kept
    assert got["higher"] == [50000, 3, 4]
    assert got["off"] == 0


def test_freeze_happens_once_per_process_after_a_collection() -> None:
    got = _run(
        "import gc, json; from raydetox import gc_policy as g\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a; del a, b  # cyclic garbage before the freeze\n"
        "first = g.freeze_imported_heap(); frozen = gc.get_freeze_count()\n"
        "keep = [[i] for i in range(1000)]\n"
        "second = g.freeze_imported_heap()\n"
        "print(json.dumps({'first': first, 'second': second, 'frozen': frozen, 'after': gc.get_freeze_count(),"
        " 'nodes': sum(type(o).__name__ == 'Node' for o in gc.get_objects())}))"
    )
    assert got["first"] is True and got["second"] is False
    assert got["frozen"] > 1000 and got["after"] == got["frozen"]  # the second call froze nothing more
    assert got["nodes"] == 0  # the cycle was collected, not frozen


def test_the_ray_train_worker_entry_sets_them_before_its_loop() -> None:
    """``train_loop_entry`` (what every Ray Train worker of a ``ray_train`` trial runs) relaxes the
    threshold, imports the training stack and freezes it before the loop reads its config: an empty
    config fails in the loop, after the settings are in place."""
    got = _run(
        "import gc, json; from raydetox.ray_backend import train_loop_entry\n"
        "try:\n    train_loop_entry({})\nexcept KeyError as err:\n    failed = str(err)\n"
        "import sys\n"
        "print(json.dumps({'failed': failed, 'young': gc.get_threshold()[0], 'frozen': gc.get_freeze_count(),"
        " 'stack': 'transformers' in sys.modules}))"
    )
    assert got["failed"] == "'experiment'"
    assert got["young"] == 10_000
    assert got["stack"] and got["frozen"] > 100_000  # the imported training stack is what was frozen
