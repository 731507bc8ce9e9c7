"""One training run from a config: prepared data → base model (+LoRA) → curriculum trainer → test report.

This is what ``raydetox train`` runs in-process and what each Ray Train worker runs inside a trial;
both go through :func:`build_trainer` so that the two paths cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase, TrainerCallback, set_seed

from raydetox.config import DecodingConfig, ExperimentConfig, StageConfig
from raydetox.data.difficulty import difficulty_cdf
from raydetox.data.lexicon import Lexicon
from raydetox.data.prepare import PreparedData
from raydetox.targets import Target, training_targets
from raydetox.metrics import get_scorer, reference_systems
from raydetox.pretraining_corpus import base_texts, recorded_base
from raydetox.judge import judge_for
from raydetox.modeling import apply_lora, load_base
from raydetox.training_args import CurriculumTrainingArguments
from raydetox.trainer import (
    CurriculumSeq2SeqTrainer,
    StageResult,
    results_frame,
)


def tokenize_pairs(
    frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_source_length: int, max_target_length: int,
    target: Target = "neutral",
) -> Dataset:
    """Tokenize toxic → ``target`` pairs once (batched; :func:`raydetox.targets.training_targets`);
    keeps ``id`` so stage subsets can be selected."""
    enc = tokenizer(list(frame["toxic"]), max_length=max_source_length, truncation=True)
    labels = training_targets(list(frame["toxic"]), list(frame["neutral"]), target)
    tgt = tokenizer(text_target=labels, max_length=max_target_length, truncation=True)
    return Dataset.from_dict(
        {
            "id": list(frame["id"]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": tgt["input_ids"],
        }
    )


def build_stage_datasets(
    prepared: PreparedData, tokenizer: PreTrainedTokenizerBase, cfg: ExperimentConfig
) -> dict[str, Dataset]:
    """Tokenize the full train split once and select each stage's rows from it by id; every row carries
    its ``difficulty_cdf`` (what competence pacing samples by)."""
    full = tokenize_pairs(
        prepared.stages["full"], tokenizer, cfg.model.max_source_length, cfg.model.max_target_length,
        cfg.training.target,
    ).add_column("difficulty_cdf", difficulty_cdf(prepared.stages["full"]).tolist())
    position = {id_: i for i, id_ in enumerate(full["id"])}
    return {
        name: full.select([position[i] for i in frame["id"]]) if name != "full" else full
        for name, frame in prepared.stages.items()
    }



def training_arguments(cfg: ExperimentConfig, output_dir: str | Path, **overrides: Any) -> CurriculumTrainingArguments:
    """HF arguments shared by every stage: raydetox's own settings, then ``training.hf_args`` from the
    config, then ``overrides``; per-stage epochs and lr are set by the trainer."""
    t = cfg.training
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the stage's steps
        lr_scheduler_type=t.lr_scheduler,
        seed=t.seed,
        data_seed=t.seed,
        extra_loss=t.extra_loss,
        extra_loss_weight=t.extra_loss_weight,
        stage_max_steps=t.max_steps_per_stage or -1,
        keep_stage_checkpoints=t.keep_checkpoints,
        save_strategy="no",  # stage checkpoints are written by the curriculum trainer (adapter only)
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # LoRA/T5 use every trainable parameter; the check costs a graph walk
        train_sampling_strategy="group_by_length",  # less padding per batch
    )
    kwargs.update(t.hf_args)  # every other HF argument given in the config (validated at load)
    kwargs.update(overrides)
    return CurriculumTrainingArguments(**kwargs)


T5_FAMILY: tuple[str, ...] = ("t5", "mt5", "umt5", "longt5", "switch_transformers")
"""HF ``model_type``s whose activations outgrow fp16's range (trained in bf16, they overflow to inf/NaN)."""


def mixed_precision_warning(model_type: str, args: CurriculumTrainingArguments) -> str | None:
    """Why fp16 is a bad choice for this model (T5 family), or None; bf16 keeps fp32's range and is safe."""
    if not (args.fp16 or args.fp16_full_eval) or model_type not in T5_FAMILY:
        return None
    return (f"training.fp16 on a {model_type} model: T5-family activations overflow fp16 (losses turn NaN); "
            "use training.bf16 (Ampere or newer GPUs) or full precision")


