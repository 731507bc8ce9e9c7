"""Ray Train side of a trial: the per-worker loop that runs one schedule and reports after every stage.

Each Ray Train worker builds the same ``CurriculumSeq2SeqTrainer`` as ``raydetox train`` (through
:func:`raydetox.experiment.build_trainer`), wrapped by Ray's ``prepare_trainer`` for DDP. After every
stage the main worker reports the stage's metrics with a checkpoint holding the curriculum state and the
stage's weights (the adapter only for LoRA); a restarted worker restores that checkpoint and continues
with the next stage. After the last stage the worker evaluates every decoding-penalty combination on
the final weights — no retraining — and reports one row per combination.

This module imports Ray at the top: import it only after :func:`raydetox.sweep.init_ray` has run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.tune
import torch
from transformers import TrainerCallback

from raydetox import results
from raydetox.config import ExperimentConfig, StageConfig, config_from_dict
from raydetox.data.prepare import load_prepared, prepare
from raydetox.modeling import adopt_node_base
from raydetox.trainer import STATE_FILE, CurriculumSeq2SeqTrainer, StageResult

class Session:
    """Where a training loop reports to: a Ray Train worker of a worker group, or the Tune trial itself.

    Both run the same loop (:func:`train_loop_per_worker`); only reporting, checkpoint lookup and the
    worker's rank differ.
    """

    def __init__(self, in_trial: bool = False) -> None:
        self.in_trial = in_trial

    @property
    def rank(self) -> int:
        return 0 if self.in_trial else ray.train.get_context().get_world_rank()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        lib = ray.tune if self.in_trial else ray.train
        checkpoint = lib.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        lib.report(metrics, checkpoint=checkpoint)

    def checkpoint(self) -> Any:
        return ray.tune.get_checkpoint() if self.in_trial else ray.train.get_checkpoint()


class RayStageReporter(TrainerCallback):
    """Reports each finished stage to Ray Train (and so to Tune) with a resumable checkpoint."""

    def __init__(
        self, cfg: ExperimentConfig, meta: dict[str, Any], n_stages: int, session: Session,
        predictions_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.meta = meta
        self.n_stages = n_stages
        self.session = session
        self.predictions_dir = predictions_dir  # the trial's folder under the sweep's predictions/

    def on_stage_end(self, args, state, control, result: StageResult, trainer: CurriculumSeq2SeqTrainer, **_: Any):
        if self.session.rank != 0:
            # Generation metrics (and so the objective) exist on rank 0 only; the others just keep step.
            self.session.report({"stage_index": result.index + 1})
            return
        row = stage_row(result, self.cfg, self.meta)
        line = results.stage_line(self.meta.get("trial", "trial"), result.index + 1, self.n_stages, result.stage,
                                  result.train_loss, row.get("eval_copy_rate", float("nan")),
                                  row.get("eval_bertscore_f1", float("nan")), result.seconds)
        # Not print(): Ray Train V2 patches it in its workers to both print and log (when stdout is
        # wrapped), so every line reached the driver twice.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        out = Path(args.output_dir)
        if result.predictions and self.predictions_dir is not None:
            target = self.predictions_dir / Path(result.predictions).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / result.predictions, target)
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(out / STATE_FILE, Path(tmp) / STATE_FILE)
            shutil.copytree(out / result.checkpoint, Path(tmp) / result.checkpoint)
            self.session.report(row, checkpoint_dir=tmp)


def stage_row(result: StageResult, cfg: ExperimentConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """The results-contract row of a finished stage, scored with the run's own decoding settings; its
    ``predictions`` names the trial's copy of the stage's predictions file."""
    row = results.stage_row(dataclasses.asdict(result), cfg.decoding.toxic_penalty, cfg.decoding.copy_penalty,
                            meta, cfg.sweep)
    if result.predictions:
        row["predictions"] = _predictions_key(meta, Path(result.predictions).name)
    return row


def _predictions_key(meta: dict[str, Any], filename: str) -> str:
    """Where a trial's predictions file lives, relative to the sweep's directory (the row's ``predictions``)."""
    return f"{results.PREDICTIONS_DIR}/{meta.get('trial', 'run')}/{filename}"


def _restore(checkpoint: Any, output_dir: Path) -> list[StageResult]:
    """Copy the last stage checkpoint into ``output_dir``; return the stages it had finished."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        shutil.copytree(d, output_dir, dirs_exist_ok=True)
    state = json.loads((output_dir / STATE_FILE).read_text())
    return [StageResult(**r) for r in state["stages"]]


def _replay(finished: list[StageResult], cfg: ExperimentConfig, meta: dict[str, Any], session: Session) -> None:
    """Report the finished stages again after a restart.

    A trial restarted by Tune (driver interrupted, ``--resume``) begins a fresh result file, so rows
    reported before the restart would be lost; replaying them from the checkpointed state keeps every
    row. Analysis keeps the last report per (trial, phase, stage, penalties), so replays never double.
    """
    for result in finished:
        session.report(stage_row(result, cfg, meta) if session.rank == 0 else {"stage_index": result.index + 1})


def _threads() -> int:
    # Ray sets OMP_NUM_THREADS to the worker's CPU share; torch must follow it or workers oversubscribe.
    return max(1, int(float(os.environ.get("OMP_NUM_THREADS") or 1)))


def _quiet_worker_logs() -> None:
    """One progress line per trial and stage is ours to print; silence per-report and per-load chatter."""
    import logging

    import transformers

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _worker_dir(work_dir: str | None, trial: str, rank: int) -> Path:
    """The worker's scratch dir: fixed per trial and rank under ``work_dir`` (else a fresh temp dir).

    A worker killed outright (SIGKILL, OOM) never runs its cleanup; its successor, restored from the
    last checkpoint, clears the same dir first, so failures cannot pile up stage checkpoints on disk.
    """
    if not work_dir:
        return Path(tempfile.mkdtemp(prefix=f"raydetox-{trial}-r{rank}-"))
    path = Path(work_dir) / f"{trial}-r{rank}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def train_loop_per_worker(config: dict[str, Any], session: Session | None = None) -> None:
    """Ray Train entry: run ``config['schedule']`` then the decoding sweep; report rows per the contract.

    With ``Session(in_trial=True)`` the same loop runs inside the Tune trial's own process (one worker,
    no worker group to start) and reports to Tune directly.
    """
    from raydetox.experiment import build_trainer

    session = session or Session()

    torch.set_num_threads(_threads())
    _quiet_worker_logs()
    cfg = config_from_dict(config["experiment"], origin="trial config")
    prepared_dir = Path(config["prepared_dir"])
    if prepared_dir.is_dir():
        prepared = load_prepared(prepared_dir)
    else:  # a node other than the driver's: its own copy of the data, and of the embedded base
        prepared = prepare(cfg, prepared_dir)
        if config.get("driver_base"):
            adopt_node_base(cfg, prepared, config["driver_base"])
    schedule = [StageConfig(**s) for s in config["schedule"]]
    meta = dict(config.get("meta", {}))
    predictions_dir = (Path(config["predictions_dir"]) / str(meta.get("trial", "run"))
                       if config.get("predictions_dir") and cfg.metrics.keep_predictions else None)
    if not schedule:  # the untrained variant: nothing to train or checkpoint
        _untrained_sweep(cfg, prepared, meta, config["decode_grid"], session, predictions_dir)
        return
    output_dir = _worker_dir(config.get("work_dir"), meta.get("trial", "run"), session.rank)
    try:
        finished = _restore(session.checkpoint(), output_dir)
        _replay(finished, cfg, meta, session)
        fail_at = config.get("fail_once_at_stage")
        callbacks: list[TrainerCallback] = [RayStageReporter(cfg, meta, len(schedule), session, predictions_dir),
                                            *config.get("callbacks", [])]
        if fail_at is not None:
            callbacks.append(FailOnceCallback(int(fail_at), Path(config["fail_marker"])))
        trainer = build_trainer(cfg, prepared, output_dir, callbacks=callbacks)
        if not session.in_trial:
            from ray.train.huggingface.transformers import prepare_trainer

            trainer = prepare_trainer(trainer)
        trainer.run_schedule(schedule, resume=True)
        _decode_sweep(trainer, cfg, prepared, meta, len(schedule), schedule[-1].stage, config["decode_grid"], session,
                      predictions_dir)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def _decode_sweep(
    trainer: CurriculumSeq2SeqTrainer,
    cfg: ExperimentConfig,
    prepared,
    meta: dict[str, Any],
    n_stages: int,
    last_stage: str,
    grid: list[list[float]],
    session: Session,
    predictions_dir: Path | None = None,
) -> None:
    """Score every (toxic_penalty, copy_penalty) on the final weights; one report per combination, each
    with its predictions file (a reused row shares the last stage's)."""
    rank = session.rank
    last = trainer.stage_results[-1] if trainer.stage_results else None
    for toxic, copy in grid:
        if rank != 0:
            session.report({"stage_index": n_stages})
            continue
        decoding = dataclasses.replace(cfg.decoding, toxic_penalty=float(toxic), copy_penalty=float(copy))
        t0 = time.perf_counter()
        reused = last is not None and decoding == cfg.decoding and "eval_copy_rate" in last.metrics
        kept = None
        if reused:
            # The last stage was scored on these very weights with these settings: the same numbers.
            metrics = dict(last.metrics)
            if last.predictions and predictions_dir is not None:
                kept = _predictions_key(meta, Path(last.predictions).name)
        else:
            metrics, predictions = trainer.generate_and_predict(prepared.validation, decoding=decoding, prefix="eval_")
            if predictions_dir is not None:
                name = f"decode-{n_stages:02d}-tox{_label(toxic)}-copy{_label(copy)}.parquet"
                results.write_predictions(predictions, predictions_dir / name)
                kept = _predictions_key(meta, name)
        row = results.decode_row(n_stages, last_stage, toxic, copy, metrics, meta, cfg.sweep,
                                 seconds=time.perf_counter() - t0, reused=reused)
        if kept is not None:
            row["predictions"] = kept
        session.report(row)


def _untrained_sweep(
    cfg: ExperimentConfig,
    prepared,
    meta: dict[str, Any],
    grid: list[list[float]],
    session: Session,
    predictions_dir: Path | None = None,
) -> None:
    """The ``untrained`` variant's rows: the base model (:func:`raydetox.experiment.load_untrained`) scored
    on validation with every (toxic_penalty, copy_penalty), as decode rows after stage 0."""
    from raydetox.decoding import bans_token_ids
    from raydetox.experiment import load_untrained, toxic_token_ids
    from raydetox.judge import judge_for
    from raydetox.metrics import get_scorer, resolve_device
    from raydetox.trainer import predict

    if session.rank != 0:
        for _ in grid:
            session.report({"stage_index": 0})
        return
    model, tokenizer = load_untrained(cfg, prepared)
    model = model.to(resolve_device())
    scorer = get_scorer(cfg.metrics, prepared.lexicon, judge=judge_for(cfg, prepared))
    banned: list[int] | None = None  # computed once, if a setting of the grid bans token ids
    for toxic, copy in grid:
        decoding = dataclasses.replace(cfg.decoding, toxic_penalty=float(toxic), copy_penalty=float(copy))
        t0 = time.perf_counter()
        if banned is None and bans_token_ids(decoding):
            banned = toxic_token_ids(prepared.lexicon, tokenizer, cfg.decoding)
        metrics, predictions = predict(model, tokenizer, prepared.validation, decoding, scorer, banned,
                                       cfg.model.max_source_length, prefix="eval_")
        row = results.decode_row(0, results.UNTRAINED, toxic, copy, metrics, meta, cfg.sweep,
                                 seconds=time.perf_counter() - t0, reused=False)
        if predictions_dir is not None:
            name = f"decode-00-tox{_label(toxic)}-copy{_label(copy)}.parquet"
            results.write_predictions(predictions, predictions_dir / name)
            row["predictions"] = _predictions_key(meta, name)
        session.report(row)


def _label(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:g}"


class FailOnceCallback(TrainerCallback):
    """Fault injection for tests: raise once in the middle of stage ``stage_index`` (0-based).

    The marker file makes the failure happen once per trial even though the worker process restarts.
    """

    def __init__(self, stage_index: int, marker: Path) -> None:
        self.stage_index = stage_index
        self.marker = marker

    def on_step_end(self, args, state, control, **kwargs):
        if self._current_stage(args) == self.stage_index and not self.marker.exists():
            # The marker records the finished stages at the failure, so a test can tell replay from retraining.
            state = Path(args.output_dir) / STATE_FILE
            self.marker.write_text(state.read_text() if state.is_file() else "{}")
            raise RuntimeError(f"injected failure in stage {self.stage_index}")

    @staticmethod
    def _current_stage(args) -> int:
        state_file = Path(args.output_dir) / STATE_FILE
        if not state_file.is_file():
            return 0
        return len(json.loads(state_file.read_text())["stages"])
