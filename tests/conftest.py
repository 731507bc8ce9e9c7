"""Shared fixtures: the real data beside the repository, and small deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYDETOX_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests never reach a hub; keep every library offline and quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