def build_trainer(
    cfg: ExperimentConfig,
    prepared: PreparedData,
    output_dir: str | Path,
    callbacks: Sequence[TrainerCallback] = (),
    **arg_overrides: Any,
) -> CurriculumSeq2SeqTrainer:
    """Model, tokenizer, datasets, scorer and trainer for one run of ``cfg`` on ``prepared``."""
    prepared.require_training_splits()
    if cfg.training.torch_threads:
        torch.set_num_threads(cfg.training.torch_threads)
    # Seed before the LoRA weights are drawn: HF seeds only when the Trainer is built, after the model.
    set_seed(cfg.training.seed)
    model, tokenizer = load_untrained(cfg, prepared)
    model = apply_lora(model, cfg.lora)
    stage_data = build_stage_datasets(prepared, tokenizer, cfg)
    eval_data = tokenize_pairs(  # the loss on the training target; generations are scored on the references
        prepared.validation, tokenizer, cfg.model.max_source_length, cfg.model.max_target_length, cfg.training.target
    )
    args = training_arguments(cfg, output_dir, **arg_overrides)
    problem = mixed_precision_warning(model.config.model_type, args)
    if problem:
        warnings.warn(problem, stacklevel=2)
    return CurriculumSeq2SeqTrainer(
        model=model,
        args=args,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        train_dataset=stage_data["full"],
        eval_dataset=eval_data,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        stage_datasets=stage_data,
        eval_pairs=prepared.validation,
        scorer=get_scorer(cfg.metrics, prepared.lexicon, judge=judge_for(cfg, prepared)),
        decoding=cfg.decoding,
        toxic_token_ids=functools.partial(toxic_token_ids, prepared.lexicon, tokenizer, cfg.decoding),
        max_source_length=cfg.model.max_source_length,
        curriculum=cfg.curriculum,
        lexicon=prepared.lexicon,
    )


def load_untrained(
    cfg: ExperimentConfig, prepared: PreparedData | None = None, base_dir: str | None = None
) -> tuple[Any, PreTrainedTokenizerBase]:
    """The ``untrained`` reference system's model: the base every trial starts from, with no LoRA and no
    stage trained (the sweep's ``untrained`` variant and the confirmation's ``untrained`` row both load
    it here, and :func:`build_trainer` starts from it). That base is ``base_dir`` when given, else the
    base recorded in ``prepared``'s dir (a sweep's: its trials never re-read ``model.embedded.sources``,
    whose relative paths their working directory may not resolve), else the one built from
    ``prepared``'s corpus with ``model.embedded.sources``, else the newest cached base of this config."""
    if base_dir is None and prepared is not None:
        base_dir = recorded_base(prepared.out_dir)
    if base_dir is not None:
        return load_base(dataclasses.replace(cfg.model, name_or_path=base_dir, cache_dir=None))
    return load_base(cfg.model, texts=base_texts(cfg, prepared) if prepared is not None else None)



def toxic_token_ids(lexicon: Lexicon, tokenizer: PreTrainedTokenizerBase, decoding: DecodingConfig) -> list[int]:
    """Token ids the toxic-token penalty pushes down (terms spelled in ≤ ``toxic_max_pieces`` pieces)."""
    return lexicon.token_ids(tokenizer, max_pieces=decoding.toxic_max_pieces)


@dataclass
class RunResult:
    """A finished run: per-stage rows, test metrics, samples and where everything was written."""

    output_dir: Path
    stages: pd.DataFrame
    test_metrics: dict[str, float]
    samples: pd.DataFrame
    stage_results: list[StageResult]


def _samples(pairs: pd.DataFrame, outputs: Sequence[str], per_lang: int) -> pd.DataFrame:
    frame = pairs[["id", "lang", "toxic", "neutral"]].copy()
    frame["output"] = list(outputs)
    return frame.groupby("lang", group_keys=False).head(per_lang).reset_index(drop=True)


def run_training(
    cfg: ExperimentConfig,
    prepared: PreparedData,
    output_dir: str | Path,
    schedule: Sequence[StageConfig] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    resume: bool = True,
    **arg_overrides: Any,
) -> RunResult:
    """Train ``schedule`` (default ``cfg.schedule``), then score the test split and write the run's files."""
    out = Path(output_dir)
    trainer = build_trainer(cfg, prepared, out, callbacks, **arg_overrides)
    results = trainer.run_schedule(list(schedule or cfg.schedule), resume=resume)
    test_metrics, outputs = trainer.generate_and_score(prepared.test, prefix="test_")
    samples = _samples(prepared.test, outputs, cfg.metrics.samples_per_lang)
    stages = results_frame(results)
    stages.to_csv(out / "stages.csv", index=False)
    prepared.lexicon.save(out / "lexicon.json")  # so `raydetox evaluate/detox` find it beside the checkpoints
    samples.to_csv(out / "samples.csv", index=False)
    (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=1, allow_nan=True))
    return RunResult(out, stages, test_metrics, samples, results)


def score_reference_systems(cfg: ExperimentConfig, prepared: PreparedData, split: str = "test") -> dict[str, dict[str, float]]:
    """``copy`` and ``delete`` systems scored by the same code on the same split."""
    pairs = prepared.test if split == "test" else prepared.validation
    refs = [list(r) for r in pairs["refs"]]
    systems = reference_systems(list(pairs["toxic"]), refs, list(pairs["lang"]), prepared.lexicon)
    scorer = get_scorer(cfg.metrics, prepared.lexicon, judge=judge_for(cfg, prepared))
    return {
        name: scorer.score(list(pairs["toxic"]), outs, refs, list(pairs["lang"]), prefix=f"{split}_")
        for name, outs in systems.items()
    }
