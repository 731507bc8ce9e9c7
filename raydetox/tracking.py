"""Experiment tracking of a sweep: Ray Tune's own logger callbacks, fed finite numbers, and the list of
the trials it started (:class:`TrialManifest`).

``ray.callbacks`` names the trackers: ``tensorboard`` (Tune's TBX logger: event files in each trial's
folder) and ``mlflow`` (Tune's MLflow logger: one MLflow run per trial, its schedule as params and every
per-stage / per-penalty row as metrics, step = the row's index in the trial's reports).

A result row can hold infinities: ``toxic_penalty`` is ``inf`` when the penalty bans, and a refused row's
``objective`` is ``-inf``. tensorboardX warns "NaN or Inf found in input tensor." for each one it is
given, and MLflow's SQL store silently clamps them to ±1.8e308; both trackers here log ±``INF_SENTINEL``
instead (finite in float32, which TensorBoard stores), and each MLflow run carries the sentinel as a tag.

This module imports Ray at the top: import it only after :func:`raydetox.sweep.init_ray` has run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.air.constants import TRAINING_ITERATION
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.utils import flatten_dict

from raydetox.compat import mlflow_trial_runs
from raydetox.config import ConfigError, ExperimentConfig
from raydetox.results import TRIALS_FILE, trial_schedule

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

INF_SENTINEL = 1e30
"""What ±inf is logged as (finite in float32, far beyond any real metric or penalty)."""

# Tune bookkeeping that is no metric of a row (the config is logged as params).
_NOT_METRICS = ("config", "pid", "timestamp", "date", "hostname", "node_ip", "trial_id", "experiment_tag")


def finite(value: Any) -> Any:
    """``value`` with every float infinity (at any depth of dicts and lists) replaced by ±INF_SENTINEL."""
    if isinstance(value, float) and math.isinf(value):
        return math.copysign(INF_SENTINEL, value)
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(finite(v) for v in value)
    return value


def schedule_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's schedule as flat tracker params: ordering, pacing, baseline, seed, stages with their
    epochs and lr, and every other sampled key (LoRA rank, per-trial decoding)."""
    variant = config.get("variant", {})
    params: dict[str, Any] = {k: variant[k] for k in ("ordering", "pacing", "is_baseline") if k in variant}
    schedule = trial_schedule(config)
    params["stages"] = ">".join(s["stage"] for s in schedule)
    for i, stage in enumerate(schedule):
        params[f"stage_{i}_epochs"] = stage["epochs"]
        params[f"stage_{i}_lr"] = stage["lr"]
    for key, value in config.items():
        if key != "variant" and not key.startswith("lr_"):
            params[key] = value
    return params


class FiniteTBXLoggerCallback(TBXLoggerCallback):
    """Tune's TensorBoard logger, given ±INF_SENTINEL for infinities (no "NaN or Inf" warning)."""

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, finite(result))


def _mlflow_logger_class() -> type:
    try:
        import mlflow  # here, not in setup mid-sweep as Ray's callback would
        from ray.air.integrations.mlflow import MLflowLoggerCallback
    except ImportError as err:
        raise ConfigError("key 'ray.callbacks': mlflow needs `pip install raydetox[tracking]`") from err

    def _client() -> mlflow.MlflowClient:
        # The store that the callback's setup() made current (as Ray's own logging util builds its client).
        return mlflow.MlflowClient(tracking_uri=mlflow.get_tracking_uri(), registry_uri=mlflow.get_registry_uri())

    class TrialMLflowLoggerCallback(MLflowLoggerCallback):
        """Tune's MLflow logger: one run per trial with its schedule as params (not the raw nested
        config) and the sentinel as a tag; each row's numbers as metrics in one batch, step = the row's
        index in the trial's reports, infinities as the sentinel."""

        def log_trial_start(self, trial: Trial) -> None:
            runs = mlflow_trial_runs(self)
            if trial in runs:
                return
            from mlflow.entities import Param

            tags = {**self.tags, "trial_name": str(trial), "raydetox.inf_sentinel": str(INF_SENTINEL)}
            run_id = self.mlflow_util.start_run(run_name=str(trial), tags=tags).info.run_id
            runs[trial] = run_id
            params = [Param(k, str(v)) for k, v in schedule_params(trial.config).items()]
            _client().log_batch(run_id, params=params)

        def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
            from mlflow.entities import Metric

            step = int(result[TRAINING_ITERATION]) - 1
            stamp = int(float(result.get("timestamp") or 0) * 1000)
            row = flatten_dict(finite({k: v for k, v in result.items() if k not in _NOT_METRICS}))
            metrics = [Metric(key, float(value), stamp, step) for key, value in row.items()
                       if isinstance(value, (int, float)) and not math.isnan(float(value))]
            # One batch per row: a call per metric is one database transaction each.
            _client().log_batch(mlflow_trial_runs(self)[trial], metrics=metrics)

    return TrialMLflowLoggerCallback


def default_mlflow_uri(local_dir: str) -> str:
    """The MLflow store of a sweep when ``ray.mlflow_tracking_uri`` is unset: sqlite beside its results."""
    return f"sqlite:///{local_dir}/mlflow.db"


class TrialManifest(Callback):
    """Appends ``{"trial_id": ...}`` to :data:`raydetox.results.TRIALS_FILE` beside the trial directories
    as each trial starts (again after a restart: the reader keeps the first), so that ``raydetox analyze``
    names a trial whose directory is gone instead of losing its rows without a trace. It writes into
    the driver's copy of the experiment directory, which Tune uploads with its own state when the
    storage is remote."""

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        path = Path(trial.local_path).parent / TRIALS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:  # one short write: a crash leaves at most a cut last line
            f.write(json.dumps({"trial_id": trial.trial_id}) + "\n")


def tune_callbacks(cfg: ExperimentConfig, local_dir: str) -> list[Callback]:
    """Tune's callbacks for a sweep: the trial manifest (:class:`TrialManifest`), CSV and JSON (``raydetox
    analyze`` reads ``result.json``), then the trackers of ``ray.callbacks``. Tune adds its own
    TensorBoard logger unless one is given or ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``:
    :func:`raydetox.sweep.run_sweep` sets it, so only these run."""
    callbacks: list[Callback] = [TrialManifest(), CSVLoggerCallback(), JsonLoggerCallback()]
    for name in cfg.ray.callbacks:
        if name == "tensorboard":
            callbacks.append(FiniteTBXLoggerCallback())
        elif name == "mlflow":
            callbacks.append(_mlflow_logger_class()(
                tracking_uri=cfg.ray.mlflow_tracking_uri or default_mlflow_uri(local_dir),
                experiment_name=cfg.ray.mlflow_experiment or cfg.ray.name or cfg.name,
            ))
    return callbacks
