"""Faults, disk and safety: a Ray Train worker killed mid-stage, a driver killed mid-sweep, checkpoint
retention and disk accounting, safetensors-only checkpoints, safe YAML, loopback listeners, no secrets.

The sweeps are real (Ray on loopback, tiny embedded base, a slice of the real data); faults are real
signals sent to real processes. Ray is shut down after each test.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import yaml

from raydetox.analysis import analyze
from raydetox.cli import main
from raydetox.config import ConfigError, StageConfig, dump_config, load_config
from raydetox.data.prepare import prepare
from raydetox.errors import ModelError
from raydetox.experiment import build_trainer
from raydetox.modeling import TRAINED_META, load_trained
from raydetox.results import load_results
from raydetox.sweep import LOCAL_RAY_ENV, num_to_keep, run_sweep
from raydetox.trainer import STATE_FILE
from tests.test_sweep import SWEEP, _is_loopback, _safe_rows, trial_statuses
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
HF_CANARY = "hf_secretcanary" + uuid.uuid4().hex


@pytest.fixture(autouse=True)
def _ray_stopped():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _cfg(mpd_dir: Path, tmp_path: Path, cache: Path, **extra: Any):
    return tiny_config(mpd_dir, tmp_path / "runs", cache, **{**SWEEP, **extra})


def _raw_rows(exp_dir: Path) -> list[dict[str, Any]]:
    """Every report of the sweep's (single) trial as Tune wrote it, replays included."""
    files = list(exp_dir.glob("trial_*/result.json"))
    if len(files) != 1:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def _registered_stages(exp_dir: Path) -> list[int]:
    """Stage indices of the checkpoints Ray Train has registered for the sweep's trial."""
    snapshots = list(exp_dir.glob("train/*/checkpoint_manager_snapshot.json"))
    if len(snapshots) != 1:
        return []
    try:
        state = json.loads(snapshots[0].read_text())
    except (OSError, ValueError):  # being rewritten
        return []
    return sorted(r["metrics"].get("stage_index") for r in state.get("checkpoint_results", []))


def _kept_stages(checkpoints: list[Path]) -> set[int]:
    """Stage index of each kept checkpoint (the number of finished stages its curriculum state records)."""
    return {len(json.loads((c / STATE_FILE).read_text())["stages"]) for c in checkpoints}


def _assert_best_and_last_kept(kept: set[int], rows) -> None:
    """Retention kept the last stage's checkpoint and one of the best stage's (ties: any of them), only."""
    stages = rows[rows["phase"] == "stage"]
    best = set(stages.loc[stages["objective"] == stages["objective"].max(), "stage_index"].astype(int))
    last = int(stages["stage_index"].max())
    assert last in kept and kept & best and kept <= best | {last} and len(kept) <= 2, (kept, best, last)


