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
