"""The results contract: what every trial reports, and how ``raydetox analyze`` reads it back.

A trial reports one row per finished stage (``phase: stage``) and one row per decoding-penalty setting
scored on its final weights (``phase: decode``). The ``untrained`` variant's trial trains no stage: its
rows are decode rows at ``stage_index`` 0, stage and ordering ``untrained``, ``is_untrained`` true. Trials build their rows with :func:`stage_row` and
:func:`decode_row`; analysis reads them with :func:`load_results`. Both sides use the same key columns,
the same objective (:func:`objective_column`; :func:`objective_value` for one row) and the same schedule
of a trial (:func:`trial_schedule`), so the writer and the reader cannot drift apart. Under ``sweep.ablations`` a row also records its arm
("on"/"off") of each ablated factor in ``ablation_<factor>`` (:func:`ablation_column`).

This module imports only the config and pandas: analysis can read a sweep without torch or Ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from raydetox.config import StageConfig, SweepConfig
from raydetox.errors import ResultsError, short

RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
EXPERIMENT_FILE = "experiment.yaml"
# Where a sweep keeps a trial's checkpoints: a trial that trains in its own process checkpoints through
# Tune into its trial directory; a Ray Train run writes under TRAIN_DIR/train-<trial id>. Each checkpoint
# holds STATE_FILE (the stages finished so far) and the last finished stage's model directory.
STATE_FILE = "curriculum_state.json"
TRAIN_DIR = "train"
CHECKPOINT_GLOB = "checkpoint_*"
DATA_DIR = "data"
# The reference variant with no stage trained: its ordering, its rows' stage and the confirmation's system.
UNTRAINED = "untrained"


CONFIRMATION_FILES: dict[str, str] = {
    "csv": "confirmation.csv", "parquet": "confirmation.parquet", "predictions": "confirmation_predictions.parquet",
}
"""What a confirmation writes into the analysis dir (``raydetox.confirm.confirm``), by kind."""

SKIPPED = "skipped"
"""Key of the one report of a trial that runs nothing (a duplicate of another): why it was skipped."""


def skipped_trial(trial_dir: Path) -> bool:
    """Whether a trial directory's result file holds a :data:`SKIPPED` report (a trial that ran nothing)."""
    try:
        lines = (trial_dir / RESULT_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for line in lines:
        try:
            if SKIPPED in json.loads(line):
                return True
        except (json.JSONDecodeError, TypeError):
            continue
    return False


TRIALS_FILE = "trials.jsonl"
"""Beside the trial directories: one ``{"trial_id": ...}`` line per trial start (the sweep's Tune callback
``raydetox.tracking.TrialManifest``), so that a trial whose directory is gone is still named."""


def started_trials(results_dir: Path) -> list[str]:
    """The trial ids :data:`TRIALS_FILE` lists, each once, in order of first start (none for a sweep
    that predates the file). A last line cut short (the driver killed mid-write) is passed over; any
    other malformed line is a :class:`ResultsError` naming the file and line."""
    path = Path(results_dir) / TRIALS_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: cannot read: {err}") from None
    lines = text.split("\n")
    ids: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            trial_id = json.loads(line)["trial_id"]
        except (json.JSONDecodeError, TypeError, KeyError):
            if number == len(lines):  # no line end after it: a write cut short
                continue
            raise ResultsError(f"{path}:{number}: expected a JSON object with a 'trial_id', got {short(line)}") from None
        if not isinstance(trial_id, str) or not trial_id:
            raise ResultsError(f"{path}:{number}: key 'trial_id': expected text, got {short(trial_id)}")
        ids.setdefault(trial_id)
    return list(ids)


def trial_dir_name(trial_id: str) -> str:
    """The directory of a trial inside the sweep's results directory."""
    return f"trial_{trial_id}"


def train_run_name(trial_id: str) -> str:
    """The Ray Train run of a trial, under ``RESULTS_DIR/TRAIN_DIR``."""
    return f"train-{trial_id}"
# A cleaning ablation's uncleaned-training-rows arm is prepared once, beside DATA_DIR (the cleaned arm).
CLEANING_OFF_DATA_DIR = "data-cleaning-off"
ARMS: tuple[str, ...] = ("on", "off")


def ablation_column(factor: str) -> str:
    """The column of a row that records its arm ("on"/"off") of an ablation factor."""
    return f"ablation_{factor}"


def decoding_arm(toxic_penalty: float, copy_penalty: float, sweep: SweepConfig) -> dict[str, Any]:
    """The ``decoding_controls`` arm of a row scored with these penalties: "on" at the ablation's
    penalties, "off" at none, ``None`` elsewhere in the grid; empty when the factor is not ablated."""
    if sweep.ablations is None or "decoding_controls" not in sweep.ablations.factors:
        return {}
    on = sweep.ablations.decoding_controls
    arm = ("on" if (toxic_penalty, copy_penalty) == (on.toxic_penalty, on.copy_penalty)
           else "off" if toxic_penalty == 0 and copy_penalty == 0 else None)
    return {ablation_column("decoding_controls"): arm}


# The one line a trial prints per finished stage (raydetox.train_ray.RayStageReporter); Ray's log
# deduplication must let every one through (raydetox.sweep.init_ray).
STAGE_LINE_PATTERN = r"^\[\S+\] stage \d+/\d+ "


def stage_line(trial: str, index: int, n_stages: int, stage: str, loss: float, copy_rate: float,
               bertscore: float, seconds: float) -> str:
    """``[trial] stage 1/2 easy: loss … copy … bertscore … (… s)``: a trial's progress line for a stage."""
    return (f"[{trial}] stage {index}/{n_stages} {stage}: loss {loss:.3f} copy {copy_rate:.3f} "
            f"bertscore {bertscore:.3f} ({seconds:.1f} s)")


PHASES: tuple[str, ...] = ("stage", "decode")
# A report must carry these to be a row; Tune-only or non-rank-0 reports lack ``phase`` and are skipped.
KEY_COLUMNS: tuple[str, ...] = ("trial_id", "phase", "stage_index", "toxic_penalty", "copy_penalty")
# What identifies a row to a reader, before its metrics.
DESCRIBE_COLUMNS: tuple[str, ...] = (
    "trial_id", "ordering", "phase", "stage_index", "stage", "toxic_penalty", "copy_penalty",
)
# Generation metrics shown in comparisons (unprefixed names of raydetox.metrics.METRICS).
SUMMARY_METRICS: tuple[str, ...] = (
    "copy_rate", "exact_match", "bleu", "chrf", "bertscore_f1", "bertscore_src_f1", "toxicity", "j",
)
# The columns of a validation row that reports put side by side.
ROW_METRICS: tuple[str, ...] = (
    "eval_copy_rate", "eval_copy_rate_loose", "eval_exact_match", "eval_bleu", "eval_chrf", "eval_bertscore_f1",
    "eval_bertscore_src_f1", "eval_toxicity", "eval_j", "eval_loss", "eval_perplexity", "objective",
)


# --------------------------------------------------------------------------------------------- objective

# The metrics each objective reads (unprefixed); see objective_column.
OBJECTIVE_METRICS: dict[str, tuple[str, ...]] = {
    "bertscore_copy_bound": ("bertscore_f1", "copy_rate"),
    "j": ("j",),
    "chrf": ("chrf",),
}


def objective_column(df: pd.DataFrame, cfg: SweepConfig, prefix: str = "eval_") -> pd.Series:
    """The sweep objective (higher is better) of every row — THE definition used everywhere, computed on
    whole columns (a sweep of a thousand trials has a hundred thousand rows); NaN where a needed metric is
    NaN or not a number.

    ``bertscore_copy_bound``: BERTScore F1 when the copy rate is within ``cfg.copy_rate_bound``, else
    ``BERTScore - 1 - (copy_rate - bound)``, so any feasible row beats every infeasible one and infeasible
    rows are ranked by how far they overshoot. ``j`` / ``chrf``: the J score / corpus chrF. Any objective:
    a row with more degenerate outputs than ``cfg.max_degenerate_rate`` is refused (``-inf``) or
    penalised (``cfg.degenerate_action``: ``value - span - excess * span``, span 100 for chrF, else 1, so
    it falls below every row within the bound); rows without a ``degenerate_rate`` (written before the
    metric existed, or not measured) pass unchanged.
    """
    if cfg.objective not in OBJECTIVE_METRICS:
        raise ValueError(f"sweep.objective: unknown objective {cfg.objective!r}")
    names = OBJECTIVE_METRICS[cfg.objective]
    missing = [prefix + n for n in names if prefix + n not in df]
    if missing and len(df):
        raise KeyError(f"objective {cfg.objective!r} needs metric {missing[0]!r}; row has {sorted(df.columns)[:20]}")
    if not len(df):
        return pd.Series([], index=df.index, name="objective", dtype=float)

    def col(name: str) -> np.ndarray:
        return pd.to_numeric(df[prefix + name], errors="coerce").to_numpy(float)

    if cfg.objective == "bertscore_copy_bound":
        bertscore, copy_rate = col("bertscore_f1"), col("copy_rate")
        with np.errstate(invalid="ignore"):
            value = np.where(copy_rate <= cfg.copy_rate_bound, bertscore,
                             bertscore - 1.0 - (copy_rate - cfg.copy_rate_bound))
    else:
        value = col(names[0])
    if prefix + "degenerate_rate" in df:  # rows written before the metric existed pass unchanged
        excess = col("degenerate_rate") - cfg.max_degenerate_rate
        with np.errstate(invalid="ignore"):
            over = excess > 0  # NaN compares False: no measurement, no guard
        if cfg.degenerate_action == "refuse":
            value = np.where(over, -np.inf, value)
        else:
            span = 100.0 if cfg.objective == "chrf" else 1.0
            value = np.where(over, value - span - excess * span, value)
    return pd.Series(value, index=df.index, name="objective", dtype=float)


def objective_value(metrics: Mapping[str, Any], cfg: SweepConfig, prefix: str = "eval_") -> float:
    """:func:`objective_column` of one row of metrics (a trial's stage or decode row)."""
    row = pd.DataFrame({key: [value] for key, value in metrics.items()})
    return float(objective_column(row, cfg, prefix).iloc[0])


# Per-sentence outputs kept beside every stage and decode row (the ``predictions`` key of a row names the
# file, relative to the sweep's directory). References are JSON text so any reader can load the file.
PREDICTION_KEYS: tuple[str, ...] = ("id", "lang", "input", "output", "references")
PREDICTIONS_DIR = "predictions"


def predictions_frame(pairs: pd.DataFrame, outputs: list[str], sentences: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated pair: id, lang, input, output, references and the per-sentence metrics
    (``raydetox.metrics.Scorer.sentence_scores`` columns: copy, chrf, sim, toxicity, sta, j, degenerate…)."""
    if not len(pairs) == len(outputs) == len(sentences):
        raise ValueError(f"predictions: {len(pairs)} pairs, {len(outputs)} outputs, {len(sentences)} scored rows")
    frame = pd.DataFrame({
        "id": pairs["id"].astype(str).to_numpy(),
        "lang": pairs["lang"].astype(str).to_numpy(),
        "input": pairs["toxic"].to_numpy(),
        "output": list(outputs),
        "references": [json.dumps(list(r), ensure_ascii=False) for r in pairs["refs"]],
    })
    metrics = sentences.drop(columns=[c for c in ("lang",) if c in sentences]).reset_index(drop=True)
    return pd.concat([frame, metrics], axis=1)


def write_predictions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a predictions frame as zstd-compressed parquet (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False, compression="zstd")
    tmp.replace(path)
    return path


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A predictions file back as a frame, with ``references`` as lists."""
    frame = pd.read_parquet(path)
    missing = [c for c in PREDICTION_KEYS if c not in frame]
    if missing:
        raise ResultsError(f"{path}: not a predictions file (missing columns {missing})")
    frame["references"] = [json.loads(r) for r in frame["references"]]
    return frame


# ------------------------------------------------------------------------------------------------ writing


def trial_schedule(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The schedule a trial ran, from its Tune config: an explicit ``schedule``, or the sweep's ``variant``
    with any sampled per-stage learning rates (``lr_0``, ``lr_1``, …) applied."""
    if "schedule" in config:
        return _stages(config["schedule"], "schedule")
    variant = config.get("variant")
    if not isinstance(variant, Mapping) or "schedule" not in variant:
        raise KeyError(f"trial config has no 'schedule' (nor 'variant.schedule'); keys: {sorted(config)}")
    schedule = _stages(variant["schedule"], "variant.schedule")
    for i, stage in enumerate(schedule):
        if f"lr_{i}" in config:
            stage["lr"] = _number(config[f"lr_{i}"], f"lr_{i}")
    return schedule


def _stages(value: Any, key: str) -> list[dict[str, Any]]:
    """A schedule from a trial config: a list of stage mappings, each a valid stage (``ValueError`` if not)."""
    if not isinstance(value, list) or not all(isinstance(s, Mapping) for s in value):
        raise ValueError(f"key {key!r}: expected a list of stages (mappings), got {_short(value)}")
    for i, stage in enumerate(value):
        try:
            StageConfig(**{k: stage[k] for k in ("stage", "epochs", "lr") if k in stage})
        except (ValidationError, TypeError) as err:
            first = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            raise ValueError(f"key '{key}.{i}': not a stage: {first} (got {_short(dict(stage))})") from None
    return [dict(s) for s in value]


def _number(value: Any, key: str) -> float:
    """``value`` as a float when it is a JSON number (``ValueError`` naming ``key`` if not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"key {key!r}: expected a number, got {_short(value)}")
    return float(value)


def _short(value: Any) -> str:
    return f"{type(value).__name__} {short(value)}"


def stage_row(
    result: Mapping[str, Any],
    toxic_penalty: float,
    copy_penalty: float,
    meta: Mapping[str, Any],
    sweep: SweepConfig,
) -> dict[str, Any]:
    """The row of a finished stage: ``result`` holds the stage's ``index`` (0-based), ``stage``,
    ``train_loss``, ``seconds``, ``steps``, ``lr_applied``, ``metrics`` (validation, ``eval_`` keys), the
    ``n_examples`` it trained on (distinct pairs drawn, under competence pacing) and, under competence
    pacing, the ``competence`` reached at its last step."""
    metrics = dict(result["metrics"])
    trained_on = {"stage_examples": result["n_examples"]} if "n_examples" in result else {}
    if result.get("competence") is not None:
        trained_on["competence"] = result["competence"]
    return {
        "phase": "stage",
        "stage_index": int(result["index"]) + 1,
        "stage": result["stage"],
        "toxic_penalty": float(toxic_penalty),
        "copy_penalty": float(copy_penalty),
        "train_loss": result["train_loss"],
        "stage_seconds": result["seconds"],
        "stage_steps": result["steps"],
        "lr_applied": result["lr_applied"],
        **trained_on,
        **meta,
        **decoding_arm(toxic_penalty, copy_penalty, sweep),
        **metrics,
        "objective": objective_value(metrics, sweep),
        CHECKPOINT_SCORE: checkpoint_score(metrics, sweep),
    }


# The stage row's key that Ray's checkpoint retention ranks by (training.keep_checkpoints).
CHECKPOINT_SCORE = "checkpoint_score"


def checkpoint_score(metrics: Mapping[str, Any], sweep: SweepConfig) -> float:
    """What checkpoint retention ranks a stage by: the objective with degenerate rows penalised, never
    refused. Within the bound it is the objective; a row over it falls below every row within it, ranked
    by how good it is otherwise: the order in which ``raydetox analyze`` picks the best row, also when it
    has to fall back to penalising because every row is refused (with ``-inf`` for all of them, retention
    would keep an arbitrary stage and delete the one analysis then picks)."""
    return objective_value(metrics, dataclasses.replace(sweep, degenerate_action="penalise"))


def decode_row(
    stage_index: int,
    stage: str,
    toxic_penalty: float,
    copy_penalty: float,
    metrics: Mapping[str, Any],
    meta: Mapping[str, Any],
    sweep: SweepConfig,
    seconds: float,
    reused: bool,
) -> dict[str, Any]:
    """The row of one decoding-penalty setting scored on the weights after ``stage_index`` stages."""
    return {
        "phase": "decode",
        "stage_index": int(stage_index),
        "stage": stage,
        "toxic_penalty": float(toxic_penalty),
        "copy_penalty": float(copy_penalty),
        "decode_seconds": seconds,
        "decode_reused": reused,
        **meta,
        **decoding_arm(toxic_penalty, copy_penalty, sweep),
        **metrics,
        "objective": objective_value(metrics, sweep),
    }


# ------------------------------------------------------------------------------------------------ reading


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``a/b`` keys (as Tune's DataFrames do); lists → JSON text so parquet can store them."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(_flatten(item, name + "/"))
        elif isinstance(item, (list, tuple)):
            out[name] = json.dumps(item, sort_keys=True)
        else:
            out[name] = item
    return out


def _read_json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of a ``result.json``; an unfinished last line (trial still writing) is skipped."""
    text = _read_text(path)
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                break  # Tune writes whole lines; a partial last one is a write in progress
            raise ResultsError(f"{path}:{number}: not a JSON object: {err}") from None
        if not isinstance(obj, dict):
            raise ResultsError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    return rows


def _read_text(path: Path) -> str:
    """A result file's text, or a :class:`ResultsError` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ResultsError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ResultsError(f"{path}: cannot read: {err.strerror or err}") from None


def _check_types(obj: Mapping[str, Any], where: str) -> None:
    """A contract row's key columns and metrics have their types (a wrong one fails here, by key)."""
    if not isinstance(obj["trial_id"], str):
        raise ResultsError(f"{where}: key 'trial_id': expected text, got {_short(obj['trial_id'])}")
    index = obj["stage_index"]
    if isinstance(index, bool) or not isinstance(index, int):
        raise ResultsError(f"{where}: key 'stage_index': expected an integer, got {_short(index)}")
    for key, value in obj.items():
        if key in ("toxic_penalty", "copy_penalty", "objective") or key.startswith("eval_"):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ResultsError(f"{where}: key {key!r}: expected a number, got {_short(value)}")


def trial_dirs(results_dir: Path) -> list[Path]:
    """The trial directories of a sweep (those holding a ``result.json``), sorted by name."""
    return sorted(p for p in results_dir.iterdir() if p.is_dir() and (p / RESULT_FILE).is_file())


def _trial_config(trial_dir: Path, lines: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    params = trial_dir / PARAMS_FILE
    if params.is_file():
        try:
            config = json.loads(_read_text(params))
        except json.JSONDecodeError as err:
            raise ResultsError(f"{params}: invalid JSON: {err}") from None
    else:  # every Tune result line also carries the config
        config = next((obj["config"] for _, obj in reversed(lines) if isinstance(obj.get("config"), dict)), {})
    if not isinstance(config, dict):
        raise ResultsError(f"{params}: expected a JSON object (the trial config)")
    return config


def load_results(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every contract row of a Tune experiment dir as one DataFrame, each row exactly once.

    One row per report carrying a ``phase``; the trial config is flattened into ``config/...`` columns and
    the schedule the trial ran is added as JSON text in ``schedule``. A resumed trial that reports a stage
    again keeps only its LAST report per (trial_id, phase, stage_index, toxic_penalty, copy_penalty).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"{results_dir}: results directory not found")
    dirs = trial_dirs(results_dir)
    if not dirs:
        raise ResultsError(f"{results_dir}: no trial directories containing {RESULT_FILE}")
    # pyarrow's JSON reader parses all the files at once on every core; the reader line by line is
    # the one that names the file, line and key of a bad row, so any doubt goes to it.
    rows, trial_of, configs = _rows_by_arrow(dirs) or _rows_line_by_line(dirs)
    for name in rows.columns[rows.dtypes == object]:  # JSON null and a missing key: both NaN, whichever reader
        rows[name] = rows[name].where(rows[name].notna())
    # One column order whichever reader (pyarrow's follows its parallel blocks): the key, then by name.
    rows = rows[[*KEY_COLUMNS, *sorted(c for c in rows.columns if c not in KEY_COLUMNS)]]
    if rows.empty:
        raise ResultsError(f"{results_dir}: the trials have not reported any stage or decode row yet")
    trials = []
    for trial_dir, config in zip(dirs, configs):
        try:
            schedule = json.dumps(trial_schedule(config)) if config else None
        except (KeyError, ValueError) as err:
            raise ResultsError(f"{trial_dir / PARAMS_FILE}: {err.args[0]}") from None
        variant = config.get("variant") if isinstance(config.get("variant"), Mapping) else {}
        trials.append({
            **{f"config/{k}": v for k, v in _flatten(config).items()}, "schedule": schedule, "trial_dir": trial_dir.name,
            # the contract puts these in rows; older rows: the config
            **{f"{_DEFAULT}{key}": config.get(key, variant.get(key)) for key in _ROW_OR_CONFIG},
        })
    per_trial = pd.DataFrame.from_records(trials).iloc[trial_of].reset_index(drop=True)
    for key in _ROW_OR_CONFIG:
        default = per_trial.pop(f"{_DEFAULT}{key}")
        if key not in rows:
            rows[key] = default
        else:  # a row without the key (or null) takes its trial's config value
            absent = rows[key].isna().to_numpy()
            if absent.any():
                rows[key] = rows[key].astype(object).where(~absent, default)
    df = pd.concat([rows, per_trial], axis=1)
    df["stage_index"] = df["stage_index"].astype(int)
    for col in ("toxic_penalty", "copy_penalty"):
        df[col] = df[col].astype(float)
    df = df.drop_duplicates(list(KEY_COLUMNS), keep="last")
    order = df["phase"].map({p: i for i, p in enumerate(PHASES)})
    df = df.assign(_phase_order=order).sort_values(
        ["trial_id", "_phase_order", "stage_index", "toxic_penalty", "copy_penalty"], kind="stable"
    )
    return df.drop(columns="_phase_order").reset_index(drop=True)


_Rows = tuple[pd.DataFrame, np.ndarray, list[dict[str, Any]]]  # contract rows, each row's trial, each trial's config


def _rows_line_by_line(dirs: Sequence[Path]) -> _Rows:
    """The contract rows of each trial's result file, checked line by line: an error names file, line, key."""
    records: list[dict[str, Any]] = []
    origin: list[tuple[int, int]] = []  # (trial, line number) of each record, for error messages
    configs = []
    for t, trial_dir in enumerate(dirs):
        path = trial_dir / RESULT_FILE
        lines = _read_json_lines(path)
        configs.append(_trial_config(trial_dir, lines))
        for number, obj in lines:
            if obj.get("phase") is None:
                continue
            if obj["phase"] not in PHASES:
                raise ResultsError(f"{path}:{number}: key 'phase': expected one of {PHASES}, got {obj['phase']!r}")
            missing = [k for k in KEY_COLUMNS if obj.get(k) is None]
            if missing:
                raise ResultsError(f"{path}:{number}: row is missing key(s) {missing}")
            records.append(obj)
            origin.append((t, number))
    if not records:
        return pd.DataFrame(), np.zeros(0, dtype=int), configs
    # Column-wise from here: a sweep of a thousand trials has a hundred thousand rows.
    rows = pd.DataFrame.from_records(records).drop(columns="config", errors="ignore")
    if _suspect_columns(rows):
        for i, obj in enumerate(records):  # search the rows so that the error names file, line and key
            _check_types(obj, f"{dirs[origin[i][0]] / RESULT_FILE}:{origin[i][1]}")
        # A column of valid values that pandas could not type as numbers (e.g. all None): nothing to report.
    trial_of = np.fromiter((o[0] for o in origin), dtype=int, count=len(origin))
    return _flatten_columns(rows), trial_of, configs


def _rows_by_arrow(dirs: Sequence[Path]) -> _Rows | None:
    """The same rows as :func:`_rows_line_by_line`, parsed by pyarrow in one multi-threaded pass; ``None``
    whenever the line-by-line reader should decide: a file still being written or not UTF-8, a trial
    without ``params.json``, a line that is not a JSON object, a value whose type differs from its
    column's elsewhere, a bad phase, a missing key, a list inside a dict."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json

    lines: list[bytes] = []
    trial_of: list[int] = []
    configs = []
    for t, trial_dir in enumerate(dirs):
        data = (trial_dir / RESULT_FILE).read_bytes()
        if not (trial_dir / PARAMS_FILE).is_file() or (data and not data.endswith(b"\n")):
            return None
        try:
            configs.append(_trial_config(trial_dir, []))
        except ResultsError:
            return None
        # Lines that never mention a phase (e.g. a skipped trial's report) are not contract rows: checked
        # to be JSON objects here, but their keys must not become columns.
        kept = []
        for line in data.split(b"\n"):
            if b'"phase"' in line:
                kept.append(line)
            elif line.strip() and not _is_json_object(line):
                return None
        lines += kept
        trial_of += [t] * len(kept)
    if not lines:
        return None
    try:
        table = pa_json.read_json(pa.BufferReader(b"\n".join(lines) + b"\n"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if table.num_rows != len(lines) or "phase" not in table.column_names:
        return None
    if "config" in table.column_names:
        table = table.drop_columns(["config"])
    if any(_holds_nested_list(field.type) for field in table.schema):
        return None
    keep = pc.is_valid(table["phase"])
    every_line_a_row = pc.all(keep).as_py()
    table = table.filter(keep)
    if table.num_rows == 0:
        return None
    # A column null in every row either holds JSON nulls (kept, as the line-by-line reader does) or comes
    # only from the lines just filtered out (it would not exist there): only the latter is in doubt.
    if not every_line_a_row and any(table[name].null_count == table.num_rows for name in table.column_names):
        return None
    rows = table.to_pandas()
    for field in table.schema:  # lists → Python lists, which _flatten_columns writes as JSON text
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            rows[field.name] = rows[field.name].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    if (not rows["phase"].isin(PHASES).all() or any(k not in rows or rows[k].isna().any() for k in KEY_COLUMNS)
            or _suspect_columns(rows)):
        return None
    return _flatten_columns(rows), np.asarray(trial_of)[keep.to_numpy(zero_copy_only=False)], configs


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # not JSON, or not UTF-8
        return False


def _holds_nested_list(kind: Any) -> bool:
    """A struct with a list somewhere inside (flattening it would need the line-by-line reader's care)."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return any(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or _holds_nested_list(f.type) for f in kind)
    return False


_ROW_OR_CONFIG: tuple[str, ...] = ("ordering", "is_baseline", "is_untrained", "pacing")
_DEFAULT = "\x00default/"


def _number_column(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _suspect_columns(rows: pd.DataFrame) -> list[str]:
    """Columns whose pandas type breaks the contract's types (checked on whole columns, not per row)."""
    suspect = [] if rows["trial_id"].map(lambda v: isinstance(v, str)).all() else ["trial_id"]
    if not (pd.api.types.is_integer_dtype(rows["stage_index"]) and _number_column(rows["stage_index"])):
        suspect.append("stage_index")
    return suspect + [c for c in rows.columns
                      if (c in ("toxic_penalty", "copy_penalty", "objective") or str(c).startswith("eval_"))
                      and not _number_column(rows[c]) and rows[c].notna().any()]


def _flatten_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Columns holding dicts → ``a/b`` columns, lists → JSON text (as :func:`_flatten` does per row)."""
    out = {}
    for name in rows.columns:
        column = rows[name]
        if column.dtype != object:
            out[name] = column
            continue
        kinds = column.map(type)
        if kinds.map(lambda k: issubclass(k, Mapping)).any():
            flat = [_flatten(v, f"{name}/") if isinstance(v, Mapping) else {} for v in column]
            for sub, values in pd.DataFrame.from_records(flat, index=rows.index).items():
                out[sub] = values
            # a row whose value is not a dict keeps it under the plain name
            plain = ~column.map(lambda v: isinstance(v, Mapping))
            if plain.any() and column[plain].notna().any():
                out[name] = column.where(plain)
        elif kinds.map(lambda k: k in (list, tuple)).any():
            out[name] = column.map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple)) else v)
        else:
            out[name] = column
    return pd.DataFrame(out, index=rows.index)
