"""cluster.yaml passes Ray's own cluster-launcher validation (offline), and the real-cluster sweep config
asks for what the cluster provides.

Ray's path for `ray up` is prepare_config (merge with the provider's defaults.yaml) → AWS resource
auto-fill (an AWS call, skipped here: the config states its resources) → validate_config (JSON schema +
cross-field checks). Nothing here contacts AWS or the network.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raydetox.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
GPU_TYPE = "ray.worker.gpu"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """cluster.yaml as written (before Ray fills in defaults)."""
    return yaml.safe_load(CLUSTER.read_text(encoding="utf-8"))


@pytest.fixture()
def prepared(raw: dict[str, Any]) -> dict[str, Any]:
    """cluster.yaml as `ray up` sees it after merging Ray's AWS defaults."""
    return prepare_config(copy.deepcopy(raw))


def test_cluster_yaml_passes_rays_validator(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    validate_config(prepared)
    validate_config(copy.deepcopy(raw))  # the file alone is complete, without Ray's defaults
    assert raw["provider"]["type"] == "aws" and raw["provider"]["region"] == "us-west-2"
    assert "docker" not in raw
    # Our head_setup_commands replace Ray's default list, which is what installs boto3 for the autoscaler.
    assert any("boto3" in c for c in prepared["head_setup_commands"])


def _validation_message(config: dict[str, Any]) -> str:
    with pytest.raises((jsonschema.ValidationError, ValueError)) as info:
        validate_config(config)
    return str(info.value)


@pytest.mark.parametrize("missing", ["resources", "node_config"])
def test_node_type_missing_required_key_is_rejected(prepared: dict[str, Any], missing: str) -> None:
    del prepared["available_node_types"][GPU_TYPE][missing]
    assert f"'{missing}' is a required property" in _validation_message(prepared)


def test_unknown_keys_are_rejected(prepared: dict[str, Any]) -> None:
    top = copy.deepcopy(prepared)
    top["max_worker"] = 3  # typo of max_workers
    assert "'max_worker' was unexpected" in _validation_message(top)
    node = copy.deepcopy(prepared)
    node["available_node_types"][GPU_TYPE]["gpus"] = 1
    assert "'gpus' was unexpected" in _validation_message(node)


def test_cross_field_checks_are_enforced(prepared: dict[str, Any]) -> None:
    bad_head = copy.deepcopy(prepared)
    bad_head["head_node_type"] = "ray.head.missing"
    assert "head_node_type" in _validation_message(bad_head)
    too_many = copy.deepcopy(prepared)
    too_many["available_node_types"][GPU_TYPE]["min_workers"] = too_many["max_workers"] + 1
    assert "min_workers" in _validation_message(too_many)


def test_gpu_worker_type(raw: dict[str, Any]) -> None:
    types = raw["available_node_types"]
    gpu = types[GPU_TYPE]
    assert gpu["resources"]["GPU"] >= 1 and gpu["resources"]["CPU"] >= 1
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= raw["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith("g")
    head = types[raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head must not attract GPU training workers"


def test_setup_installs_this_package(raw: dict[str, Any]) -> None:
    mounts = raw["file_mounts"]
    remote = next(r for r, local in mounts.items() if (REPO / local).resolve() == REPO)
    assert (REPO / mounts[remote] / "pyproject.toml").is_file()
    commands = raw["setup_commands"]
    # with the tracking extra: the MLflow logger runs on the driver, i.e. the head
    install = next(i for i, c in enumerate(commands) if c == f'pip install -e {remote}"[tracking]"')
    torch = next(i for i, c in enumerate(commands) if c.startswith("pip install torch"))
    assert torch < install, "CUDA torch must be installed before the package pulls a torch"
    # The cluster's Ray must be the version that submits to it.
    assert any(f"=={ray.__version__}\"" in c and c.startswith('pip install "ray[') for c in commands), (
        f"cluster.yaml setup_commands must pin ray=={ray.__version__} (the local version)"
    )
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "ray start --head --port=6379" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in raw["worker_start_ray_commands"])


def test_sweep_mt5_targets_the_cluster(raw: dict[str, Any]) -> None:
    cfg = load_config(REPO / "experiments" / "sweep_mt5.yaml")
    assert cfg.data.format == "hub" and cfg.data.source == "textdetox/multilingual_paradetox"
    assert cfg.model.name_or_path == "google/mt5-base"
    assert cfg.lora is not None and (cfg.lora.r, cfg.lora.alpha) == (16, 32)
    assert cfg.sweep.scheduler == "asha" and cfg.sweep.search_alg == "random"
    assert math.inf in cfg.sweep.toxic_penalty
    assert cfg.ray.use_gpu and cfg.ray.storage_path and "://" in cfg.ray.storage_path
    # Each trial's worker must fit one GPU node, and the node pool must hold the concurrent trials.
    gpu = raw["available_node_types"][GPU_TYPE]
    assert cfg.ray.cpus_per_worker <= gpu["resources"]["CPU"]
    assert cfg.ray.num_workers * (cfg.sweep.max_concurrent_trials or 1) <= gpu["max_workers"]
