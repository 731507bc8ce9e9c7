"""``CurriculumSeq2SeqTrainer``: HF ``Seq2SeqTrainer`` run stage by stage over curriculum subsets.

The trainer keeps one model, tokenizer, collator and metric scorer for the whole schedule and calls
HF's own ``train()`` once per stage after swapping the train subset, the epochs and the learning rate
(optimizer and scheduler are rebuilt per stage, so each stage gets its own warm-up/decay). After each
stage it evaluates — validation loss and generations in one HF prediction pass
(``predict_with_generate`` through :meth:`~CurriculumSeq2SeqTrainer.prediction_step`, with raydetox's
decoding controls), then generation metrics — saves a checkpoint tagged by the stage (adapter only
for LoRA), appends a metrics row and fires ``on_stage_end`` on every callback that defines it — that
is where the Ray layer reports. A finished stage is never re-run: ``run_schedule`` resumes after the
last stage recorded in ``curriculum_state.json``.

Which pairs a stage trains on is the pacing's (``curriculum.pacing``): its own bucket (disjoint), its
bucket and every earlier stage's (cumulative), or a competence-paced draw from the full train split,
counted over the whole schedule (competence; :mod:`raydetox.pacing`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, concatenate_datasets
from transformers import PrinterCallback, Seq2SeqTrainer

from raydetox.config import CurriculumConfig, DecodingConfig, StageConfig
from raydetox.data.io import DataError
from raydetox.data.stages import paced_subsets
from raydetox.decoding import bans_token_ids, build_logits_processors, generate, generation_kwargs, needs_lexicon
from raydetox.errors import ModelError, ResultsError, one_line
from raydetox.losses import LossContext, TermFinder, build_extra_loss
from raydetox.metrics import Scorer, perplexity
from raydetox.pacing import CompetenceSampler, phase_steps
from raydetox.results import STATE_FILE, predictions_frame, write_predictions
from raydetox.training_args import CurriculumTrainingArguments


@dataclass
class StageResult:
    """What one finished stage produced: its settings, training figures, metrics and checkpoint."""

    index: int
    stage: str
    epochs: float
    lr: float
    lr_applied: float
    steps: int
    train_loss: float
    seconds: float
    n_examples: int
    metrics: dict[str, float]
    checkpoint: str  # relative to the trainer's output_dir, so a copied run dir still resumes
    example_ids: list[str] = field(default_factory=list)
    predictions: str = ""  # the stage's validation predictions file, relative to output_dir ("" = none)
    pacing: str = "disjoint"
    competence: float | None = None  # competence at the stage's last step (competence pacing only)

    def row(self) -> dict[str, Any]:
        """Flat metrics row (no id list) for tables and reporting."""
        row = {k: v for k, v in asdict(self).items() if k not in ("metrics", "example_ids", "predictions")}
        row.update(self.metrics)
        return row


class CurriculumSeq2SeqTrainer(Seq2SeqTrainer):
    """A ``Seq2SeqTrainer`` that runs a curriculum schedule; extension points are HF callbacks.

    ``stage_datasets`` maps stage names to tokenized datasets (with an ``id`` column); ``eval_pairs`` is
    the validation pairs table used for generation metrics after every stage. Callbacks that define
    ``on_stage_end(args, state, control, result=StageResult, trainer=self)`` are called after each stage.
    ``curriculum`` gives the pacing; competence pacing needs a ``difficulty_cdf`` column in
    ``stage_datasets["full"]``. ``lexicon`` serves extra loss terms that need it (``toxic_unlikelihood``).
    """

    args: CurriculumTrainingArguments

    def __init__(
        self,
        *args: Any,
        stage_datasets: dict[str, Dataset],
        eval_pairs: pd.DataFrame | None = None,
        scorer: Scorer | None = None,
        decoding: DecodingConfig | None = None,
        toxic_token_ids: Sequence[int] | Callable[[], Sequence[int]] | None = None,
        max_source_length: int = 64,
        curriculum: CurriculumConfig | None = None,
        lexicon: TermFinder | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # One concise line per stage comes from on_stage_end hooks; HF's per-call metric dicts are noise.
        self.remove_callback(PrinterCallback)
        self.stage_datasets = stage_datasets
        self._fingerprints: dict[str, str] = {}
        self.eval_pairs = eval_pairs
        self.scorer = scorer
        self.decoding = decoding or DecodingConfig()
        # A callable runs on first use: the ids cost seconds (every term tokenised), and only
        # toxic_ban: first_token with a toxic penalty uses them (banned_token_ids).
        self._toxic_token_ids = toxic_token_ids
        self.max_source_length = max_source_length
        self.stage_results: list[StageResult] = []
        self.curriculum = curriculum or CurriculumConfig()
        self._phase: CompetenceSampler | None = None  # set while a competence-paced stage trains
        self._generation: dict[str, Any] | None = None  # generate() kwargs while the validation pass generates
        name = self.args.extra_loss
        # Built once: a term may precompute from the tokenizer and the lexicon (toxic_unlikelihood).
        self._extra_loss = (
            build_extra_loss(name, LossContext(tokenizer=self.processing_class, lexicon=lexicon))
            if name and self.args.extra_loss_weight > 0 else None
        )

    # --- loss hook ---------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """HF's loss, plus ``extra_loss_weight × extra_loss(model, inputs, outputs)`` when configured."""
        if self._extra_loss is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels, source = inputs["labels"], inputs["input_ids"]
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        extra = self._extra_loss(model, {"labels": labels, "input_ids": source}, outputs)
        loss = loss + self.args.extra_loss_weight * extra
        return (loss, outputs) if return_outputs else loss

    # --- curriculum ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.args.output_dir) / STATE_FILE

    def _load_state(self, schedule: Sequence[StageConfig]) -> list[StageResult]:
        if not self.state_path.is_file():
            return []
        raw = json.loads(self.state_path.read_text())
        done = [StageResult(**r) for r in raw["stages"]]
        paced = {r.pacing for r in done}
        if done and paced != {self.curriculum.pacing}:
            raise ResultsError(
                f"{self.state_path}: finished stages were paced {sorted(paced)}, this run is paced "
                f"{self.curriculum.pacing!r}; use a fresh output_dir or resume=False"
            )
        # Competence counts steps over the whole schedule: a changed later stage changes every phase.
        if done and self.curriculum.pacing == "competence" and raw["schedule"] != [asdict(s) for s in schedule]:
            raise ResultsError(
                f"{self.state_path}: competence pacing spreads its steps over the whole schedule, and the finished "
                f"stages belong to {raw['schedule']}; use a fresh output_dir or resume=False"
            )
        # Same schedule, other rows (the data file changed, or other cleaning): the finished stages' weights
        # would be passed off as trained on this data.
        recorded = raw.get("data", {})
        changed = sorted({r.stage for r in done if r.stage in recorded and recorded[r.stage] != self._data_fingerprint(r.stage)})
        if changed:
            raise ResultsError(
                f"{self.state_path}: finished stage(s) {changed} were trained on other rows than this run's (the "
                "data or its preparation changed); use a fresh output_dir or --no-resume (resume=False)"
            )
        return done

    def _data_fingerprint(self, stage: str) -> str:
        """sha256 of a stage's training rows (ids, inputs, labels) as this trainer was given them."""
        if stage not in self._fingerprints:  # computed once: the state is saved after every stage
            rows = self.stage_datasets[stage].select_columns(["id", "input_ids", "labels"]).to_dict()
            self._fingerprints[stage] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
        return self._fingerprints[stage]

    def _save_state(self, schedule: Sequence[StageConfig]) -> None:
        payload = {
            "schedule": [asdict(s) for s in schedule],
            "stages": [asdict(r) for r in self.stage_results],
            "data": {s.stage: self._data_fingerprint(s.stage) for s in schedule if s.stage in self.stage_datasets},
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1, allow_nan=True))
        tmp.replace(self.state_path)  # atomic: a crash never leaves a half-written state

    def _restore_weights(self, checkpoint: str) -> None:
        """Load a stage checkpoint's weights (adapter or full model) into the live model, in place."""
        from peft import PeftModel, set_peft_model_state_dict
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(checkpoint)
        model = self.accelerator.unwrap_model(self.model)
        is_adapter = isinstance(model, PeftModel)
        weights = path / ("adapter_model.safetensors" if is_adapter else "model.safetensors")
        try:
            state = load_file(weights)
        except (FileNotFoundError, SafetensorError) as err:  # never a pickle instead: those are not read
            raise ModelError(f"{weights}: cannot load the stage checkpoint's weights: {one_line(err)}") from err
        if is_adapter:
            result = set_peft_model_state_dict(model, state)
            if result.unexpected_keys:
                raise ModelError(f"{path}: adapter does not match the model: {result.unexpected_keys[:5]}")
            return
        missing, unexpected = model.load_state_dict(state, strict=False)
        model.tie_weights()
        # Tied embeddings are stored once; any other gap means the checkpoint is not this model's.
        loaded = {p.data_ptr() for n, p in model.named_parameters() if n not in missing}
        untied = [n for n in missing if model.get_parameter(n).data_ptr() not in loaded]
        if unexpected or untied:
            raise ModelError(f"{path}: checkpoint does not match the model (missing {untied[:5]}, unexpected {unexpected[:5]})")

    def run_schedule(self, schedule: Sequence[StageConfig], resume: bool = True) -> list[StageResult]:
        """Train every stage of ``schedule`` in order; skip stages already finished in ``output_dir``."""
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        done = self._load_state(schedule) if resume else []
        planned = [(s.stage, s.epochs, s.lr) for s in schedule]
        finished = [(r.stage, r.epochs, r.lr) for r in done]
        if finished and finished != planned[: len(finished)]:
            raise ResultsError(
                f"{self.state_path}: finished stages {finished} are not a prefix of the schedule {planned}; "
                "use a fresh output_dir or resume=False"
            )
        self.stage_results = list(done)
        if done and done[-1].checkpoint:
            self._restore_weights(str(Path(self.args.output_dir) / done[-1].checkpoint))
        for index in range(len(done), len(schedule)):
            self._run_stage(index, schedule)
        return self.stage_results

    def _run_stage(self, index: int, schedule: Sequence[StageConfig]) -> StageResult:
        stage = schedule[index]
        data = self._stage_data(index, schedule)
        if len(data) == 0:
            raise DataError(f"stage {stage.stage!r} has no training examples (too few pairs kept per language "
                            "to fill every bucket? see the prepare report)")
        # A stage is a fresh HF training run over the same model: new subset, epochs, lr, optimizer, scheduler.
        self.train_dataset = data
        self.args.learning_rate = stage.lr
        self.args.num_train_epochs = stage.epochs
        self.args.max_steps = self.args.stage_max_steps
        if self.curriculum.pacing == "competence":
            self._phase = self._competence_phase(index, schedule, data)
            self.args.max_steps = self._phase.steps  # the phase is one HF epoch of the sampler's draws
        self.optimizer, self.lr_scheduler = None, None
        t0 = time.perf_counter()
        try:
            out = self.train()
        finally:
            phase, self._phase = self._phase, None
        ids = list(data["id"]) if "id" in data.column_names else []
        n_examples = len(data)
        if phase is not None:  # the pairs the phase drew, in order of first draw
            drawn = pd.unique(np.concatenate([phase.step_indices(t) for t in phase.step_numbers()]))
            n_examples, ids = len(drawn), [ids[i] for i in drawn] if ids else []
        lr_applied = float(self.optimizer.param_groups[0].get("initial_lr", self.optimizer.param_groups[0]["lr"]))
        seconds = time.perf_counter() - t0
        metrics, predictions = self.evaluate_stage()
        ckpt = self._save_stage_checkpoint(index, stage.stage)
        kept = ""
        if predictions is not None:
            kept = f"predictions/stage-{index:02d}-{stage.stage}.parquet"
            write_predictions(predictions, Path(self.args.output_dir) / kept)
        result = StageResult(
            index=index,
            stage=stage.stage,
            epochs=stage.epochs,
            lr=stage.lr,
            lr_applied=lr_applied,
            steps=int(out.global_step),
            train_loss=float(out.training_loss),
            seconds=seconds,
            n_examples=n_examples,
            metrics=metrics,
            checkpoint=str(ckpt.relative_to(self.args.output_dir)),
            example_ids=ids,
            predictions=kept,
            pacing=self.curriculum.pacing,
            competence=phase.competence(phase.first_step + phase.steps) if phase is not None else None,
        )
        self.stage_results.append(result)
        self._save_state(schedule)  # before the hooks, so a checkpoint taken there includes this stage
        for cb in self.callback_handler.callbacks:
            hook = getattr(cb, "on_stage_end", None)
            if hook is not None:
                hook(self.args, self.state, self.control, result=result, trainer=self)
        return result

    def _stage_data(self, index: int, schedule: Sequence[StageConfig]) -> Dataset:
        """The train subset of stage ``index`` under the pacing (see :func:`paced_subsets`)."""
        names = paced_subsets([s.stage for s in schedule], self.curriculum.pacing)[index]
        unknown = [n for n in names if n not in self.stage_datasets]
        if unknown:
            raise KeyError(f"stage {unknown[0]!r} has no dataset; have {sorted(self.stage_datasets)}")
        parts = [self.stage_datasets[n] for n in names]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)

    def _examples_per_step(self) -> int:
        """Examples one optimizer step consumes across processes."""
        return self._train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size

    def _competence_phase(self, index: int, schedule: Sequence[StageConfig], data: Dataset) -> CompetenceSampler:
        """Stage ``index`` as a phase of the competence-paced run over the whole schedule."""
        if "difficulty_cdf" not in data.column_names:
            raise ValueError("competence pacing needs a 'difficulty_cdf' column in the full train dataset")
        steps = phase_steps(
            [s.epochs for s in schedule], len(data), self._train_batch_size, self.args.world_size,
            self.args.gradient_accumulation_steps, self.args.stage_max_steps,
        )
        return CompetenceSampler(
            list(data["difficulty_cdf"]), first_step=sum(steps[:index]), steps=steps[index], total_steps=sum(steps),
            examples_per_step=self._examples_per_step(), c0=self.curriculum.c0, kind=self.curriculum.competence,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
        )

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> torch.utils.data.Sampler | None:
        """HF's sampler, or the competence sampler of the phase being trained."""
        return self._phase if self._phase is not None else super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Dataset) -> list[int] | None:
        """Longest inputs first (as :func:`raydetox.decoding.generate` batches): little padding per batch,
        an out-of-memory batch shows up at once, and the order is known to map predictions back to rows."""
        return eval_order(eval_dataset)

    def prediction_step(  # type: ignore[override]
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """HF's step; in a stage's validation pass it generates under ``decoding`` (search settings and
        the logits processors built for this batch's sources) beside the loss."""
        if self._generation is not None:
            inputs = self._prepare_inputs(inputs)
            tok = self.processing_class
            gen_kwargs = dict(self._generation)
            # HF's step sets the model's max_length (20) when unset; max_new_tokens beside it warns on every
            # batch. The decoder starts from one token, so max_length = max_new_tokens + 1 is the same bound.
            gen_kwargs["max_length"] = gen_kwargs.pop("max_new_tokens") + 1
            gen_kwargs["logits_processor"] = build_logits_processors(
                self.decoding, inputs["input_ids"], self.banned_token_ids(self.decoding), tok.pad_token_id,
                tok.eos_token_id,
            )
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)

    def _loss_and_generations(self) -> tuple[float, list[str]]:
        """Validation loss and one generated text per ``eval_dataset`` row (in row order), from one pass."""
        predict_with_generate = self.args.predict_with_generate
        self._generation = generation_kwargs(self.decoding)
        self.args.predict_with_generate = True
        try:
            out = self.predict(self.eval_dataset, metric_key_prefix="eval")
        finally:
            self._generation = None
            self.args.predict_with_generate = predict_with_generate
        tok = self.processing_class
        rows = len(self.eval_dataset)
        # Under DDP the ranks' last batches are filled up with repeated rows, gathered after every real
        # row; HF drops them only when accelerate knows the remainder (not under Ray Train's process group).
        tokens = np.where(out.predictions[:rows] != -100, out.predictions[:rows], tok.pad_token_id)
        texts = tok.batch_decode(tokens, skip_special_tokens=True)
        outputs: list[str] = [""] * len(texts)
        for position, row in enumerate(eval_order(self.eval_dataset) or range(len(texts))):
            outputs[row] = texts[position]
        return float(out.metrics.get("eval_loss", math.nan)), outputs

    def evaluate_stage(self) -> tuple[dict[str, float], pd.DataFrame | None]:
        """Validation loss/perplexity and generation metrics on ``eval_pairs``, from one pass over the
        validation rows, and the per-sentence predictions behind them (``None`` without generation, e.g.
        on DDP ranks > 0: every replica holds the same weights, so one scores)."""
        metrics: dict[str, float] = {}
        predictions: pd.DataFrame | None = None
        pairs = self.eval_pairs
        scored = pairs is not None and self.scorer is not None and len(pairs) > 0
        # The every-piece toxic ban matches lexicon terms in the raw source text, and source_words_only cuts
        # its outputs from it; the tokenized evaluation batches no longer hold it: those settings evaluate
        # the loss and generate apart (generate()), so the one-pass step never needs the tokenizer's pieces.
        one_pass = not (needs_lexicon(self.decoding) or self.decoding.source_words_only)
        if self.eval_dataset is not None and scored and one_pass:
            ids = [str(i) for i in self.eval_dataset["id"]] if "id" in self.eval_dataset.column_names else None
            if ids != [str(i) for i in pairs["id"]]:
                raise ValueError("eval_dataset and eval_pairs must hold the same rows in the same order (by id)")
            loss, outputs = self._loss_and_generations()
            if self.is_world_process_zero():
                scores, predictions = self.score_predictions(pairs, outputs, prefix="eval_")
                metrics.update(scores)
        else:
            loss = float(self.evaluate().get("eval_loss", math.nan)) if self.eval_dataset is not None else math.nan
            if scored and self.is_world_process_zero():
                scores, predictions = self.generate_and_predict(pairs, prefix="eval_")
                metrics.update(scores)
        if self.eval_dataset is not None:
            metrics = {"eval_loss": loss, "eval_perplexity": perplexity(loss), **metrics}
        return metrics, predictions

    def generate_and_score(
        self, pairs: pd.DataFrame, decoding: DecodingConfig | None = None, prefix: str = ""
    ) -> tuple[dict[str, float], list[str]]:
        """Generate rewrites of ``pairs.toxic`` with the decoding controls and score them."""
        scores, predictions = self.generate_and_predict(pairs, decoding, prefix)
        return scores, list(predictions["output"])

    def generate_and_predict(
        self, pairs: pd.DataFrame, decoding: DecodingConfig | None = None, prefix: str = ""
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Generate rewrites of ``pairs.toxic``, score them, and keep the per-sentence predictions."""
        if self.scorer is None:
            raise ValueError("generate_and_score needs a scorer")
        decoding = decoding or self.decoding
        return predict(self.model, self.processing_class, pairs, decoding, self.scorer,
                       self.banned_token_ids(decoding), self.max_source_length, prefix)

    def banned_token_ids(self, decoding: DecodingConfig) -> list[int] | None:
        """The toxic token ids ``decoding`` bans (``toxic_ban: first_token`` with a toxic penalty), else
        ``None`` (nothing is computed for a decoding that does not use them)."""
        if not bans_token_ids(decoding):
            return None
        if callable(self._toxic_token_ids):
            self._toxic_token_ids = list(self._toxic_token_ids())
        return list(self._toxic_token_ids or [])

    def score_predictions(
        self, pairs: pd.DataFrame, outputs: Sequence[str], prefix: str = ""
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """Score ``outputs`` (one per row of ``pairs``) and keep the per-sentence predictions."""
        if self.scorer is None:
            raise ValueError("score_predictions needs a scorer")
        return score_outputs(self.scorer, pairs, outputs, prefix)

    def _save_stage_checkpoint(self, index: int, stage: str) -> Path:
        from raydetox.modeling import save_trained

        root = Path(self.args.output_dir) / "checkpoints"
        path = root / f"stage-{index:02d}-{stage}"
        save_trained(self.model, self.processing_class, path, max_source_length=self.max_source_length)
        keep = self.args.keep_stage_checkpoints
        if keep > 0:
            for old in sorted(root.glob("stage-*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return path


def predict(
    model: Any,
    tokenizer: Any,
    pairs: pd.DataFrame,
    decoding: DecodingConfig,
    scorer: Scorer,
    toxic_token_ids: Sequence[int] | None,
    max_source_length: int,
    prefix: str = "",
) -> tuple[dict[str, float], pd.DataFrame]:
    """Rewrite ``pairs.toxic`` with ``model`` under ``decoding`` and score the outputs: the metrics
    (``prefix``-ed) and the per-sentence predictions. Every evaluation row of a run or a sweep comes from here."""
    outputs = generate(model, tokenizer, list(pairs["toxic"]), decoding, toxic_token_ids=toxic_token_ids,
                       max_source_length=max_source_length, lexicon=scorer.lexicon, langs=list(pairs["lang"]))
    return score_outputs(scorer, pairs, outputs, prefix)


def score_outputs(
    scorer: Scorer, pairs: pd.DataFrame, outputs: Sequence[str], prefix: str = ""
) -> tuple[dict[str, float], pd.DataFrame]:
    """Score ``outputs`` (one per row of ``pairs``): the metrics (``prefix``-ed) and the per-sentence predictions."""
    scores, sentences = scorer.score_with_sentences(
        list(pairs["toxic"]), list(outputs), [list(r) for r in pairs["refs"]], list(pairs["lang"]), prefix=prefix
    )
    return scores, predictions_frame(pairs, list(outputs), sentences)


def eval_order(dataset: Dataset | None) -> list[int] | None:
    """Row indices of a tokenized ``dataset``, longest ``input_ids`` first (stable); None without one."""
    if dataset is None or "input_ids" not in dataset.column_names:
        return None
    lengths = [len(ids) for ids in dataset["input_ids"]]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def baseline_schedule(schedule: Sequence[StageConfig]) -> list[StageConfig]:
    """The reference point: one ``full`` stage with the schedule's total epochs and its first lr."""
    total = sum(s.epochs for s in schedule)
    return [StageConfig(stage="full", epochs=total, lr=schedule[0].lr)]


def results_frame(results: Sequence[StageResult]) -> pd.DataFrame:
    """One row per stage: settings, training figures and every metric."""
    return pd.DataFrame([r.row() for r in results])
