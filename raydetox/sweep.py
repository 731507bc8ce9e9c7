"""Ray Tune sweep over curriculum schedules; decoding penalties are swept inside each trial.

A trial is a function trainable that builds and fits a Ray Train ``TorchTrainer`` (Train V2 refuses
``Tuner(TorchTrainer)``), with ``TuneReportCallback`` forwarding every per-stage and per-penalty report
to Tune, and the inner run named after the trial id so that a restarted trial finds its own checkpoints.
Resources: the trial itself holds ~0 CPU and each Ray Train worker the CPUs it computes with, so nested
trials never deadlock on a small machine; concurrency is capped by the cores.

With one worker per trial (``ray.executor: auto``) the trial runs the same training loop in its own
process instead: starting a controller and a worker group costs tens of seconds per trial on a small
machine and buys nothing without DDP (see ``benchmarks/perf.py``, case 1).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import math
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from raydetox import ablation
from raydetox.config import (
    STAGES,
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    read_yaml,
)
from raydetox.errors import ResultsError
from raydetox.errors import short as _short
from raydetox.preflight import check_job_path
from raydetox.results import (
    CHECKPOINT_SCORE,
    DATA_DIR,
    EXPERIMENT_FILE,
    PREDICTIONS_DIR,
    SKIPPED,
    STAGE_LINE_PATTERN,
    TRAIN_DIR,
    UNTRAINED,
    ablation_column,
    train_run_name,
    trial_dir_name,
    trial_schedule,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

LOCAL_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_S = "0.2"
AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
OUTPUT_ENGINE_ENV = "RAY_AIR_NEW_OUTPUT"
DEDUP_ALLOW_ENV = "RAY_DEDUP_LOGS_ALLOW_REGEX"  # read when Ray is first imported


def ray_environment(address: str | None) -> dict[str, str]:
    """Set the environment Ray reads when first imported (the loopback binding of a local Ray among it)
    for ``address`` (``None``: ``RAY_ADDRESS``, else a local Ray); returns the variables a cluster's
    workers need in their runtime env."""
    address = address or os.environ.get("RAY_ADDRESS")
    # Ray folds lines that differ only in numbers from different processes into one "[repeated Nx]"
    # line: the per-stage lines of trials would be dropped, or reappear later as look-alike duplicates.
    os.environ.setdefault(DEDUP_ALLOW_ENV, STAGE_LINE_PATTERN)
    # Ray Train V2 collects a worker's report only when its controller polls (every 2 s by default),
    # and a worker's next report waits for that: ~2 s lost per stage and per decoding row.
    train_env = {POLL_ENV: os.environ.get(POLL_ENV, POLL_INTERVAL_S)}
    if not address:
        os.environ.update(train_env)
        os.environ.setdefault(LOCAL_RAY_ENV, "0")
        # On a busy small machine a worker process can take over a minute to start; the default
        # 60 s makes Ray Train give up on the worker group and retry, which only adds load.
        os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    return train_env


def ray_address(cfg: ExperimentConfig, address: str | None = None) -> str | None:
    """The Ray a sweep joins: ``address`` (``--address``), else ``RAY_ADDRESS`` (what ``ray job submit``
    sets for its entrypoint), else the config's ``ray.address``; None: a local in-process Ray."""
    return address or os.environ.get("RAY_ADDRESS") or cfg.ray.address


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray. Local by default: in-process, every listener on 127.0.0.1, no dashboard.

    The loopback binding only takes effect when the variable is set before Ray is first imported, so
    callers must not import ``ray`` before this function.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    train_env = ray_environment(address)
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": train_env})
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)


def orderings(cfg: ExperimentConfig) -> list[list[str]]:
    """Stage orderings to search: explicit ones, or every permutation of ``permute_stages`` (+ final full)."""
    sweep = cfg.sweep
    if sweep.orderings:
        return [list(o) for o in sweep.orderings]
    if sweep.permute_stages:
        bad = [s for s in sweep.permute_stages if s not in STAGES]
        if bad:
            raise ConfigError(f"key 'sweep.permute_stages': unknown stage(s) {bad}; expected {list(STAGES)}")
        tail = ["full"] if sweep.final_full and "full" not in sweep.permute_stages else []
        return [list(p) + tail for p in itertools.permutations(sweep.permute_stages)]
    return [[s.stage for s in cfg.schedule]]


