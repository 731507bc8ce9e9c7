"""Config loading: every experiment YAML validates; bad keys and values name the key and the file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raydetox.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    dump_config,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.schedule


def test_defaults_and_roundtrip(tmp_path: Path) -> None:
    cfg = config_from_dict({"lora": None, "decoding": {"toxic_penalty": math.inf}})
    assert cfg.lora is None
    assert [s.stage for s in cfg.schedule] == ["easy", "medium", "hard", "full"]
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("data:\n  sorce: x\n", "data.sorce", "unknown key"),
        ("bogus: 1\n", "bogus", "unknown key"),
        ("training:\n  batch_size: many\n", "training.batch_size", "integer"),
        ("schedule:\n  - {stage: easyy}\n", "schedule.0.stage", "unknown stage"),
        ("schedule:\n  - {stage: easy, epochs: 0}\n", "schedule.0.epochs", "> 0"),
        ("schedule:\n  - {stage: easy, lr: -1.0e-4}\n", "schedule.0.lr", "> 0"),
        ("schedule: []\n", "schedule", "at least one stage"),
        ("split:\n  train: 0.5\n", "split", "sum to 1"),
        ("sweep:\n  copy_penalty: []\n", "sweep.copy_penalty", "at least one value"),
        ("sweep:\n  orderings: [[easy, extreme]]\n", "sweep.orderings", "unknown stage"),
        ("curriculum:\n  quantiles: [0.7, 0.3]\n", "curriculum.quantiles", "increasing"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{key}'" in msg and words in msg


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    # A python-object tag must be refused by the safe loader, never executed.
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


def test_overrides_apply_dotted_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "cleaning:\n  min_chrf: 10\n")
    cfg = load_config(path, {"cleaning.min_chrf": 5.0, "data.source": "x/y"})
    assert cfg.cleaning.min_chrf == 5.0 and cfg.data.source == "x/y"
    with pytest.raises(ConfigError, match="'cleaning.min_chrff'"):
        load_config(path, {"cleaning.min_chrff": 1})