def _tree_bytes(root: Path, exclude: Path | None = None) -> int:
    """Bytes of the regular files under ``root`` (independent of ``analysis.disk_usage``)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        if exclude is not None and Path(dirpath).is_relative_to(exclude):
            continue
        total += sum(os.lstat(Path(dirpath, f)).st_size for f in files if not Path(dirpath, f).is_symlink())
    return total


def _train_workers() -> list[psutil.Process]:
    """Ray Train worker actors among this process's descendants (never another user's Ray)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _listeners(procs: list[psutil.Process]) -> list[tuple[int, str, int]]:
    out = []
    for proc in procs:
        try:
            out += [(proc.pid, c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _files_containing(roots: list[Path], secrets: list[str]) -> list[str]:
    needles = [s.encode() for s in secrets]
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in needles):
                    hits.append(str(path))
            except OSError:  # removed while scanning (Ray's own rotating files)
                continue
    return hits


def _ray_auth_token() -> str | None:
    """The token of the running local Ray cluster when token auth is on (never printed)."""
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # older Ray: no token auth
        return None
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        return None
    return loader.get_raw_token(ignore_auth_mode=True) or None


# ------------------------------------------------------------------------------------------ worker kill


def test_worker_killed_mid_stage_resumes_and_sweep_is_contained(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """SIGKILL the Ray Train worker during stage 2 of a 2-stage trial; the same sweep also checks Ray's
    checkpoint retention, analyze's disk figure, safetensors-only checkpoints, loopback-only listeners
    while the sweep runs, and that a secret in the environment reaches no file and no output."""
    monkeypatch.setenv("HF_TOKEN", HF_CANARY)
    cfg = _cfg(
        mpd_dir, tmp_path, embedded_cache,
        **{"sweep.orderings": [["easy", "full"]], "ray.executor": "ray_train",
           "training.max_steps_per_stage": 120, "training.keep_checkpoints": 1},
    )
    exp_dir = tmp_path / "sweeps" / cfg.name
    seen: dict[str, Any] = {}

    def kill_worker_in_stage_2() -> None:
        # Stage 1 counts as reported once Ray Train has registered its checkpoint (the controller's
        # snapshot lists it); the worker is then training stage 2. Tune's result.json lags by seconds.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if _registered_stages(exp_dir) == [1]:
                break
            time.sleep(0.05)
        else:
            seen["error"] = f"stage 1 was never registered alone (saw {_registered_stages(exp_dir)})"
            return
        workers = _train_workers()
        if len(workers) != 1:
            seen["error"] = f"expected one Ray Train worker, found {[w.pid for w in workers]}"
            return
        worker = workers[0]
        seen["worker_env_has_secret"] = worker.environ().get("HF_TOKEN") == HF_CANARY
        seen["listeners"] = _listeners([psutil.Process(), *psutil.Process().children(recursive=True)])
        os.kill(worker.pid, signal.SIGKILL)
        seen["killed"] = worker.pid

    watcher = threading.Thread(target=kill_worker_in_stage_2, daemon=True)
    watcher.start()
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    watcher.join(timeout=10)
    assert "error" not in seen, seen.get("error")
    assert seen.get("killed"), "the worker was not killed"
    assert not psutil.pid_exists(seen["killed"]) or psutil.Process(seen["killed"]).status() == psutil.STATUS_ZOMBIE
    assert not [r for r in results if r.error]

    # Rows: stage 1 reported before the kill and replayed unchanged after the restart (not retrained:
    # same seconds and loss), stage 2 once (the kill came before its report), then every decode row.
    raw = _raw_rows(exp_dir)
    stage1 = [r for r in raw if r.get("phase") == "stage" and r["stage_index"] == 1]
    stage2 = [r for r in raw if r.get("phase") == "stage" and r["stage_index"] == 2]
    assert len(stage1) == 2, "no restart from the stage-1 checkpoint was seen"
    assert (stage1[0]["stage_seconds"], stage1[0]["eval_loss"]) == (stage1[1]["stage_seconds"], stage1[1]["eval_loss"])
    assert len(stage2) == 1, "the worker was killed after stage 2 had been reported, not during it"
    df = load_results(exp_dir)
    assert df.loc[df["phase"] == "stage", "stage_index"].tolist() == [1, 2]
    assert sorted(df.loc[df["phase"] == "decode", "toxic_penalty"]) == [0.0, float("inf")]

    # Loopback: every listener of the driver and its Ray processes, sampled while the trial trained.
    assert seen["listeners"], "found no Ray listeners to check"
    exposed = [lst for lst in seen["listeners"] if not _is_loopback(lst[1])]
    assert not exposed, f"listening beyond loopback during the sweep: {exposed}"

    # Retention: keep_checkpoints=1 leaves the best stage's checkpoint by the objective and the latest
    # (the final weights the decode rows were scored on), in safetensors only.
    train_runs = list((exp_dir / "train").iterdir())
    assert len(train_runs) == 1
    ckpts = sorted(p for p in train_runs[0].glob("checkpoint_*") if p.is_dir())
    _assert_best_and_last_kept(_kept_stages(ckpts), df)
    latest = max(ckpts, key=lambda c: len(json.loads((c / STATE_FILE).read_text())["stages"]))
    assert [p.name for p in (latest / "checkpoints").iterdir()] == ["stage-01-full"]
    ckpt_files = [p for c in ckpts for p in c.rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in ckpt_files)
    assert not [p for p in ckpt_files if p.suffix in PICKLE_SUFFIXES]
    # The killed worker's scratch dir (its copy of stage 1) was cleared by its successor, whose own was
    # removed when the trial ended: nothing is left behind, in the sweep dir or in the temp dir.
    assert not [p for p in (exp_dir / "work").iterdir()]
    assert not list(Path(tempfile.gettempdir()).glob(f"raydetox-{train_runs[0].name.removeprefix('train-')}-*"))

    # Disk: analyze reports the bytes under the experiment dir (its own output excluded).
    report = analyze(exp_dir)
    actual = _tree_bytes(exp_dir, exclude=report.out_dir)
    assert abs(report.disk_bytes - actual) <= max(4096, 0.001 * actual), (report.disk_bytes, actual)
    assert f"({report.disk_bytes} bytes)" in report.report.read_text()

    # Secrets: the token was in the worker's environment, yet is in no file of the sweep or of Ray's
    # session logs, nor in the driver's output; the same holds for Ray's own cluster auth token.
    import ray

    assert seen["worker_env_has_secret"], "the canary never reached the worker, so this checks nothing"
    secrets = [HF_CANARY] + ([tok] if (tok := _ray_auth_token()) else [])
    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    leaks = _files_containing([exp_dir, session_dir / "logs"], secrets)
    assert not leaks, f"a secret was written to {leaks}"
    out, err = capfd.readouterr()
    assert not any(s in out or s in err for s in secrets), "a secret was printed by the sweep"


# ------------------------------------------------------------------------------------------ driver kill


def _session_processes(tag: str) -> list[psutil.Process]:
    """Live processes that inherited ``RAYDETOX_FAULT_SESSION=tag`` (the killed driver and its Ray)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RAYDETOX_FAULT_SESSION") == tag and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


# The killed sweep: run_sweep with a callback that lets the first trial train and holds every later one
# until the test releases it, after its signal. That forces the interleaving the test needs (one trial
# finished, one running) whatever the machine's speed: without it the second trial could finish before
# Tune wrote the first one's state, and the signal would land on a sweep with nothing left to resume.
# The callback is defined in the script's __main__, so Ray pickles it by value into the trial processes.
HELD_SWEEP = """
import os, sys, time
from transformers import TrainerCallback
from raydetox.config import load_config
from raydetox.sweep import run_sweep

config, storage, claim, release = sys.argv[1:5]


class HoldLaterTrials(TrainerCallback):
    def __init__(self):
        self.passed = False

    def on_train_begin(self, args, state, control, **kwargs):
        if self.passed:
            return
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL))  # the first trial to start claims the pass
        except FileExistsError:
            while not os.path.exists(release):
                time.sleep(0.05)
        self.passed = True


