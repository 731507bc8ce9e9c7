"""The cluster path as a user runs it: `ray start --head` on loopback, `ray job submit --working-dir .` of a
sweep, `raydetox analyze` on its results; and how paths resolve inside a job.

The cluster is real (token auth on, as Ray 2.60 has by default) and private to the test: its own temp dir
and free ports, stopped by the pids it started (never `ray stop`, which would end every Ray process of the
user). The job's rows are compared with those of an in-process `run_sweep` of the same config and seed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import pytest

from raydetox.cli import main
from raydetox.config import dump_config, load_config
from raydetox.preflight import JOB_ENV
from raydetox.results import load_results
from raydetox.sweep import run_sweep
from tests.test_sweep import _is_loopback
from tests.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's `ray` and `raydetox`
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300
# gcs_server and the autoscaler's monitor outlast SIGTERM by 20 s and more (seen with Ray 2.60): SIGKILL
# after this grace (the whole cluster goes, so nothing is left to shut down cleanly for).
STOP_GRACE_S = 5
KILL_TIMEOUT_S = 20

# One trial (two stages, two penalty settings): the machine this runs on has two cores, and the job and
# the local run are each a whole sweep; more trials would test Tune, not the job path.
SWEEP = {
    "sweep.orderings": [["easy", "full"]],
    "sweep.include_baseline": False,
    "sweep.untrained": False,
    "sweep.toxic_penalty": [0.0, float("inf")],
    "sweep.copy_penalty": [0.0],
    "ray.cpus_per_worker": 1.0,
}
# Row identity across two runs (trial ids are random), and columns that differ by nature between runs:
# wall-clock times, Tune's bookkeeping (ids, dates, hosts, pids, paths) and the trial dir.
ROW_KEY = ["ordering", "phase", "stage_index", "toxic_penalty", "copy_penalty"]
VOLATILE = re.compile(
    # predictions: a path named by the trial id (the files' contents are the rows' metrics, compared)
    r"^trial$|seconds|per_second|time|date|hostname|node_ip|pid|trial_id|trial_dir|^predictions$"
)


# ----------------------------------------------------------------------------------------- the cluster


def _free_port() -> int:
    """A port free on loopback now (the OS picks it); Ray binds it moments later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(proc: psutil.Process) -> bool:
    """Running (a zombie holds no socket, memory or lock: it only waits for its parent to reap it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class LocalCluster:
    """A one-node cluster started with `ray start --head` in a session of its own (so its processes are
    found by session id, and their children by parent chain, even after `ray start` itself exits)."""

    temp_dir: Path
    dashboard_port: int = field(default_factory=_free_port)
    env: dict[str, str] = field(default_factory=dict)
    session: int = 0

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # Loopback only (see raydetox.sweep.init_ray); the venv's bin first so a job finds `raydetox`.
        env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
        # The CLI sends the token (~/.ray/auth_token, which `ray start` creates) only in token mode.
        env["RAY_AUTH_MODE"] = "token"
        self.env = env
        cmd = [
            str(BIN / "ray"), "start", "--head", "--num-cpus", str(os.cpu_count() or 1), "--disable-usage-stats",
            "--temp-dir", str(self.temp_dir), "--port", str(_free_port()),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
            # 0: the OS picks each port (the defaults are fixed ports other clusters on this host may hold).
            "--min-worker-port", "0", "--max-worker-port", "0",
        ]
        log = self.temp_dir / "ray-start.log"
        # A file, not a pipe: the daemons it leaves running would hold a pipe open after it exits.
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=self.temp_dir, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.session = proc.pid  # the session id of every process it starts (unless they leave it)
        try:
            code = proc.wait(timeout=START_TIMEOUT_S)  # `ray start` returns once the node is up
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            self.stop()
            raise RuntimeError(f"ray start failed ({code}):\n{log.read_text()}")

    def processes(self) -> list[psutil.Process]:
        """Every live process of the cluster: its session, and their descendants (job drivers start a
        session of their own under the raylet's job supervisor)."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == self.session:
                    found[proc.pid] = proc
            except (ProcessLookupError, PermissionError):
                continue
        for proc in list(found.values()):
            try:
                found.update({c.pid: c for c in proc.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return [p for p in found.values() if _alive(p)]

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """A `ray` CLI command against this cluster, from the repository root (as a user runs it)."""
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def stop(self) -> None:
        """SIGTERM every process of the cluster, SIGKILL what is left after a deadline; then none may run."""
        procs = self.processes()
        sessions = {self.session} | {s for s in map(_session, (p.pid for p in procs)) if s is not None}
        for sig, timeout in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, KILL_TIMEOUT_S)):
            for proc in procs:
                try:
                    proc.send_signal(sig)
                except psutil.NoSuchProcess:
                    continue
            deadline = time.monotonic() + timeout
            while any(map(_alive, procs)) and time.monotonic() < deadline:
                psutil.wait_procs([p for p in procs if _alive(p)], timeout=0.5)
        left = [p for p in procs if _alive(p)]
        assert not left, f"cluster processes survived SIGKILL: {left}"
        # Nothing else may run in any of the cluster's sessions (e.g. a worker started meanwhile).
        stray = [p for p in psutil.process_iter() if _session(p.pid) in sessions and _alive(p)]
        assert not stray, f"cluster processes left: {stray}"


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.fixture()
def cluster() -> Iterator[LocalCluster]:
    # A short temp dir: Ray's Unix socket paths live under it and are limited to ~107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="rdx-", dir="/tmp"))
    local = LocalCluster(temp_dir)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- tests


@pytest.fixture()
def _ray_stopped() -> Iterator[None]:
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _submit_and_wait(cluster: LocalCluster, submission: str, *entrypoint: str) -> str:
    """`ray job submit --working-dir .` from the repository root, waiting (bounded) for the job to end;
    its output, or a failure that shows the job's status and logs."""
    address = ("--address", cluster.dashboard)
    try:
        submit = cluster.run("job", "submit", *address, "--working-dir", ".", "--submission-id", submission,
                             "--", *entrypoint, timeout=JOB_TIMEOUT_S)
        output = submit.stdout + submit.stderr
    except subprocess.TimeoutExpired as err:
        cluster.run("job", "stop", *address, submission, timeout=60)
        output = f"(no end after {JOB_TIMEOUT_S} s) {err.stdout!r}"
    # The status as Ray's enum names it (the CLI's wording of it varies between versions).
    probe = ("from ray.job_submission import JobSubmissionClient as C; "
             f"print(C({cluster.dashboard!r}).get_job_status({submission!r}).value)")
    status = subprocess.run([sys.executable, "-c", probe], env=cluster.env, capture_output=True, text=True, timeout=60)
    if status.stdout.strip() != "SUCCEEDED":
        logs = cluster.run("job", "logs", *address, submission, timeout=60)
        pytest.fail(f"job {submission} did not succeed: {status.stdout}{status.stderr[-2000:]}\n--- submit ---\n"
                    f"{output[-4000:]}\n--- job logs ---\n{logs.stdout[-8000:]}{logs.stderr[-2000:]}")
    return output


def _assert_loopback_only(cluster: LocalCluster) -> None:
    """Every listener of the cluster's processes is on loopback (token auth or not, none faces the network)."""
    pids = {p.pid for p in cluster.processes()}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert any(c.laddr.port == cluster.dashboard_port for c in listening), "found no cluster listener to check"
    exposed = [c for c in listening if not _is_loopback(c.laddr.ip)]
    assert not exposed, f"the cluster listens beyond loopback: {exposed}"


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The deterministic part of a sweep's rows, one row per (ordering, phase, stage, penalties)."""
    keep = [c for c in df.columns if not VOLATILE.search(c)]
    return df[keep].sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


@pytest.mark.slow
def test_submitted_sweep_lands_in_storage_and_equals_a_local_run(
    cluster: LocalCluster, mpd_dir: Path, tmp_path: Path, embedded_cache: Path, _ray_stopped: None
) -> None:
    assert {"raylet", "gcs_server"} <= {p.name() for p in cluster.processes()}
    _assert_loopback_only(cluster)
    config = tmp_path / "job.yaml"
    dump_config(tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, **SWEEP), config)
    storage = tmp_path / "job-sweeps"
    submission = f"raydetox-test-{tmp_path.name}"
    output = _submit_and_wait(cluster, submission, "raydetox", "sweep", str(config), "--storage", str(storage))
    assert f"results in {storage}/tiny" in output
    _assert_loopback_only(cluster)  # again, with the workers the job started

    # The results are where the command said, not in the job's temporary copy of the working dir.
    exp_dir = storage / "tiny"
    assert len(list(exp_dir.glob("trial_*/result.json"))) == 1
    copies = [p for p in cluster.temp_dir.glob("session_*/runtime_resources/working_dir_files/*") if p.is_dir()]
    assert copies, "found no copy of the working dir to check (did Ray move it?)"
    written = [p for c in copies for p in c.rglob("*") if p.name in ("result.json", "experiment.yaml", "runs")]
    assert not written, f"results written inside the job's copy of the working dir: {written}"
    assert main(["analyze", str(exp_dir)]) == 0
    assert (exp_dir / "analysis" / "report.md").is_file() and (exp_dir / "analysis" / "results.parquet").is_file()
    cluster.stop()  # one Ray at a time on this machine: the local run below starts its own

    job_rows = load_results(exp_dir)
    results = run_sweep(load_config(config), storage_path=str(tmp_path / "local-sweeps"))
    assert not [r for r in results if r.error]
    local_rows = load_results(tmp_path / "local-sweeps" / "tiny")
    assert sorted(job_rows.columns) == sorted(local_rows.columns)
    job, local = _comparable(job_rows), _comparable(local_rows)
    assert len(job) == 4 and job[ROW_KEY].equals(local[ROW_KEY])
    # Same seed, data and base (the job built it into the shared cache; the local run reuses it), one
    # torch thread: losses, learning rates and
    # the BLEU/chrF/copy rates of the generated texts are identical. BERTScore (and J and the objective,
    # built on it) is float32 arithmetic whose last bits differed between the two runs in one of two checks
    # (~6e-8 relative): compared to a few float32 ulps. Wall-clock and Tune bookkeeping columns
    # (VOLATILE) differ by nature.
    for col in job.columns:
        if pd.api.types.is_float_dtype(job[col]):
            close = [math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
                     for a, b in zip(job[col], local[col])]
            assert all(close), f"{col}: job {job[col].tolist()} vs local {local[col].tolist()}"
        else:
            assert job[col].astype(str).tolist() == local[col].astype(str).tolist(), col