def ordering_name(stages: Sequence[str], pacing: str = "disjoint") -> str:
    """``easy>hard>full``; a paced variant other than disjoint is prefixed: ``cumulative:easy>hard>full``."""
    name = ">".join(stages)
    return name if pacing == "disjoint" else f"{pacing}:{name}"


def variants(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Every schedule a grid search visits: pacings × orderings × epochs × (shared) lr, plus the baseline
    and the ``untrained`` variant (no stage: the base model, ``sweep.untrained``).

    Under competence pacing the stage names only label the phases of one run, so orderings of the same
    length would train identically: only the first of them is kept. The baseline is never paced.
    """
    out: list[dict[str, Any]] = []
    lrs: list[float | None] = list(cfg.sweep.lr) if cfg.sweep.lr_search == "grid" else [None]
    pacings = list(cfg.sweep.pacing or [cfg.curriculum.pacing])
    seen: set[tuple[Any, ...]] = set()
    for pacing, order, epochs, lr in itertools.product(pacings, orderings(cfg), cfg.sweep.epochs, lrs):
        schedule = [{"stage": s, "epochs": float(epochs), "lr": float(lr or cfg.sweep.lr[0])} for s in order]
        same_run = (pacing, len(order), epochs, lr) if pacing == "competence" else (pacing, tuple(order), epochs, lr)
        if same_run in seen:
            continue
        seen.add(same_run)
        out.append({"schedule": schedule, "ordering": ordering_name(order, pacing), "is_baseline": False,
                    "is_untrained": False, "pacing": pacing, **_table_keys(schedule, lr)})
    if cfg.sweep.include_baseline:
        n = max(len(o) for o in orderings(cfg))
        baseline_epochs = cfg.sweep.baseline_epochs or [float(e) * n for e in cfg.sweep.epochs]
        for epochs, lr in itertools.product(baseline_epochs, lrs):
            schedule = [{"stage": "full", "epochs": float(epochs), "lr": float(lr or cfg.sweep.lr[0])}]
            out.append({"schedule": schedule, "ordering": "baseline:full", "is_baseline": True, "is_untrained": False,
                        "pacing": "disjoint", **_table_keys(schedule, lr)})
    if cfg.sweep.untrained:
        out.append({"schedule": [], "ordering": UNTRAINED, "is_baseline": False, "is_untrained": True,
                    "pacing": "disjoint", **_table_keys([], None)})
    return out


def _table_keys(schedule: list[dict[str, Any]], lr: float | None) -> dict[str, Any]:
    # What Tune's progress table shows of a variant (progress_columns): Ray's lookup of a nested path
    # fails on an empty schedule (the untrained variant), so the values sit at the variant's top level.
    return {"lr": lr, "epochs": schedule[0]["epochs"] if schedule else None}


def untrained_duplicate(config: dict[str, Any], sweep: dict[str, Any]) -> bool:
    """Whether a trial is the ``untrained`` variant under a seed or LoRA rank other than the sweep's
    first, or in a cleaning ablation's "off" arm (``sweep``: the sweep section as a dict): the base model's
    outputs depend on none of them (LoRA starts as a no-op), so only the first one runs."""
    if not config["variant"].get("is_untrained"):
        return False
    # nor on the training rows: a cleaning ablation's arms share the base and the validation rows
    if config.get(ablation_column("cleaning"), "on") != "on":
        return True
    return any(key in config and config[key] != (sweep.get(listed) or [None])[0]
               for key, listed in (("seed", "seeds"), ("lora_r", "lora_r")))


def decode_grid(cfg: ExperimentConfig) -> list[list[float]]:
    """Every (toxic_penalty, copy_penalty) pair evaluated on each trial's final weights."""
    grid = [[float(t), float(c)] for t, c in itertools.product(cfg.sweep.toxic_penalty, cfg.sweep.copy_penalty)]
    return grid + [arm for arm in ablation.decode_settings(cfg.sweep) if arm not in grid]


def param_space(cfg: ExperimentConfig) -> dict[str, Any]:
    """Tune search space: the schedule variant (+ per-stage lr when searched, + LoRA rank)."""
    from ray import tune

    space: dict[str, Any] = {}
    all_variants = variants(cfg)
    if cfg.sweep.search_alg == "grid":
        space["variant"] = tune.grid_search(all_variants)
    else:
        space["variant"] = tune.choice(all_variants)
    if cfg.sweep.lr_search != "grid":
        n = max(len(v["schedule"]) for v in all_variants)
        lo, hi = min(cfg.sweep.lr), max(cfg.sweep.lr)
        sampler = (lambda: tune.loguniform(lo, hi)) if cfg.sweep.lr_search == "loguniform" else (
            lambda: tune.choice(list(cfg.sweep.lr))
        )
        for i in range(n):
            space[f"lr_{i}"] = sampler()
    if not cfg.sweep.decode_reuse:
        grid = decode_grid(cfg)
        space["decode"] = tune.grid_search(grid) if cfg.sweep.search_alg == "grid" else tune.choice(grid)
    if cfg.sweep.lora_r and cfg.lora is not None:
        space["lora_r"] = tune.grid_search(list(cfg.sweep.lora_r)) if cfg.sweep.search_alg == "grid" else tune.choice(
            list(cfg.sweep.lora_r)
        )
    for key, arms in ablation.search_space(cfg.sweep).items():
        space[key] = tune.grid_search(arms) if cfg.sweep.search_alg == "grid" else tune.choice(arms)
    if cfg.sweep.seeds:
        seeds = [int(x) for x in cfg.sweep.seeds]
        space["seed"] = tune.grid_search(seeds) if cfg.sweep.search_alg == "grid" else tune.choice(seeds)
    return space


def _trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """Function trainable: one schedule = one Ray Train run named by the trial id.

    ``setup`` (bound with ``tune.with_parameters``) holds what every trial shares: the experiment,
    the prepared data dir, the decoding grid and the storage layout.
    """
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    if untrained_duplicate(config, setup["experiment"]["sweep"]):
        # The first seed's and rank's untrained trial reports these rows. Tune requires every trial to
        # report its metric: one report without a phase, which is no result row (load_results skips it).
        tune.report({"objective": -math.inf, SKIPPED: "duplicate of the untrained trial of the first seed and rank"})
        return
    experiment = dict(setup["experiment"])
    if "lora_r" in config and experiment.get("lora"):
        experiment["lora"] = {**experiment["lora"], "r": int(config["lora_r"])}
    if "seed" in config:  # the seed drives the LoRA init and the data order (training.seed)
        experiment["training"] = {**experiment["training"], "seed": int(config["seed"])}
    pacing = config["variant"].get("pacing", experiment["curriculum"]["pacing"])
    experiment["curriculum"] = {**experiment["curriculum"], "pacing": pacing}
    arms = ablation.trial_arms(config, setup.get("ablation_factors", ()))
    loop_config = {
        "experiment": experiment,
        # the trial's cleaning arm picks its prepared data (one dir without a cleaning ablation)
        "prepared_dir": setup.get("prepared_dirs", {}).get(arms.get("ablation_cleaning", "on"), setup["prepared_dir"]),
        "schedule": trial_schedule(config),
        # decode_reuse off: the trial scores only its own penalty combination.
        "decode_grid": [list(config["decode"])] if "decode" in config else setup["decode_grid"],
        "work_dir": str(Path(setup["prepared_dir"]).parent / "work"),
        "driver_base": setup.get("driver_base"),
        "predictions_dir": str(Path(setup["prepared_dir"]).parent / PREDICTIONS_DIR),
        "callbacks": list(setup.get("callbacks") or []),
        "meta": {
            "trial": trial_id,
            "ordering": config["variant"]["ordering"],
            "is_baseline": config["variant"]["is_baseline"],
            "is_untrained": bool(config["variant"].get("is_untrained", False)),
            "pacing": pacing,
            "seed": int(experiment["training"]["seed"]),
            **arms,
        },
    }
    if setup.get("fail_once_at_stage") is not None:
        loop_config["fail_once_at_stage"] = setup["fail_once_at_stage"]
        loop_config["fail_marker"] = str(Path(setup["fail_marker_dir"]) / f"{trial_id}.failed")
    if setup["in_trial"]:
        # One worker: the trial process trains itself; no controller or worker group to start.
        from raydetox import gc_policy

        with gc_policy.importing_training_stack():  # frozen once per process: a reused one keeps the first
            from raydetox.train_ray import Session, train_loop_per_worker
        train_loop_per_worker(loop_config, Session(in_trial=True))
        return
    from ray import train
    from ray.train.torch import TorchTrainer

    from raydetox.compat import without_placement_group_cleaner
    from raydetox.ray_backend import LoopbackTorchConfig, train_loop_entry
    from ray.tune.integration.ray_train import TuneReportCallback

    # A Ray this sweep started has no dashboard, so no State API for the cleaner to watch with.
    trainer_cls = TorchTrainer if setup["placement_group_cleaner"] else without_placement_group_cleaner(TorchTrainer)
    trainer = trainer_cls(
        train_loop_entry,
        train_loop_config=loop_config,
        torch_config=LoopbackTorchConfig(),
        scaling_config=setup["scaling_config"],
        run_config=train.RunConfig(
            name=train_run_name(trial_id),
            storage_path=setup["train_storage"],
            failure_config=train.FailureConfig(max_failures=int(setup["max_failures"])),
            checkpoint_config=retention(int(setup["keep_checkpoints"]), train.CheckpointConfig),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def num_to_keep(keep_checkpoints: int) -> int | None:
    """Ray's ``num_to_keep`` for ``training.keep_checkpoints``: the last N, all when N <= 0 (Ray refuses 0)."""
    return keep_checkpoints if keep_checkpoints > 0 else None


def retention(keep_checkpoints: int, checkpoint_config: type):
    """Ray's checkpoint retention for a trial: the ``keep_checkpoints`` best stage checkpoints by
    :func:`raydetox.results.checkpoint_score` (analysis' order, also when every row is refused), plus the
    latest (Ray never deletes the latest; decode rows are scored on it), so the checkpoint of a trial's
    best row is never deleted."""
    return checkpoint_config(num_to_keep=num_to_keep(keep_checkpoints),
                             checkpoint_score_attribute=CHECKPOINT_SCORE, checkpoint_score_order="max")


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What Tune reserves for a trial: the worker's share (CPUs and ``ray.gpus_per_worker``) when it
    trains in-process, else ~nothing (its Ray Train workers hold them, so nested trials never wait on
    each other)."""
    if not cfg.ray.in_trial():
        return {"CPU": cfg.ray.trial_cpus}
    return cfg.ray.worker_resources()


def scaling_config(cfg: ExperimentConfig):
    """Ray Train's ``ScalingConfig`` of a trial's worker group: ``ray.num_workers`` workers, each holding
    ``ray.cpus_per_worker`` CPUs and ``ray.gpus_per_worker`` GPUs (``use_gpu`` when that is > 0)."""
    from ray import train

    resources = cfg.ray.worker_resources()
    return train.ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu="GPU" in resources,
                               resources_per_worker=resources)


def trial_name(trial: Any) -> str:
    """Short, readable trial names in Tune's progress table: id and ordering."""
    variant = trial.config.get("variant", {})
    seed = f" seed={trial.config['seed']}" if "seed" in trial.config else ""
    return f"{trial.trial_id} {variant.get('ordering', '')}{seed}".strip()


def progress_columns(cfg: ExperimentConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(parameter, metric) columns of Tune's progress table, each a trial-config or result key (``/``
    into nested values) → its header: the variant's ordering, pacing and lr (plus seed, epochs, LoRA rank
    and per-trial decoding when they are searched) instead of the raw ``variant`` dict, and the stage,
    copy rate, BERTScore and objective of each trial's last row."""
    params = {"variant/ordering": "ordering", "variant/pacing": "pacing"}
    if cfg.sweep.lr_search == "grid":
        params["variant/lr"] = "lr"  # a grid lr is shared by every stage of a variant
    else:
        params.update({f"lr_{i}": f"lr_{i}" for i in range(max(len(v["schedule"]) for v in variants(cfg)))})
    if len(cfg.sweep.epochs) > 1:
        params["variant/epochs"] = "epochs"
    if cfg.sweep.seeds:
        params["seed"] = "seed"
    if cfg.sweep.lora_r and cfg.lora is not None:
        params["lora_r"] = "lora_r"
    if not cfg.sweep.decode_reuse:
        params["decode"] = "decode"
    metrics = {"stage_index": "stage", "eval_copy_rate": "copy", "eval_bertscore_f1": "bertscore",
               "objective": "objective"}
    return params, metrics


def progress_reporter(cfg: ExperimentConfig):
    """Tune's ``CLIReporter`` with :func:`progress_columns`, every 30 s and at the end."""
    from ray.tune import CLIReporter

    params, metrics = progress_columns(cfg)
    # The table every 30 s and at the end, and no line per result: at Tune's verbosity 2 each result
    # prints "reported … with parameters=<the raw config>".
    return CLIReporter(parameter_columns=params, metric_columns=metrics, max_report_frequency=30,
                       max_column_length=40, print_intermediate_tables=True)


def trial_dirname(trial: Any) -> str:
    return trial_dir_name(trial.trial_id)


def _scheduler(cfg: ExperimentConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.sweep.scheduler == "asha":
        max_stages = max(len(v["schedule"]) for v in variants(cfg))
        # max_t one past the last stage: ASHA stops a trial whose time reaches max_t, and the
        # decoding-sweep rows are reported at the last stage's index after training ends.
        return ASHAScheduler(time_attr="stage_index", max_t=max_stages + 1, grace_period=1, reduction_factor=2)
    return FIFOScheduler()


def _search_alg(cfg: ExperimentConfig):
    if cfg.sweep.search_alg == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:  # pragma: no cover - depends on the optional extra
            raise ConfigError("key 'sweep.search_alg': optuna needs `pip install raydetox[tune]`") from err
        return OptunaSearch()
    return None


def _is_uri(path: str) -> bool:
    return "://" in path


def sweep_paths(
    cfg: ExperimentConfig, storage_path: str | None = None, origin: str = "<config>"
) -> tuple[str, str, Path]:
    """(storage root, experiment name, local working dir) of a sweep; Tune results land in storage/name.

    The storage root is ``storage_path`` (``--storage``), else ``ray.storage_path``, else
    ``output_dir/sweeps``; inside a Ray job a relative one is refused, naming its key (it would resolve in
    the job's temporary copy of the working dir). It may be a URI (``s3://...``, needed for multi-node
    clusters); the prepared data then lives in the local working dir ``output_dir/name`` (every node
    re-creates it deterministically, so a relative ``output_dir`` is fine there).
    """
    given = (("--storage", storage_path), ("ray.storage_path", cfg.ray.storage_path))
    key, storage = next(((k, v) for k, v in given if v), ("output_dir", cfg.output_dir))
    check_job_path(storage, key, origin, output=True)
    if key == "output_dir":
        storage = str(Path(storage).resolve() / "sweeps")
    name = cfg.ray.name or cfg.name
    if _is_uri(storage):
        return storage.rstrip("/"), name, Path(cfg.output_dir).resolve() / name
    root = Path(storage).resolve()
    return str(root), name, root / name


def _write_experiment_yaml(cfg: ExperimentConfig, storage: str, name: str, local_dir: Path) -> None:
    dump_config(cfg, local_dir / "experiment.yaml")
    if _is_uri(storage):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(f"{storage}/{name}")
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/experiment.yaml") as f:
            f.write((local_dir / "experiment.yaml").read_bytes())


TUNER_STATE = "tuner.pkl"  # what Tuner.can_restore looks for (ray.tune.impl.tuner_internal._TUNER_PKL)


def _check_resumable(storage: str, name: str) -> None:
    """Raise a :class:`ResultsError` unless ``storage/name`` holds a sweep Tune can restore. Reads one
    file's metadata (through pyarrow for a URI), without importing Ray: run it before any work."""
    exp = f"{storage}/{name}"
    if _is_uri(storage):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(exp)
        found = fs.get_file_info(f"{root}/{TUNER_STATE}").type == pyarrow.fs.FileType.File
    else:
        found = (Path(storage) / name / TUNER_STATE).is_file()
    if not found:
        raise ResultsError(f"{exp}: no sweep to resume (no {TUNER_STATE}); run without --resume first")


# Keys a resumed sweep may change: where and how its trials run, not what they compute.
RESUME_MAY_CHANGE: tuple[str, ...] = ("ray.", "output_dir", "sweep.max_concurrent_trials", "sweep.max_failures",
                                      "sweep.reuse_actors")


def _check_same_config(cfg: ExperimentConfig, storage: str, name: str) -> None:
    """Raise a :class:`ResultsError` when ``cfg`` differs from the config the sweep at ``storage/name``
    ran with (its ``experiment.yaml``) in a key that changes what trials compute: the trials still to
    run would use the new values, the finished ones used the old, and the analysis would mix them."""
    exp = f"{storage}/{name}"
    if _is_uri(storage):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(exp)
        path = f"{root}/{EXPERIMENT_FILE}"
        if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
            return  # nothing recorded to compare with (a sweep that stopped before writing it)
        with fs.open_input_stream(path) as f:
            text = f.read().decode("utf-8")
    else:
        path = Path(storage) / name / EXPERIMENT_FILE
        if not path.is_file():
            return
        text = path.read_text(encoding="utf-8")
    origin = f"{exp}/{EXPERIMENT_FILE}"
    try:
        stored = config_from_dict(read_yaml(text) or {}, origin=origin)
    except (ConfigError, yaml.YAMLError) as err:
        raise ResultsError(f"{origin}: the config this sweep ran with cannot be read ({err}); resume refused") from None
    old, new = _flat(config_to_dict(stored)), _flat(config_to_dict(cfg))
    changed = [key for key in sorted(old.keys() | new.keys())
               if old.get(key) != new.get(key) and not key.startswith(RESUME_MAY_CHANGE)]
    if changed:
        shown = ", ".join(f"{key} ({_short(old.get(key))} -> {_short(new.get(key))})" for key in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise ResultsError(f"{exp}: this sweep ran with another config: {shown}{more}. Finished and resumed trials "
                           f"would mix the two; resume with the config it ran with ({origin}), or start over "
                           "with --overwrite")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for a nested dict (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def _is_raydetox_sweep(exp_dir: Path) -> bool:
    """Whether the Tune experiment in ``exp_dir`` is a raydetox sweep: raydetox writes its config beside
    Tune's state as ``experiment.yaml`` (a valid raydetox config)."""
    if not (exp_dir / "experiment.yaml").is_file():
        return False
    try:
        load_config(exp_dir / "experiment.yaml")
    except ConfigError:
        return False
    return True


def _claim_experiment_dir(storage: str, name: str, overwrite: bool) -> None:
    """Make ``storage/name`` ready for a new sweep: refuse one that holds a sweep unless ``overwrite``,
    and delete only a raydetox sweep folder that lies inside ``storage`` (symbolic links resolved)."""
    if _is_uri(storage):
        return  # remote storage: Tune itself refuses nothing here; names should be unique per sweep
    root = Path(storage).resolve()
    exp_dir = Path(storage) / name
    # A link (or a name with '..') would send the sweep's writes, and --overwrite's delete, elsewhere.
    if exp_dir.resolve().parent != root:
        raise ResultsError(f"{exp_dir}: resolves to {exp_dir.resolve()}, outside the storage folder {root}; "
                           "refused (the sweep folder must be a plain folder inside --storage)")
    if exp_dir.is_symlink():
        raise ResultsError(f"{exp_dir}: a symbolic link (to {exp_dir.resolve()}); refused (the sweep folder "
                           "must be a plain folder inside --storage)")
    if not exp_dir.is_dir() or not any(exp_dir.glob("experiment_state-*.json")):
        return
    if not overwrite:
        raise ResultsError(
            f"{exp_dir}: a sweep already ran here; continue it with --resume, or start over with --overwrite"
        )
    if not _is_raydetox_sweep(exp_dir):
        raise ResultsError(f"{exp_dir}: not a raydetox sweep (Tune state without a valid experiment.yaml "
                           "beside it); --overwrite deletes only raydetox sweeps: remove it yourself")
    shutil.rmtree(exp_dir)


def _prepare_inputs(
    cfg: ExperimentConfig, resume: bool, storage: str, name: str, local_dir: Path
) -> tuple[Path, dict[str, str]]:
    """What every trial reads, made once before any starts: the prepared data (each cleaning arm's), the
    embedded base and the judge, and the sweep's experiment.yaml. Returns (prepared dir, arms' dirs)."""
    # Imported here, not at the top: Tune's trial processes import this module to run _trial. With the
    # base and judge cached, nothing here imports transformers or sklearn (seconds while Ray starts).
    from raydetox.data.prepare import prepare
    from raydetox.judge import ensure_judge
    from raydetox.pretraining_corpus import base_texts, cached_base, record_base

    prepared_dir = local_dir / DATA_DIR
    # A resumed sweep must see the data its finished trials saw; a new one prepares afresh.
    prepared = None if resume and (prepared_dir / "manifest.json").is_file() else prepare(cfg, prepared_dir)
    if prepared is not None:
        prepared.require_training_splits()  # here, not in every trial after Ray has started
    if prepared is not None and (texts := base_texts(cfg, prepared)) is not None:
        base = cached_base(texts, cfg.model.embedded, cfg.model.cache_dir)
        if base is None:  # only a base still to build needs the model stack here
            from raydetox.modeling import resolve_base

            base = resolve_base(cfg.model, texts=texts)
        # Built once, before trials race for it; the confirmation's untrained row reads the pointer.
        record_base(prepared_dir, base)
    if prepared is not None:
        ensure_judge(cfg, prepared)  # likewise the toxicity judge (trials load it from the pointer it leaves)
    prepared_dirs = ablation.prepare_arms(cfg, local_dir, prepared)  # each cleaning arm's data, prepared once
    _write_experiment_yaml(cfg, storage, name, local_dir)
    return prepared_dir, prepared_dirs


def run_sweep(
    cfg: ExperimentConfig,
    resume: bool = False,
    storage_path: str | None = None,
    address: str | None = None,
    fail_once_at_stage: int | None = None,
    overwrite: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
):
    """Prepare data once, build the embedded base once, then run (or resume) the Tune sweep.

    Returns Ray's ``ResultGrid``. A new sweep refuses a results dir that already holds one (its rows
    would mix with the new ones) unless ``overwrite``. ``callbacks`` are HF ``TrainerCallback``s added to
    every trial's trainer (pickled to the trials, so they must not hold locks or open files; a resumed
    sweep gets the ones passed to the resuming call). ``fail_once_at_stage`` injects one failure per
    trial (fault tests).
    """
    address = ray_address(cfg, address)
    storage, name, local_dir = sweep_paths(cfg, storage_path)
    exp_uri = f"{storage}/{name}"
    # The cheap checks first: nothing is prepared, built, started or deleted for a sweep that cannot run.
    if resume:
        _check_resumable(storage, name)
        _check_same_config(cfg, storage, name)
    else:
        _claim_experiment_dir(storage, name, overwrite)
    local_dir.mkdir(parents=True, exist_ok=True)
    n_cpus = os.cpu_count() or 1
    ray_was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    started_local_ray = not ray_was_up and not address
    ray_environment(address)  # before anything in the thread imports ray
    # Ray's start (seconds, mostly spent waiting on its processes) overlaps the data, base and judge.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raydetox-prepare") as pool:
        pending = pool.submit(_prepare_inputs, cfg, resume, storage, name, local_dir)
        init_ray(address, num_cpus=None if address else n_cpus)
        try:
            prepared_dir, prepared_dirs = pending.result()
        except BaseException:
            if not ray_was_up:  # nothing left running for a sweep whose inputs failed
                import ray

                ray.shutdown()
            raise
    from ray import tune

    from raydetox.pretraining_corpus import recorded_base_info
    from raydetox.tracking import tune_callbacks

    # Only for this sweep: a later Tune run in the same process (a notebook, a test) keeps Tune's defaults.
    saved = {key: os.environ.get(key) for key in (AUTO_LOGGERS_ENV, OUTPUT_ENGINE_ENV)}
    # The loggers are ours to choose (raydetox.tracking): Tune would add its own TensorBoard logger.
    os.environ[AUTO_LOGGERS_ENV] = "1"
    # Tune's newer output engine takes its table columns from the search space (the raw `variant`
    # dict) and ignores a reporter; the CLIReporter engine shows the columns progress_reporter picks.
    os.environ[OUTPUT_ENGINE_ENV] = "0"
    try:
        setup = {
            "experiment": dataclasses.asdict(cfg),
            "prepared_dir": str(prepared_dir.resolve()),
            "prepared_dirs": prepared_dirs,
            # a node other than the driver's builds its own embedded base: checked against this one
            "driver_base": recorded_base_info(prepared_dir),
            "ablation_factors": ablation.factors(cfg.sweep),
            "decode_grid": decode_grid(cfg),
            "train_storage": f"{exp_uri}/{TRAIN_DIR}",
            "max_failures": cfg.sweep.max_failures,
            "keep_checkpoints": cfg.training.keep_checkpoints,
            "fail_once_at_stage": fail_once_at_stage,
            "fail_marker_dir": str(local_dir),
            "in_trial": cfg.ray.in_trial(),
            "scaling_config": None if cfg.ray.in_trial() else scaling_config(cfg),
            "placement_group_cleaner": not started_local_ray,
            "callbacks": list(callbacks),
        }
        trainable = tune.with_parameters(tune.with_resources(_trial, trial_resources(cfg)), setup=setup)
        # Local: each worker takes cpus_per_worker; cap concurrency so workers never wait on each other.
        concurrency = cfg.sweep.max_concurrent_trials or max(
            1, int(n_cpus // (cfg.ray.cpus_per_worker * cfg.ray.num_workers))
        )
        if resume:
            tuner = tune.Tuner.restore(exp_uri, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(cfg),
                tune_config=tune.TuneConfig(
                    metric="objective",
                    mode="max",
                    scheduler=_scheduler(cfg),
                    search_alg=_search_alg(cfg),
                    num_samples=cfg.sweep.num_samples,
                    max_concurrent_trials=concurrency,
                    reuse_actors=cfg.sweep.reuse_actors,
                    trial_name_creator=trial_name,
                    trial_dirname_creator=trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=storage,
                    failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
                    # Trials that train in-process checkpoint through Tune: the same retention applies.
                    checkpoint_config=retention(cfg.training.keep_checkpoints, tune.CheckpointConfig),
                    callbacks=tune_callbacks(cfg, str(local_dir)),
                    progress_reporter=progress_reporter(cfg),
                    verbose=1,  # the table (progress_reporter), not every reported row
                ),
            )
        return tuner.fit()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