run_sweep(load_config(config), storage_path=storage, callbacks=[HoldLaterTrials()])
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_driver_stopped_mid_sweep_resumes_without_rerunning_finished_trials(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path, sig: signal.Signals
) -> None:
    # Default executor (one worker: trials train in their own process and checkpoint through Tune).
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.max_concurrent_trials": 1, "training.keep_checkpoints": 1})
    config_path = tmp_path / "sweep.yaml"
    dump_config(cfg, config_path)
    exp_dir = tmp_path / "sweeps" / cfg.name
    claim, release = tmp_path / "first-trial-claimed", tmp_path / "later-trials-released"
    tag = uuid.uuid4().hex  # marks every process the killed sweep starts (they inherit the environment)
    env = {**os.environ, LOCAL_RAY_ENV: "0", "RAYDETOX_FAULT_SESSION": tag}
    cmd = [sys.executable, "-c", HELD_SWEEP, str(config_path), str(tmp_path / "sweeps"), str(claim), str(release)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Kill once the sweep has recorded its first trial as finished (Tune syncs its state file and
        # the trials' result files from its staging dir together, every >= 10 s); the second trial is
        # held at its first step meanwhile, so it cannot finish before the signal.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (trial_statuses(exp_dir).count("TERMINATED") == 1
                    and (_safe_rows(exp_dir)["phase"] == "decode").sum() == 2):
                break
            assert proc.poll() is None, "sweep ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("first trial did not finish in time")
        os.killpg(proc.pid, sig)  # SIGINT: Ctrl-C in the terminal; SIGKILL: the driver dies outright
        proc.wait(timeout=120)
    finally:
        release.touch()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert claim.is_file(), "no trial went through the holding callback"
    killed_at = time.monotonic()
    try:
        before = _safe_rows(exp_dir)
        finished = sorted(set(before.loc[before["phase"] == "decode", "trial_id"]))
        assert len(finished) == 1
        done_dir = exp_dir / f"trial_{finished[0]}"
        done_result = (done_dir / "result.json").read_bytes()
        results = run_sweep(cfg, resume=True, storage_path=str(tmp_path / "sweeps"))
        assert len(results) == 2 and not [r for r in results if r.error]
        after = load_results(exp_dir)
        assert len(after) == 8 and not after.duplicated(["trial_id", "phase", "stage_index", "toxic_penalty"]).any()
        # The finished trial was not run again: not a single report was added to its results.
        assert (done_dir / "result.json").read_bytes() == done_result
        # Retention through Tune: each trial keeps its best stage checkpoint and its latest, no scratch dir.
        for trial_dir in exp_dir.glob("trial_*"):
            trial_rows = after[after["trial_dir"] == trial_dir.name]
            _assert_best_and_last_kept(_kept_stages([p for p in trial_dir.glob("checkpoint_*") if p.is_dir()]),
                                       trial_rows)
        assert not [p for p in (exp_dir / "work").iterdir()]

        # Nothing of the killed sweep outlives it: its Ray processes die with their driver and raylet
        # (a worker still starting up can take ~30 s to notice); none is left to leak.
        while (leftover := _session_processes(tag)) and time.monotonic() < killed_at + 90:
            time.sleep(1)
        assert not leftover, f"processes of the killed sweep survived: {[_describe(p) for p in leftover]}"
    finally:
        for p in _session_processes(tag):  # never leak them into the rest of the run, even when failing
            p.kill()


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:100]}"
    except psutil.Error:
        return str(proc.pid)


