"""Ray Tune sweeps on a local Ray bound to loopback: rows, stage reports, ASHA, fault resume (driver
interruption and killed workers: tests/test_faults.py).

Each test runs a real sweep (Ray Train workers inside Tune trials) on a tiny slice of the real data with
a tiny embedded base; Ray is started by the sweep and shut down after each test.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raydetox.analysis import analyze
from raydetox.config import ConfigError
from raydetox.errors import ResultsError
from raydetox.results import load_results, started_trials
from raydetox.sweep import (
    decode_grid,
    param_space,
    ray_address,
    run_sweep,
    trial_name,
    untrained_duplicate,
    variants,
)
from tests.tiny import tiny_config

pytestmark = pytest.mark.slow

SWEEP = {
    "sweep.orderings": [["easy", "full"], ["hard", "full"]],
    "sweep.include_baseline": False,
    "sweep.untrained": False,  # the untrained variant's rows are tested in tests/test_confirm.py's sweep
    "sweep.toxic_penalty": [0.0, float("inf")],
    "sweep.copy_penalty": [0.0],
    "sweep.max_failures": 1,
    "training.max_steps_per_stage": 2,
    "ray.cpus_per_worker": 1.0,
}


@pytest.fixture(autouse=True)
def _ray_stopped():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _cfg(mpd_dir: Path, tmp_path: Path, cache: Path, **extra):
    return tiny_config(mpd_dir, tmp_path / "runs", cache, **{**SWEEP, **extra})


def _rows(exp_dir: Path) -> pd.DataFrame:
    return load_results(exp_dir)


def test_the_config_s_ray_address_is_joined_unless_the_flag_or_ray_address_says_otherwise(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = tiny_config(mpd_dir, tmp_path, embedded_cache)
    cluster = tiny_config(mpd_dir, tmp_path, embedded_cache, **{"ray.address": "ray://head:10001"})
    assert ray_address(local) is None, "no address anywhere: a local in-process Ray"
    assert ray_address(cluster) == "ray://head:10001", "the config's key was once ignored: a cluster run went local"
    assert ray_address(cluster, "10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # `ray job submit` sets it for its entrypoint
    assert ray_address(cluster) == ray_address(local) == "http://127.0.0.1:8265"


def test_two_trial_sweep_rows_and_analysis(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache)
    assert len(variants(cfg)) == 2 and len(decode_grid(cfg)) == 2
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert len(results) == 2 and not [r for r in results if r.error]
    exp_dir = tmp_path / "sweeps" / cfg.name
    df = _rows(exp_dir)
    # 2 trials × (2 stage rows + 2 decode rows), each exactly once.
    assert len(df) == 8
    assert (df.groupby("trial_id").size() == 4).all()
    assert sorted(df[df["phase"] == "stage"]["stage_index"].tolist()) == [1, 1, 2, 2]
    # The driver listed each trial as it started, beside the trial directories.
    assert sorted(started_trials(exp_dir)) == sorted(df["trial_id"].unique())
    decode = df[df["phase"] == "decode"]
    assert sorted(decode["toxic_penalty"].tolist()) == [0.0, 0.0, float("inf"), float("inf")]
    assert set(df["ordering"]) == {"easy>full", "hard>full"}
    # (0, 0) is the decoding the stages were scored with: its row reuses the last stage's scores, the
    # other setting is generated and scored anew.
    last_stage = df[(df["phase"] == "stage") & (df["stage_index"] == 2)].set_index("trial_id")
    for row in decode.itertuples():
        assert row.decode_reused == (row.toxic_penalty == 0.0)
        if row.decode_reused:
            assert row.eval_chrf == last_stage.loc[row.trial_id, "eval_chrf"]
    # Every row keeps its per-sentence predictions beside it; a row's chrF is recomputed from its file
    # (sacrebleu, multi-reference), and the reused decode row shares the last stage's file.
    from sacrebleu.metrics import CHRF

    from raydetox.metrics import ref_streams
    from raydetox.results import read_predictions

    validation = pd.read_parquet(exp_dir / "data" / "stages" / "validation.parquet")
    for row in df.itertuples():
        predictions = read_predictions(exp_dir / row.predictions)
        assert list(predictions["id"]) == list(validation["id"])
        chrf = CHRF().corpus_score(list(predictions["output"]), ref_streams(list(predictions["references"])))
        assert chrf.score == pytest.approx(row.eval_chrf, abs=1e-9)
        assert predictions["degenerate"].mean() == pytest.approx(row.eval_degenerate_rate)
        if row.phase == "decode" and row.decode_reused:
            assert row.predictions == last_stage.loc[row.trial_id, "predictions"]
    # A second sweep into the same results would mix its rows with these: refused before Ray starts.
    with pytest.raises(ResultsError, match="--resume"):
        run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    # STA comes from the independent judge, not from the lexicon (kept as its own column).
    assert df["eval_judge_toxicity"].notna().all()
    np.testing.assert_allclose(df["eval_sta"], 1 - df["eval_judge_toxicity"])
    report = analyze(exp_dir)
    text = report.report.read_text()
    assert "## Toxicity judge (STA in J)" in text and "ROC-AUC" in text
    # What the best row wrote, beside the baseline (none in this sweep) and delete, per language.
    best_outputs = read_predictions(exp_dir / report.best["predictions"])
    assert "## Sample outputs (validation, per language)" in text
    first = best_outputs.groupby("lang").head(1)
    assert all(str(t).replace("|", "\\|").replace("\n", " ").strip() in text for t in first["input"])
    for path in (report.out_dir / "results.parquet", report.out_dir / "best_config.yaml", report.out_dir / "report.md"):
        assert path.is_file()
    assert len(list(report.out_dir.glob("*.png"))) == 3


def test_a_sweep_whose_data_fails_stops_the_ray_it_started(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    """Ray starts while the data is prepared; when the preparation fails, the error is the data's and no
    Ray is left running (nor any trial started)."""
    import ray

    from raydetox.data.io import DataError

    assert not ray.is_initialized()
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"data.source": str(tmp_path / "no-such-data")})
    with pytest.raises(DataError, match="no-such-data"):
        run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert not ray.is_initialized()
    assert not list((tmp_path / "sweeps" / cfg.name).glob("*/result.json"))


def test_the_driver_finds_a_cached_base_and_judge_without_the_model_stack(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path
) -> None:
    """With the base and the judge cached, what a sweep's driver prepares while Ray starts (data, base and
    judge pointers) imports neither transformers, peft nor sklearn: seconds off the start of every sweep."""
    import subprocess
    import sys

    from raydetox.config import dump_config
    from raydetox.pretraining_corpus import recorded_base
    from raydetox.sweep import _prepare_inputs

    cfg = _cfg(mpd_dir, tmp_path, embedded_cache)
    first = tmp_path / "first" / cfg.name
    _prepare_inputs(cfg, False, str(tmp_path / "first"), cfg.name, first)  # builds or finds both
    config = tmp_path / "config.yaml"
    dump_config(cfg, config)
    second = tmp_path / "second" / cfg.name
    code = ("import sys; from pathlib import Path; from raydetox.config import load_config; "
            "from raydetox.sweep import _prepare_inputs; "
            f"cfg = load_config({str(config)!r}); "
            f"_prepare_inputs(cfg, False, {str(tmp_path / 'second')!r}, cfg.name, Path({str(second)!r})); "
            "print(sorted(m for m in ('transformers', 'peft', 'sklearn', 'skops') if m in sys.modules))")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    # the same pointers as the first driver's, which loaded or built them the full way
    assert recorded_base(second / "data") == recorded_base(first / "data") is not None
    for run in (first, second):
        assert (run / "data" / "judge_path.json").is_file()
    assert (json.loads((second / "data" / "judge_path.json").read_text())
            == json.loads((first / "data" / "judge_path.json").read_text()))


def test_trials_run_one_after_another_in_one_reused_process(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    """sweep.reuse_actors (the default): a finished trial's process runs the next trial, which then pays
    no process start nor imports again; each trial still reports its own complete rows."""
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{
        "sweep.orderings": [["easy", "full"]], "sweep.lr": [1.0e-4, 3.0e-4], "sweep.max_concurrent_trials": 1,
        "sweep.toxic_penalty": [0.0], "training.max_steps_per_stage": 1})
    assert cfg.sweep.reuse_actors
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert len(results) == 2 and not [r for r in results if r.error]
    df = _rows(tmp_path / "sweeps" / cfg.name)
    assert df.groupby("trial_id")["pid"].nunique().eq(1).all()
    assert df["pid"].nunique() == 1  # both trials in one process
    # every trial's own rows: 2 stages + 1 decode row each, at its own lr
    assert sorted(df.groupby("trial_id").size()) == [3, 3]
    assert sorted(df[df["phase"] == "stage"].groupby("trial_id")["lr_applied"].first()) == [1.0e-4, 3.0e-4]


def test_asha_stops_a_worse_trial_at_a_stage_boundary(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    # Same ordering, two learning rates run one after the other: a tiny lr keeps the base's (copying)
    # outputs, a huge lr wrecks them. Under the chrF objective ASHA must stop the wrecked trial at its
    # first stage boundary instead of training its second stage.
    cfg = _cfg(
        mpd_dir, tmp_path, embedded_cache,
        **{"sweep.orderings": [["easy", "full"]], "sweep.lr": [1.0e-9, 3.0], "sweep.scheduler": "asha",
           "sweep.objective": "chrf", "sweep.max_concurrent_trials": 1, "lora": None,
           # The tiny base loops in many outputs; this test is about ASHA, not the degeneration guard.
           "sweep.max_degenerate_rate": 1.0},
    )
    run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    df = _rows(tmp_path / "sweeps" / cfg.name)
    stages = df[df["phase"] == "stage"]
    lr_of = stages.groupby("trial_id")["lr_applied"].first()
    last_stage = stages.groupby("trial_id")["stage_index"].max()
    good, bad = lr_of.idxmin(), lr_of.idxmax()
    assert last_stage[good] == 2 and (df.loc[df["trial_id"] == good, "phase"] == "decode").sum() == 2
    # The wrecked trial was stopped after its first stage: no second stage, no decoding rows.
    assert last_stage[bad] == 1 and (df.loc[df["trial_id"] == bad, "phase"] == "decode").sum() == 0


@pytest.mark.parametrize("executor", ["trial", "ray_train"])
def test_trial_failing_mid_stage_resumes_from_stage_checkpoint(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path, executor: str
) -> None:
    # "trial": Tune restarts the trial; "ray_train": Ray Train restarts its worker group inside the trial.
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.orderings": [["easy", "full"]], "ray.executor": executor})
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"), fail_once_at_stage=1)
    assert not [r for r in results if r.error]
    exp_dir = tmp_path / "sweeps" / cfg.name
    markers = list(exp_dir.glob("*.failed"))
    assert markers, "the injected failure did not happen"
    df = _rows(exp_dir)
    stages = df[df["phase"] == "stage"]
    assert stages["stage_index"].tolist() == [1, 2]
    assert (df["phase"] == "decode").sum() == 2
    # Stage 1 was not trained again after the restart: every stage-1 report (the one before the failure,
    # when Tune persisted it before the trial died, and the replay) has the seconds and loss that stage 1
    # had when the failure happened (recorded in the marker).
    at_failure = json.loads(markers[0].read_text())["stages"][0]
    raw = [json.loads(line) for line in next(exp_dir.glob("trial_*/result.json")).read_text().splitlines()]
    stage1 = [r for r in raw if r.get("phase") == "stage" and r["stage_index"] == 1]
    assert stage1 and all(r["stage_seconds"] == at_failure["seconds"] for r in stage1)
    assert all(r["eval_loss"] == at_failure["metrics"]["eval_loss"] for r in stage1)


def trial_statuses(exp_dir: Path) -> list[str]:
    """Trial statuses in the sweep's saved experiment state (what ``--resume`` will start from)."""
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        data = json.loads(states[-1].read_text())
        return [json.loads(t[0] if isinstance(t, list) else t)["status"] for t in data["trial_data"]]
    except (OSError, ValueError, KeyError):  # being copied
        return []


