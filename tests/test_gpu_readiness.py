"""GPU settings on a CPU machine: mixed precision reaches HF's arguments (fp16 on T5 warns), and
ray.gpus_per_worker reaches Ray Train's ScalingConfig and the resources Tune reserves per trial."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raydetox.config import ConfigError, config_from_dict
from raydetox.experiment import mixed_precision_warning, training_arguments
from raydetox.sweep import scaling_config, trial_resources


def test_bf16_and_fp16_reach_the_trainer_arguments(tmp_path: Path) -> None:
    bf16 = training_arguments(config_from_dict({"training": {"bf16": True}}), tmp_path)
    assert bf16.bf16 and not bf16.fp16
    fp16 = training_arguments(config_from_dict({"training": {"fp16": True}}), tmp_path)
    assert fp16.fp16 and not fp16.bf16
    with pytest.raises(ConfigError, match=r"cfg.yaml: key 'training.fp16': fp16 and training.bf16 are both true"):
        config_from_dict({"training": {"fp16": True, "bf16": True}}, origin="cfg.yaml")


def test_fp16_warns_for_t5_family_models_only(tmp_path: Path) -> None:
    fp16 = training_arguments(config_from_dict({"training": {"fp16": True}}), tmp_path)
    bf16 = training_arguments(config_from_dict({"training": {"bf16": True}}), tmp_path)
    for model_type in ("t5", "mt5", "umt5"):
        assert "use training.bf16" in mixed_precision_warning(model_type, fp16)
        assert mixed_precision_warning(model_type, bf16) is None
    assert mixed_precision_warning("bart", fp16) is None


def test_the_embedded_base_is_t5_family_so_fp16_warns_when_the_trainer_is_built(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path
) -> None:
    from raydetox.data.prepare import prepare
    from raydetox.experiment import build_trainer
    from tests.tiny import tiny_config

    cfg = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, **{"training.fp16": True})
    prepared = prepare(cfg, tmp_path / "data")
    with pytest.warns(UserWarning, match="training.fp16 on a t5 model"):
        trainer = build_trainer(cfg, prepared, tmp_path / "run")
    assert trainer.args.fp16


def test_gpus_per_worker_reach_ray_train_and_tune() -> None:
    from ray import tune

    cfg = config_from_dict({"ray": {"gpus_per_worker": 0.5, "cpus_per_worker": 4, "num_workers": 2}})
    scaling = scaling_config(cfg)
    assert scaling.num_workers == 2 and scaling.use_gpu
    assert scaling.resources_per_worker == {"CPU": 4.0, "GPU": 0.5}
    assert trial_resources(cfg) == {"CPU": cfg.ray.trial_cpus}  # the workers hold the GPUs

    # One worker trains inside the trial: Tune reserves the GPU share for the trial itself.
    one = config_from_dict({"ray": {"gpus_per_worker": 0.5, "cpus_per_worker": 2}})
    assert trial_resources(one) == {"CPU": 2.0, "GPU": 0.5}
    bundles = tune.with_resources(lambda config: None, trial_resources(one))._resources.bundles
    assert bundles == [{"CPU": 2.0, "GPU": 0.5}]

    assert config_from_dict({"ray": {"use_gpu": True}}).ray.worker_resources() == {"CPU": 1.0, "GPU": 1.0}
    cpu = config_from_dict({})
    assert cpu.ray.worker_resources() == {"CPU": 1.0} and not scaling_config(cpu).use_gpu
    with pytest.raises(ConfigError, match=r"key 'ray.gpus_per_worker': is 0 but ray.use_gpu is true"):
        config_from_dict({"ray": {"use_gpu": True, "gpus_per_worker": 0}})


def test_gpu_check_refuses_without_a_gpu(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever the machine has
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "out")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "gpu_check: no CUDA GPU visible" in proc.stderr and "nothing was run" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_check_in_process_runs_record_where_they_computed(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path
) -> None:
    """The GPU check's in-process executor, run on CPU without Ray: the sweep's trained variants (not the
    untrained one) each train, and the probe leaves one record per stage with the model's, generation's
    and BERTScore's device."""
    import json

    from benchmarks.gpu_check import run_in_process
    from tests.tiny import tiny_config

    cfg = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache,
                      **{"sweep.orderings": [["easy", "full"]], "sweep.include_baseline": False})
    last, errors = run_in_process(cfg, tmp_path)
    assert errors == [] and [row["ordering"] for row in last] == ["easy>full"]
    assert last[0]["stage"] == "full" and 0.0 <= last[0]["eval_copy_rate"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "devices-easy-full.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["easy", "full"]
    assert all(r["model"] == r["generation"] == r["bertscore"] == "cpu" and r["gpu"] is None for r in records)
