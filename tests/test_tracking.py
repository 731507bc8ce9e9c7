"""Experiment tracking (raydetox.tracking) and console output of a sweep: ray.callbacks validated at load; a
tiny sweep logged to MLflow (read back with MlflowClient) and TensorBoard (event files read back),
infinities as the finite sentinel and no "NaN or Inf" warning; Tune's table shows the schedule's columns;
each per-stage line is printed once."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import pytest

from raydetox.config import ConfigError, config_from_dict
from raydetox.sweep import run_sweep, variants
from tests.tiny import tiny_config


INF_WARNING = "NaN or Inf found in input tensor"


@pytest.fixture
def _ray_stopped():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_callbacks_default_and_validation() -> None:
    assert config_from_dict({}).ray.callbacks == ["tensorboard"]
    assert config_from_dict({"ray": {"callbacks": []}}).ray.callbacks == []
    with pytest.raises(ConfigError, match=r"cfg.yaml: key 'ray.callbacks.0': .*'mlflow' or 'tensorboard'"):
        config_from_dict({"ray": {"callbacks": ["wandb"]}}, origin="cfg.yaml")
    with pytest.raises(ConfigError, match=r"key 'ray.callbacks': a callback is listed twice"):
        config_from_dict({"ray": {"callbacks": ["mlflow", "mlflow"]}})


def test_finite_replaces_every_infinity_and_nothing_else() -> None:
    from raydetox.tracking import INF_SENTINEL, finite

    row = {"toxic_penalty": math.inf, "objective": -math.inf, "n": 3, "x": 0.5, "name": "easy",
           "nested": {"a": [math.inf, 1.0], "b": math.nan}}
    out = finite(row)
    assert out["toxic_penalty"] == INF_SENTINEL and out["objective"] == -INF_SENTINEL
    assert out["nested"]["a"] == [INF_SENTINEL, 1.0] and math.isnan(out["nested"]["b"])
    assert (out["n"], out["x"], out["name"]) == (3, 0.5, "easy")
    assert INF_SENTINEL < 3.4e38  # finite in float32, which TensorBoard stores


def test_tune_callbacks_follow_the_config(tmp_path: Path) -> None:
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from raydetox.tracking import TrialManifest, tune_callbacks

    none = tune_callbacks(config_from_dict({"ray": {"callbacks": []}}), str(tmp_path))
    assert [type(c) for c in none] == [TrialManifest, CSVLoggerCallback, JsonLoggerCallback]
    both = tune_callbacks(config_from_dict({"name": "exp", "ray": {"callbacks": ["tensorboard", "mlflow"]}}),
                          str(tmp_path))
    assert isinstance(both[3], TBXLoggerCallback)
    assert both[4].tracking_uri == f"sqlite:///{tmp_path}/mlflow.db" and both[4].experiment_name == "exp"
    uri = tune_callbacks(config_from_dict({"ray": {"callbacks": ["mlflow"], "mlflow_tracking_uri": "http://h:5000",
                                                   "mlflow_experiment": "mine"}}), str(tmp_path))[3]
    assert (uri.tracking_uri, uri.experiment_name) == ("http://h:5000", "mine")


@pytest.mark.parametrize(("sweep", "expected"), [
    ({}, ["ordering", "pacing", "lr"]),
    ({"seeds": [0, 1], "epochs": [1, 2], "lora_r": [4, 8], "decode_reuse": False,
      "pacing": ["disjoint", "competence"]}, ["ordering", "pacing", "lr", "epochs", "seed", "lora_r", "decode"]),
    ({"lr_search": "loguniform", "lr": [1e-4, 1e-3]}, ["ordering", "pacing", "lr_0", "lr_1", "lr_2"]),
])
def test_progress_columns_name_what_the_sweep_searches(sweep: dict, expected: list[str]) -> None:
    from ray._private.dict import unflattened_lookup

    from raydetox.sweep import progress_columns

    cfg = config_from_dict({"sweep": {"orderings": [["easy", "medium", "full"], ["hard", "full"]], **sweep}})
    params, metrics = progress_columns(cfg)
    assert list(params.values()) == expected and "variant" not in params
    assert list(metrics.values()) == ["stage", "copy", "bertscore", "objective"]
    # Every column resolves in every trial's config (Ray's table would raise otherwise), the one-stage
    # baseline's and the untrained base's (no stage: no lr or epochs) included.
    for variant in variants(cfg):
        config = {"variant": variant, "seed": 0, "lora_r": 4, "decode": [0.0, 0.0],
                  **{f"lr_{i}": 1e-4 for i in range(3)}}
        values = {key: unflattened_lookup(key, config) for key in params}
        empty = {k for k, v in values.items() if v is None}
        assert empty == ({"variant/lr", "variant/epochs"} & set(params) if variant["is_untrained"] else set())


def _tensorboard_scalars(trial_dir: Path) -> dict[str, list[float]]:
    """Every scalar of a trial's event files, by tag (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    values: dict[str, list[float]] = {}
    for path in trial_dir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(value.simple_value)
    return values


