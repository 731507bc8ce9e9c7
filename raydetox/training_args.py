"""``CurriculumTrainingArguments``: HF ``Seq2SeqTrainingArguments`` plus what a curriculum needs, and
which HF arguments raydetox owns (set per stage or by the framework) versus the ones a config may set.

The ``training:`` section of an experiment YAML accepts every HF training argument except
:data:`OWNED_ARGUMENTS` (each of which names where it is set instead).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from transformers import Seq2SeqTrainingArguments

from raydetox.losses import EXTRA_LOSSES

@dataclass
class CurriculumTrainingArguments(Seq2SeqTrainingArguments):
    """``Seq2SeqTrainingArguments`` plus what a curriculum needs (per-stage epochs/lr come from the schedule)."""

    extra_loss: str | None = field(default=None, metadata={"help": f"one of {sorted(EXTRA_LOSSES)}"})
    extra_loss_weight: float = field(default=0.0, metadata={"help": "weight of the extra loss term"})
    stage_max_steps: int = field(default=-1, metadata={"help": "cap optimizer steps per stage (-1: epochs)"})
    keep_stage_checkpoints: int = field(default=2, metadata={"help": "stage checkpoints kept on disk"})


# HF arguments that raydetox sets itself, and where a user sets the same thing instead.
OWNED_ARGUMENTS: dict[str, str] = {
    "output_dir": "the run directory (raydetox train --out, or the sweep's storage)",
    "num_train_epochs": "schedule[i].epochs (sweep.epochs in a sweep)",
    "learning_rate": "schedule[i].lr (sweep.lr in a sweep)",
    "max_steps": "training.max_steps_per_stage",
    "stage_max_steps": "training.max_steps_per_stage",
    "per_device_train_batch_size": "training.batch_size",
    "per_device_eval_batch_size": "training.eval_batch_size",
    "weight_decay": "training.weight_decay",
    "warmup_steps": "training.warmup_ratio",
    "lr_scheduler_type": "training.lr_scheduler",
    "seed": "training.seed",
    "data_seed": "training.seed",
    "extra_loss": "training.extra_loss",
    "extra_loss_weight": "training.extra_loss_weight",
    "keep_stage_checkpoints": "training.keep_checkpoints",
    "save_strategy": "raydetox: one checkpoint after every stage (training.keep_checkpoints)",
    "save_steps": "raydetox: one checkpoint after every stage (training.keep_checkpoints)",
    "save_total_limit": "training.keep_checkpoints",
    "eval_strategy": "raydetox: validation after every stage",
    "eval_steps": "raydetox: validation after every stage",
    "load_best_model_at_end": "sweep.objective (the best row over every stage is chosen by analysis)",
    "metric_for_best_model": "sweep.objective",
    "greater_is_better": "sweep.objective",
    "resume_from_checkpoint": "raydetox resumes after the last finished stage on its own",
    "report_to": "Ray Tune (every stage and decoding row is reported)",
    "predict_with_generate": "decoding (generation after every stage uses the decoding section)",
    "generation_max_length": "decoding.max_new_tokens",
    "generation_num_beams": "decoding.num_beams",
    "generation_config": "decoding",
    "local_rank": "the launcher (Ray Train sets it)",
}


def settable_arguments() -> dict[str, dataclasses.Field]:
    """HF training arguments a config's ``training:`` section may set (every one not owned), by name."""
    return {f.name: f for f in dataclasses.fields(CurriculumTrainingArguments)
            if f.init and f.name not in OWNED_ARGUMENTS}


def argument_types() -> dict[str, Any]:
    """Resolved type hints of :class:`CurriculumTrainingArguments` (for validating config values)."""
    return typing.get_type_hints(CurriculumTrainingArguments)
