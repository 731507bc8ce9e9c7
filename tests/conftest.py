"""Shared fixtures: the real data beside the repository, and small deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from raydetox.sweep import ray_environment

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYDETOX_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests never reach a hub; keep every library offline and quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# What raydetox.sweep.init_ray sets before Ray is first imported (Ray reads it then): a local Ray on
# loopback only, and log deduplication that lets every per-stage line through. Set here, before any test
# module is collected, since a test module may import Ray first (test_cluster does, at its top).
ray_environment(None)
# Under pytest-xdist (`make test` runs two workers) each worker gets one core's worth of torch threads,
# so that the two workers do not oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


@pytest.hookimpl(optionalhook=True)  # xdist's hook: pytest -p no:xdist runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under ``--dist loadgroup`` (``make test``): each test module is one unit of work, so that its
    module-scoped set-ups (a tiny training run, a Tune sweep, a judge) are built once, not once per worker.

    Tests that start Ray may run on both workers at once: each starts its own local instance, and the
    one `ray start` cluster (tests/test_cluster_job.py) writes its address under its own ``--temp-dir``,
    where a plain ``ray.init()`` elsewhere never looks. xdist's own grouping (the ``xdist_group`` mark)
    renames node ids, which pytest 9.2 no longer allows (pytest-dev/pytest-xdist#1386), so it is not used.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _module_of(nodeid)

    return ModuleScheduling(config, log)


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
    """One cache dir for the tiny embedded bases (and judges) of the whole session, shared by the xdist
    workers: each config is built once, by whichever worker needs it first (raydetox.cache locks it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temporary directory, the parent of every worker's own
    path = root / "embedded-cache"
    path.mkdir(exist_ok=True)
    return path


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
