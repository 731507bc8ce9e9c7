"""A tiny but real experiment for tests: a slice of multilingual ParaDetox and a few-step embedded base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raydetox.config import ExperimentConfig, config_from_dict, set_dotted


def tiny_config(
    data_dir: Path, work_dir: Path, cache_dir: Path, rows_per_lang: int = 24, **overrides: Any
) -> ExperimentConfig:
    """Config of a run that takes seconds: 9 × ``rows_per_lang`` pairs, a 2-layer T5 built in ~20 steps."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(work_dir),
        "data": {"source": str(data_dir), "max_rows_per_lang": rows_per_lang},
        "cleaning": {"drop_already_neutral": False},
        "lexicon": {"min_count": 1},
        "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
        "model": {
            "name_or_path": "embedded",
            "cache_dir": str(cache_dir),
            "max_source_length": 32,
            "max_target_length": 32,
            "embedded": {
                "vocab_size": 1200,
                "d_model": 32,
                "d_kv": 8,
                "d_ff": 64,
                "num_layers": 1,
                "num_decoder_layers": 1,
                "num_heads": 2,
                "max_length": 32,
                "batch_size": 16,
                "max_steps": 400,
                "rounds": 1,
                "lr": 1.0e-2,
            },
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "training": {"batch_size": 8, "eval_batch_size": 32, "max_steps_per_stage": 2, "torch_threads": 1},
        "schedule": [
            {"stage": "easy", "epochs": 1, "lr": 1.0e-3},
            {"stage": "hard", "epochs": 1, "lr": 3.0e-4},
        ],
        "decoding": {"max_new_tokens": 24, "batch_size": 32},
        "metrics": {"bertscore_batch_size": 32, "samples_per_lang": 1, "judge": {"cache_dir": str(cache_dir)}},
    }
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return config_from_dict(raw, origin="tiny_config")