def _safe_rows(exp_dir: Path) -> pd.DataFrame:
    try:
        return load_results(exp_dir)
    except (FileNotFoundError, ValueError):
        return pd.DataFrame({"phase": [], "trial_id": []})


def test_local_ray_listens_on_loopback_only() -> None:
    import psutil

    from raydetox.sweep import init_ray

    init_ray(num_cpus=1)
    import ray

    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        ray_pids = {p.pid for p in psutil.process_iter(["name", "cmdline"])
                    if any("ray" in part for part in (p.info["cmdline"] or [p.info["name"] or ""]))}
        listening = [c for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
        assert listening, "found no Ray listeners to check"
        exposed = [c for c in listening if not _is_loopback(c.laddr.ip)]
        assert not exposed, f"Ray listens beyond loopback: {exposed}"
    finally:
        ray.shutdown()


def _is_loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # '::ffff:127.0.0.1' is IPv4 loopback
    return (mapped or addr).is_loopback


def test_decode_reuse_off_makes_each_penalty_its_own_trial(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    from raydetox.sweep import param_space

    cfg = _cfg(mpd_dir, tmp_path, embedded_cache)
    assert "decode" not in param_space(cfg)
    off = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.decode_reuse": False})
    space = param_space(off)
    # Tune's grid over (orderings × penalty pairs): every trial retrains and scores one pair.
    assert space["decode"] == {"grid_search": decode_grid(off)}
    assert len(space["variant"]["grid_search"]) * len(space["decode"]["grid_search"]) == 4


def test_two_ray_train_workers_ddp_trial(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    # Two DDP workers (0.99 CPU each, so that they and the trial fit two cores): rank 1 keeps step with
    # rank 0's reports; generation metrics and the rows come from rank 0 only.
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.orderings": [["easy", "full"]], "sweep.toxic_penalty": [0.0],
                                                    "ray.num_workers": 2, "ray.cpus_per_worker": 0.99})
    assert not cfg.ray.in_trial()
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert not [r for r in results if r.error]
    df = _rows(tmp_path / "sweeps" / cfg.name)
    assert df["phase"].tolist() == ["stage", "stage", "decode"] and df["stage_index"].tolist() == [1, 2, 2]
    assert df["eval_bertscore_f1"].notna().all()


def test_pacing_is_a_search_axis_beside_orderings(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    from types import SimpleNamespace

    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.pacing": ["disjoint", "cumulative", "competence"],
                                                    "sweep.include_baseline": True})
    found = {v["ordering"]: v["pacing"] for v in variants(cfg)}
    # Under competence the stage names only label the phases: same-length orderings would train alike.
    assert found == {"easy>full": "disjoint", "hard>full": "disjoint", "cumulative:easy>full": "cumulative",
                     "cumulative:hard>full": "cumulative", "competence:easy>full": "competence",
                     "baseline:full": "disjoint"}
    assert param_space(cfg)["variant"] == {"grid_search": variants(cfg)}
    trial = SimpleNamespace(trial_id="t1", config={"variant": variants(cfg)[2]})
    assert trial_name(trial) == "t1 cumulative:easy>full"
    # Without the axis, every variant but the baseline takes curriculum.pacing.
    one = _cfg(mpd_dir, tmp_path, embedded_cache, **{"curriculum.pacing": "competence", "sweep.include_baseline": True})
    assert [(v["ordering"], v["pacing"]) for v in variants(one)] == [
        ("competence:easy>full", "competence"), ("baseline:full", "disjoint")]
    with pytest.raises(ConfigError, match="key 'sweep.pacing': a pacing is listed twice"):
        _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.pacing": ["cumulative", "cumulative"]})
    with pytest.raises(ConfigError, match="key 'curriculum.pacing'"):
        _cfg(mpd_dir, tmp_path, embedded_cache, **{"curriculum.pacing": "gradual"})