# ------------------------------------------------------------------------------- paths inside a job


@pytest.fixture()
def in_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as a job's entrypoint: the variable Ray's job supervisor sets, and the working dir a
    copy (without the data beside it, as in a real job)."""
    copy = tmp_path / "working_dir_files" / "_ray_pkg_0"
    (copy / "lists").mkdir(parents=True)
    (copy / "lists" / "en.txt").write_text("idiot\n", encoding="utf-8")
    monkeypatch.setenv(JOB_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0.zip"}}))
    monkeypatch.chdir(copy)
    return copy


def _job_config(tmp_path: Path, mpd_dir: Path, text: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f"name: tiny\ndata:\n  source: {mpd_dir}\n{text}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "command, extra, args, where",
    [
        ("sweep", "", ["--storage", "out/sweeps"], "option '--storage': out/sweeps:"),
        ("sweep", "ray:\n  storage_path: sweeps\n", [], "key 'ray.storage_path': sweeps:"),
        ("sweep", "", [], "key 'output_dir': runs:"),  # the default storage: output_dir/sweeps
        ("prepare", "", ["--out", "out/data"], "option '--out': out/data:"),
        ("train", "", [], "key 'output_dir': runs:"),
    ],
)
def test_relative_results_path_in_a_job_is_refused_naming_the_key(
    in_job: Path, tmp_path: Path, mpd_dir: Path, capsys: pytest.CaptureFixture[str], command: str, extra: str,
    args: list[str], where: str,
) -> None:
    config = _job_config(tmp_path, mpd_dir, extra)
    assert main([command, str(config), *args]) == 2
    err = capsys.readouterr().err
    assert where in err and "may delete once the job ends" in err and str(in_job) in err, err
    assert not (in_job / "runs").exists() and not (in_job / "out").exists()


@pytest.mark.parametrize(
    "extra, args, where",
    [
        ("", ["--data", "../shared/data/multilingual_paradetox"], "option '--data': ../shared/data/"),
        ("lexicon:\n  wordlists: ['../lexicons/{lang}.txt']\n", [], "key 'lexicon.wordlists.0': ../lexicons/"),
    ],
)
def test_relative_input_outside_the_job_copy_is_refused(
    in_job: Path, tmp_path: Path, mpd_dir: Path, capsys: pytest.CaptureFixture[str], extra: str, args: list[str],
    where: str,
) -> None:
    config = _job_config(tmp_path, mpd_dir, extra)
    assert main(["sweep", str(config), "--storage", str(tmp_path / "sweeps"), *args]) == 2
    err = capsys.readouterr().err
    assert where in err and "leaves it" in err, err


def test_lang_wordlist_dir_missing_from_the_job_copy_is_refused(
    in_job: Path, tmp_path: Path, mpd_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A {lang} list whose directory was not uploaded (e.g. .gitignore'd) would skip every language.
    config = _job_config(tmp_path, mpd_dir, "lexicon:\n  wordlists: ['lexicons/{lang}.txt']\n")
    assert main(["prepare", str(config), "--out", str(tmp_path / "prepared")]) == 2
    err = capsys.readouterr().err
    assert "key 'lexicon.wordlists.0': lexicons/{lang}.txt: directory lexicons not found" in err, err
    assert ".gitignore" in err


def test_relative_paths_inside_the_job_copy_and_absolute_ones_pass(
    in_job: Path, tmp_path: Path, mpd_dir: Path
) -> None:
    from raydetox.cli import _load, build_parser
    from raydetox.sweep import sweep_paths

    config = _job_config(tmp_path, mpd_dir, "lexicon:\n  wordlists: ['lists/{lang}.txt', lists/en.txt]\n")
    args = build_parser().parse_args(["sweep", str(config), "--storage", str(tmp_path / "sweeps")])
    cfg = _load(args)
    assert sweep_paths(cfg, args.storage)[0] == str(tmp_path / "sweeps")
    # A URI keeps results off the node; the prepared data then lives in output_dir, a scratch dir.
    args = build_parser().parse_args(["sweep", str(config), "--storage", "s3://bucket/raydetox"])
    assert sweep_paths(_load(args), args.storage)[2] == in_job / "runs" / "tiny"


def test_outside_a_job_relative_paths_resolve_against_the_working_dir(
    tmp_path: Path, mpd_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raydetox.cli import _load, build_parser
    from raydetox.sweep import sweep_paths

    monkeypatch.delenv(JOB_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["sweep", str(_job_config(tmp_path, mpd_dir)), "--storage", "out/sweeps"])
    assert sweep_paths(_load(args), args.storage)[:2] == (str(tmp_path / "out" / "sweeps"), "tiny")


def test_cluster_extra_matches_the_ray_dependency() -> None:
    from importlib.metadata import requires

    ray_reqs = [r for r in requires("raydetox") or [] if r.startswith("ray[")]
    core = next(r for r in ray_reqs if "extra ==" not in r)
    cluster = [r for r in ray_reqs if 'extra == "cluster"' in r]
    assert cluster and all(r.startswith("ray[default]") for r in cluster), ray_reqs
    # Same version range: a cluster started with another Ray than the one that runs the sweep fails late.
    version_range = core.split("]", 1)[1]
    assert all(r.split("]", 1)[1].split(";")[0].strip() == version_range for r in cluster), ray_reqs