# ----------------------------------------------------------------------------- checkpoints and YAML


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the stand-in for code a crafted pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# What HF's Trainer (and older savers) put in checkpoints with torch.save, i.e. as pickles.
PICKLE_NAMES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin",
                "pytorch_model.bin", "adapter_model.bin")


def test_stage_checkpoints_are_safetensors_bounded_and_never_unpickled(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path
) -> None:
    cfg = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, **{"training.keep_checkpoints": 1})
    prepared = prepare(cfg, tmp_path / "data")
    schedule = [StageConfig(stage=s, epochs=1, lr=1e-3) for s in ("easy", "medium", "hard")]
    out = tmp_path / "run"
    first = build_trainer(cfg, prepared, out).run_schedule(schedule)

    # Retention: three stages trained, the last one's checkpoint alone is on disk.
    ckpts = out / "checkpoints"
    assert [p.name for p in ckpts.iterdir()] == ["stage-02-hard"]
    assert _tree_bytes(ckpts) == _tree_bytes(ckpts / "stage-02-hard") > 0
    # keep_checkpoints <= 0 means "keep all" to the trainer; the sweep gives Ray None (Ray refuses 0).
    assert num_to_keep(0) is None and num_to_keep(-1) is None and num_to_keep(3) == 3
    # Weights are safetensors; nothing in the run dir is a pickle.
    assert (ckpts / "stage-02-hard" / "adapter_model.safetensors").is_file()
    assert not [p for p in out.rglob("*") if p.suffix in PICKLE_SUFFIXES]

    # Crafted pickles named like HF/torch checkpoint files, in the run dir, the stage checkpoint and an
    # HF-style checkpoint dir. The payload is live: an unsafe torch.load runs it.
    marker = tmp_path / "payload-ran"
    control = tmp_path / "control-ran"
    torch.save(_Payload(control), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()
    for d in (out, ckpts / "stage-02-hard", out / "checkpoint-6"):
        d.mkdir(exist_ok=True)
        for name in PICKLE_NAMES:
            torch.save(_Payload(marker), d / name)

    # Resume (restores stage 3's weights, trains a 4th stage) and load the result: no pickle is opened.
    four = [*schedule, StageConfig(stage="full", epochs=1, lr=1e-3)]
    resumed = build_trainer(cfg, prepared, out).run_schedule(four)
    assert [r.stage for r in resumed] == ["easy", "medium", "hard", "full"]
    assert resumed[2].metrics == first[2].metrics
    load_trained(ckpts / "stage-03-full")
    assert not marker.exists()

    # Weights offered only as a pickle are refused (resume and load alike), never unpickled.
    only_pickle = ckpts / "stage-03-full"
    (only_pickle / "adapter_model.safetensors").unlink()
    torch.save(_Payload(marker), only_pickle / "adapter_model.bin")
    with pytest.raises(ModelError, match="adapter_model.safetensors"):
        build_trainer(cfg, prepared, out).run_schedule(four)
    with pytest.raises(ModelError, match="[Ww]eights only") as refused:
        load_trained(only_pickle)
    assert isinstance(refused.value.__cause__, pickle.UnpicklingError)
    full = tmp_path / "full-model"  # a full model dir (the adapter's base) whose weights are a pickle
    shutil.copytree(json.loads((only_pickle / TRAINED_META).read_text())["base"], full)
    for weights in full.glob("*.safetensors"):
        weights.unlink()
    torch.save(_Payload(marker), full / "pytorch_model.bin")
    with pytest.raises(ModelError, match="[Ww]eights only") as refused:
        load_trained(full)
    assert isinstance(refused.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


def test_yaml_tags_never_construct_objects(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    marker = tmp_path / "yaml-ran"
    tag = f"!!python/object/apply:builtins.open ['{marker}', 'w']"
    yaml.unsafe_load(f"x: !!python/object/apply:builtins.open ['{tmp_path / 'control-ran'}', 'w']")
    assert (tmp_path / "control-ran").exists()  # the payload is live under an unsafe loader
    # An experiment config, a sweep's experiment.yaml read by analyze, and CLI --set values.
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"name: {tag}\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(evil)
    results = tmp_path / "results"
    results.mkdir()
    (results / "experiment.yaml").write_text(f"name: {tag}\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        analyze(results)
    good = tmp_path / "good.yaml"
    dump_config(tiny_config(mpd_dir, tmp_path / "runs", embedded_cache), good)
    assert main(["prepare", str(good), "--set", f"name={tag}"]) == 2  # the one-line ConfigError
    assert not marker.exists()
