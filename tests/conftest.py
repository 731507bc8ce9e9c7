"""Shared fixtures: the real data beside the repository, and small deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from raydetox.results import STAGE_LINE_PATTERN

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYDETOX_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests never reach a hub; keep every library offline and quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# What raydetox.sweep.init_ray sets before Ray is first imported (Ray reads it then): Ray's log
# deduplication lets every per-stage line through. Set here since a test module may import Ray first.
os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", STAGE_LINE_PATTERN)
# Under pytest-xdist (`make test` runs two workers) each worker gets one core's worth of torch threads,
# so that the two workers do not oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Modules whose tests start Ray (a local instance, a `ray start` cluster or a Ray subprocess). Under
# pytest-xdist they all run on one worker, one at a time: a plain `ray.init()` attaches to the latest
# cluster started on the machine, and two Ray instances would also fight for the same two cores.
RAY_MODULES = frozenset({
    "test_ablation", "test_analysis", "test_cluster_job", "test_confirm", "test_faults",
    "test_gpu_readiness", "test_perf_smoke", "test_quality_bench", "test_sweep", "test_tracking",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test of a Ray module in one xdist group (``--dist loadgroup`` runs a group serially)."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (the real public data sets)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set RAYDETOX_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mpd_dir(shared_data: Path) -> Path:
    """Multilingual ParaDetox: one parquet per language (9 × 400 pairs)."""
    return shared_data / "multilingual_paradetox"


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir for the tiny embedded bases of the whole session (each config is built once)."""
    return tmp_path_factory.mktemp("embedded-cache")


@pytest.fixture(scope="session")
def mpd_pairs(mpd_dir: Path) -> pd.DataFrame:
    """Multilingual ParaDetox as a pairs table built with pandas alone (independent of the readers)."""
    frames = []
    for f in sorted(mpd_dir.glob("*.parquet")):
        lang = f.name.split("-")[0]
        raw = pd.read_parquet(f)
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{lang}-{i}" for i in range(len(raw))],
                    "lang": lang,
                    "toxic": raw["toxic_sentence"].tolist(),
                    "neutral": raw["neutral_sentence"].tolist(),
                    "refs": [[n] for n in raw["neutral_sentence"]],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