def test_baseline_epochs_default_to_the_same_total_epochs_or_are_given(mpd_dir: Path, tmp_path: Path,
                                                                     embedded_cache: Path) -> None:
    def baselines(**overrides: object) -> list[tuple[float, float]]:
        cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.include_baseline": True, **overrides})
        return [(v["schedule"][0]["epochs"], v["schedule"][0]["lr"]) for v in variants(cfg) if v["is_baseline"]]

    # _cfg's orderings have two stages: one baseline per epochs value, of twice its epochs
    assert baselines(**{"sweep.epochs": [1, 3], "sweep.lr": [1e-4]}) == [(2.0, 1e-4), (6.0, 1e-4)]
    # given: one baseline per value, crossed with the learning rates, whatever sweep.epochs holds
    assert baselines(**{"sweep.epochs": [1, 3], "sweep.lr": [1e-4, 3e-4], "sweep.baseline_epochs": [1.5]}) == [
        (1.5, 1e-4), (1.5, 3e-4)]
    with pytest.raises(ConfigError, match="sweep.baseline_epochs"):
        _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.baseline_epochs": [0]})
    with pytest.raises(ConfigError, match="sweep.baseline_epochs"):
        _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.baseline_epochs": []})


def test_untrained_variant_runs_once_whatever_the_seeds_and_ranks(mpd_dir: Path, tmp_path: Path,
                                                                  embedded_cache: Path) -> None:
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.untrained": True, "sweep.seeds": [3, 1],
                                                    "sweep.lora_r": [4, 8]})
    untrained = [v for v in variants(cfg) if v.get("is_untrained")]
    assert untrained == [{"schedule": [], "ordering": "untrained", "is_baseline": False, "is_untrained": True,
                          "pacing": "disjoint", "lr": None, "epochs": None}]
    assert not any(v.get("is_untrained") for v in variants(_cfg(mpd_dir, tmp_path, embedded_cache)))
    sweep = dataclasses.asdict(cfg)["sweep"]
    # Tune crosses every variant with seeds and ranks; the untrained base depends on neither: one trial runs.
    runs = [(seed, rank) for seed in (3, 1) for rank in (4, 8)
            if not untrained_duplicate({"variant": untrained[0], "seed": seed, "lora_r": rank}, sweep)]
    assert runs == [(3, 4)]
    # nor on a cleaning ablation's arm: the "off" arm's untrained trial is a duplicate too
    assert untrained_duplicate({"variant": untrained[0], "seed": 3, "lora_r": 4, "ablation_cleaning": "off"}, sweep)
    assert not untrained_duplicate({"variant": untrained[0], "seed": 3, "lora_r": 4, "ablation_cleaning": "on"}, sweep)
    trained = next(v for v in variants(cfg) if not v["is_untrained"])
    assert not untrained_duplicate({"variant": trained, "seed": 1, "lora_r": 8}, sweep)