@pytest.mark.slow
def test_sweep_logs_to_mlflow_and_tensorboard_and_prints_a_readable_table(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path, capfd: pytest.CaptureFixture[str], _ray_stopped: None
) -> None:
    import mlflow

    from raydetox.results import load_results
    from raydetox.tracking import INF_SENTINEL

    cfg = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, **{
        "sweep.orderings": [["easy", "full"]], "sweep.include_baseline": True, "sweep.untrained": False,
        "sweep.toxic_penalty": [0.0, float("inf")], "sweep.max_degenerate_rate": 1.0,
        "training.max_steps_per_stage": 2, "ray.callbacks": ["mlflow", "tensorboard"],
        # Ray Train workers: their print() is patched by Ray Train V2 (it printed each stage line twice).
        "ray.executor": "ray_train",
    })
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert len(results) == len(variants(cfg)) == 2 and not [r for r in results if r.error]
    captured = capfd.readouterr()
    out = captured.out + captured.err
    assert INF_WARNING not in out

    # Tune's table: the variant's ordering, pacing and lr as columns (not the raw dict), and each
    # trial's last stage, copy rate, BERTScore and objective.
    headers = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
               if line.startswith("| Trial name")]
    assert headers and all("variant" not in h for h in headers)
    assert {"ordering", "pacing", "lr", "stage", "copy", "bertscore", "objective"} <= set(headers[-1])
    # Each trial's line per finished stage is printed once (Ray's log deduplication lets them through).
    lines = re.findall(r"\[(\w+)\] stage (\d+)/(\d+) (\w+): loss", out)

    exp_dir = tmp_path / "sweeps" / cfg.name
    rows = load_results(exp_dir)
    stage_rows = rows[rows["phase"] == "stage"]
    assert sorted(lines) == sorted((r.trial_id, str(r.stage_index), str(r.stage_index if r.is_baseline else 2), r.stage)
                                   for r in stage_rows.itertuples())
    client = mlflow.MlflowClient(f"sqlite:///{exp_dir}/mlflow.db")
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    by_ordering = {r.data.params["ordering"]: r for r in runs}
    assert set(by_ordering) == {"easy>full", "baseline:full"}
    cur = by_ordering["easy>full"]
    assert cur.data.params["stages"] == "easy>full" and cur.data.params["pacing"] == "disjoint"
    assert float(cur.data.params["stage_0_lr"]) == 5e-4 and cur.data.params["is_baseline"] == "False"
    assert cur.data.tags["raydetox.inf_sentinel"] == str(INF_SENTINEL)
    for run in runs:
        trial = rows[rows["trial_id"] == run.data.tags["trial_name"].split()[0]]
        # Every row of the trial is a step of each metric: stage rows, then one per penalty.
        history = client.get_metric_history(run.info.run_id, "toxic_penalty")
        assert sorted(m.step for m in history) == list(range(len(trial)))
        assert sorted(m.value for m in history) == sorted(
            INF_SENTINEL if math.isinf(v) else v for v in trial["toxic_penalty"])
        chrf = client.get_metric_history(run.info.run_id, "eval_chrf")
        assert sorted(m.value for m in chrf) == pytest.approx(sorted(trial["eval_chrf"]))

    for trial_dir in exp_dir.glob("trial_*"):
        scalars = _tensorboard_scalars(trial_dir)
        penalties = scalars["ray/tune/toxic_penalty"]
        assert INF_SENTINEL in [pytest.approx(v, rel=1e-6) for v in penalties]
        assert all(math.isfinite(v) for vs in scalars.values() for v in vs)