def test_seeded_sweep_scores_the_untrained_base_once(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    """Tune crosses the untrained variant with every seed; the duplicates report no result row (and
    still satisfy Tune's metric check), so the sweep finishes and analyze sees the base once."""
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.orderings": [["easy"]], "sweep.final_full": False,
                                                    "sweep.untrained": True, "sweep.seeds": [0, 1],
                                                    "sweep.toxic_penalty": [0.0], "sweep.max_degenerate_rate": 1.0})
    before = {k: os.environ.get(k) for k in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "RAY_AIR_NEW_OUTPUT")}
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert len(results) == 4 and not [r for r in results if r.error]
    # the sweep's Tune settings do not leak into a later Tune run of this process (it would write no result.json)
    assert {k: os.environ.get(k) for k in before} == before
    df = _rows(tmp_path / "sweeps" / cfg.name)
    untrained = df[df["ordering"] == "untrained"]
    assert len(untrained) == 1 and untrained["trial_id"].nunique() == 1
    assert df[df["ordering"] != "untrained"]["trial_id"].nunique() == 2  # one trained trial per seed
    report = analyze(tmp_path / "sweeps" / cfg.name)
    assert report.untrained is not None


def test_sweep_over_pacings_reaches_trials_and_rows(mpd_dir: Path, tmp_path: Path, embedded_cache: Path) -> None:
    cfg = _cfg(mpd_dir, tmp_path, embedded_cache, **{"sweep.orderings": [["easy", "hard"]],
                                                    "sweep.pacing": ["cumulative", "competence"],
                                                    "sweep.toxic_penalty": [0.0]})
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert len(results) == 2 and not [r for r in results if r.error]
    exp_dir = tmp_path / "sweeps" / cfg.name
    df = _rows(exp_dir)
    assert len(df) == 6  # 2 trials × (2 stage rows + 1 decode row)
    assert (df["config/variant/pacing"] == df["pacing"]).all()
    assert dict(zip(df["pacing"], df["ordering"])) == {"cumulative": "cumulative:easy>hard",
                                                       "competence": "competence:easy>hard"}
    stages = df[df["phase"] == "stage"].set_index(["pacing", "stage_index"])
    # Cumulative: the second stage trained on the easy and the hard buckets.
    buckets = {b: len(pd.read_parquet(exp_dir / "data" / "stages" / f"{b}.parquet")) for b in ("easy", "hard")}
    assert stages.loc[("cumulative", 1), "stage_examples"] == buckets["easy"]
    assert stages.loc[("cumulative", 2), "stage_examples"] == buckets["easy"] + buckets["hard"]
    assert stages.loc["cumulative", "competence"].isna().all()
    # Competence: one run of 2 + 2 steps whose competence reaches 1 at its end.
    c0 = cfg.curriculum.c0
    assert stages.loc[("competence", 1), "competence"] == pytest.approx(np.sqrt(2 * (1 - c0**2) / 4 + c0**2))
    assert stages.loc[("competence", 2), "competence"] == 1.0
