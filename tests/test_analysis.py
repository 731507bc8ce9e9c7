"""Sweep analysis on a real (tiny) Ray Tune experiment written to disk exactly as Tune 2.60 writes it.

The Tune trials run a clearly-fake test trainable: it reports rows that follow the results contract, in
the sweep's real search-space layout (``raydetox.sweep.param_space``), with metric values that are a
deterministic function of its config, designed so that the highest-BERTScore row copies too much, the
best curriculum row under the copy bound is a decoding-penalty row, and under chrF a middle stage wins.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raydetox.analysis import analyze
from raydetox.errors import ResultsError
from raydetox.results import load_results, objective_column, objective_value
from raydetox.selection import best_config, best_row, disk_usage, language_table, pareto_front, rank_variants
from raydetox.config import ExperimentConfig, SweepConfig, config_from_dict, dump_config, load_config

INF = math.inf
LANGS = ("de", "en")
ORDER_A, ORDER_B, BASELINE, UNTRAINED = "easy>full", "hard>medium>full", "baseline:full", "untrained"


def _experiment() -> ExperimentConfig:
    return config_from_dict(
        {
            "name": "analysis-test",
            "sweep": {
                "orderings": [["easy", "full"], ["hard", "medium", "full"]],
                "epochs": [1.0],
                "lr": [1e-3],
                "toxic_penalty": [0.0, INF],
                "copy_penalty": [0.0, 2.0],
                "copy_rate_bound": 0.25,
                "include_baseline": True,
            },
        }
    )


def fake_metrics(ordering: str, stage_index: int, n_stages: int, toxic: float, copy: float) -> dict[str, float]:
    """TEST trainable metrics: copy falls with stages and penalties; BERTScore rises with copying;
    chrF peaks at the second stage. Per language: en = overall + 0.05, de = overall - 0.05."""
    copy_rate = 0.70 if ordering == BASELINE else 0.90 if ordering == UNTRAINED else 0.75 - 0.15 * stage_index
    copy_rate = max(0.0, copy_rate - 0.12 * copy - (0.03 if math.isinf(toxic) else 0.0))
    bonus = 0.01 if ordering == ORDER_B else 0.0
    bertscore = 0.80 + 0.2 * copy_rate + (0.01 if math.isinf(toxic) else 0.0) + bonus
    if ordering == BASELINE:
        chrf = 55.0
    else:
        chrf = 60.0 - 8.0 * (stage_index - 2) ** 2 + 100 * bonus
    chrf -= 3.0 * copy + (1.0 if math.isinf(toxic) else 0.0)
    overall = {"copy_rate": copy_rate, "bertscore_f1": bertscore, "chrf": chrf, "j": 0.3 - 0.2 * copy_rate}
    row = {f"eval_{k}": v for k, v in overall.items()}
    for lang, shift in zip(LANGS, (-0.05, 0.05)):
        row.update({f"eval_{k}/{lang}": v + shift for k, v in overall.items() if k != "chrf"})
    row.update({"eval_loss": 1.5 - 0.1 * stage_index, "eval_n": 40.0})
    return row


def _test_trainable(config: dict, grid: list[list[float]]) -> None:
    from ray import tune

    cfg = _experiment()
    variant = config["variant"]
    schedule = variant["schedule"]
    meta = {"ordering": variant["ordering"], "is_baseline": variant["is_baseline"],
            "is_untrained": variant.get("is_untrained", False)}
    tune.report({"stage_index": 0})  # a report without `phase` (not a contract row): must be skipped

    def report(phase: str, k: int, toxic: float, copy: float, **extra: float) -> None:
        metrics = {**fake_metrics(variant["ordering"], k, len(schedule), toxic, copy), **extra}
        stage = schedule[k - 1]["stage"] if k else UNTRAINED  # the untrained variant: decode rows at stage 0
        tune.report({"phase": phase, "stage_index": k, "stage": stage, "toxic_penalty": toxic,
                     "copy_penalty": copy, **meta, **metrics, "objective": objective_value(metrics, cfg.sweep)})

    for k in range(1, len(schedule) + 1):
        if k == 1 and not variant["is_baseline"]:
            report("stage", 1, 0.0, 0.0, eval_loss=99.0)  # stale: a resumed trial reports stage 1 again
        report("stage", k, 0.0, 0.0)
    for toxic, copy in grid:
        report("decode", len(schedule), toxic, copy)


N_ROWS = (2 + 4) + (3 + 4) + (1 + 4) + 4  # stage + decode rows of easy>full, hard>medium>full, baseline, untrained
N_LINES = N_ROWS + 2 + 4  # + the two stale stage-1 reports + one phase-less report per trial


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import ray
    from ray import tune

    from raydetox.sweep import decode_grid, param_space

    cfg = _experiment()
    storage = tmp_path_factory.mktemp("tune")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module isn't importable by workers
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        grid = tune.Tuner(
            tune.with_parameters(_test_trainable, grid=decode_grid(cfg)),
            param_space=param_space(cfg),
            run_config=tune.RunConfig(storage_path=str(storage), name="sweep", verbose=0),
        ).fit()
        assert not grid.errors, grid.errors
    finally:
        ray.shutdown()
    exp_dir = storage / "sweep"
    dump_config(cfg, exp_dir / "experiment.yaml")  # as raydetox.sweep.run_sweep does
    return exp_dir


def test_tune_wrote_its_real_layout(sweep_dir: Path) -> None:
    assert list(sweep_dir.glob("experiment_state-*.json")) and (sweep_dir / "tuner.pkl").is_file()
    trial_dirs = [p for p in sweep_dir.iterdir() if (p / "result.json").is_file()]
    assert len(trial_dirs) == 4
    assert all((p / "params.json").is_file() and (p / "progress.csv").is_file() for p in trial_dirs)
    assert sum(len((p / "result.json").read_text().splitlines()) for p in trial_dirs) == N_LINES


def test_objective_value_definition() -> None:
    cfg = SweepConfig(copy_rate_bound=0.25)
    assert objective_value({"eval_bertscore_f1": 0.8, "eval_copy_rate": 0.25}, cfg) == 0.8
    assert objective_value({"eval_bertscore_f1": 0.9, "eval_copy_rate": 0.3}, cfg) == pytest.approx(0.9 - 1 - 0.05)
    feasible_worst = objective_value({"eval_bertscore_f1": 0.0, "eval_copy_rate": 0.0}, cfg)
    assert feasible_worst > objective_value({"eval_bertscore_f1": 1.0, "eval_copy_rate": 0.2501}, cfg)
    assert objective_value({"eval_j": 0.31}, SweepConfig(objective="j")) == 0.31
    assert objective_value({"test_chrf": 41.0}, SweepConfig(objective="chrf"), prefix="test_") == 41.0
    with pytest.raises(KeyError, match="eval_copy_rate"):
        objective_value({"eval_bertscore_f1": 0.8}, cfg)


NAN = math.nan
# Crafted rows (bound 0.25 on the copy rate, 0.02 on the degenerate rate) and, per objective and action,
# the objective worked out by hand: at/over each bound, NaN/inf/non-number metrics, no measurement.
CRAFTED = pd.DataFrame({
    "eval_bertscore_f1": [0.8, 0.9, NAN, 0.7, 0.8, 0.8, INF, "n/a", 0.6],
    "eval_copy_rate": [0.25, 0.3, 0.1, NAN, 0.1, 0.1, 0.1, 0.1, 0.1],
    "eval_j": [0.31, 0.5, NAN, 0.2, 0.4, 0.4, INF, "n/a", 0.1],
    "eval_chrf": [41.0, 50.0, NAN, 20.0, 30.0, 30.0, INF, "n/a", 10.0],
    "eval_degenerate_rate": [0.0, NAN, 0.0, 0.0, 0.02, 0.5, 0.0, 0.0, INF],
})
EXPECTED = {
    ("bertscore_copy_bound", "refuse"): [0.8, 0.9 - 1 - 0.05, NAN, NAN, 0.8, -INF, INF, NAN, -INF],
    ("bertscore_copy_bound", "penalise"): [0.8, 0.9 - 1 - 0.05, NAN, NAN, 0.8, 0.8 - 1 - 0.48, INF, NAN, -INF],
    ("j", "refuse"): [0.31, 0.5, NAN, 0.2, 0.4, -INF, INF, NAN, -INF],
    ("j", "penalise"): [0.31, 0.5, NAN, 0.2, 0.4, 0.4 - 1 - 0.48, INF, NAN, -INF],
    ("chrf", "refuse"): [41.0, 50.0, NAN, 20.0, 30.0, -INF, INF, NAN, -INF],
    ("chrf", "penalise"): [41.0, 50.0, NAN, 20.0, 30.0, 30.0 - 100 - 48, INF, NAN, -INF],
}


@pytest.mark.parametrize(("objective", "action"), sorted(EXPECTED))
def test_objective_on_crafted_rows(objective: str, action: str) -> None:
    """The one definition on whole columns and row by row, against values worked out by hand."""
    cfg = SweepConfig(objective=objective, degenerate_action=action, copy_rate_bound=0.25, max_degenerate_rate=0.02)
    expected = EXPECTED[(objective, action)]
    np.testing.assert_allclose(objective_column(CRAFTED, cfg).to_numpy(), expected)
    rows = [objective_value(row, cfg) for row in CRAFTED.to_dict("records")]
    np.testing.assert_allclose(rows, expected)
    # Rows written before the degenerate rate existed, or with none measured, are not guarded.
    unguarded = [objective_value({**row, "eval_degenerate_rate": None}, cfg) for row in CRAFTED.to_dict("records")]
    np.testing.assert_allclose(objective_column(CRAFTED.drop(columns="eval_degenerate_rate"), cfg), unguarded)
    assert not np.isneginf(unguarded).any()


def test_checkpoint_retention_ranks_stages_as_analysis_picks_them() -> None:
    """Retention keeps a trial's best stages by ``checkpoint_score``: eligible stages by the objective,
    then degenerate ones by their penalised objective, so the stage analysis falls back to when every row
    is refused still has its checkpoint (with the refused ``-inf`` they all tied)."""
    from ray import tune

    from raydetox.results import CHECKPOINT_SCORE, stage_row
    from raydetox.sweep import retention

    cfg = SweepConfig(copy_rate_bound=0.25, max_degenerate_rate=0.02)

    def stage(index: int, bertscore: float, degenerate: float) -> dict:
        metrics = {"eval_bertscore_f1": bertscore, "eval_copy_rate": 0.1, "eval_degenerate_rate": degenerate}
        result = {"index": index, "stage": f"s{index}", "train_loss": 1.0, "seconds": 1.0, "steps": 1,
                  "lr_applied": 1e-3, "metrics": metrics}
        return stage_row(result, 0.0, 0.0, {"trial": "t"}, cfg)

    def kept(rows: list[dict], n: int) -> set[int]:  # what Ray keeps: the n highest scores
        ranked = sorted(rows, key=lambda r: r[CHECKPOINT_SCORE], reverse=True)
        return {r["stage_index"] for r in ranked[:n]}

    looping = [stage(0, 0.70, 0.10), stage(1, 0.80, 0.05), stage(2, 0.60, 0.50), stage(3, 0.65, 0.30)]
    assert all(r["objective"] == -math.inf for r in looping)
    df = pd.DataFrame(looping).assign(ordering="o", seed=0, trial_id="t")
    with pytest.raises(ValueError, match="max_degenerate_rate"):
        best_row(df, cfg)
    fallback = best_row(df.assign(objective=objective_column(df, SweepConfig(degenerate_action="penalise"))),
                        SweepConfig(degenerate_action="penalise"))
    assert fallback["stage_index"] == 2 and 2 in kept(looping, 1)
    # One stage within the bound outranks every looping one, even a better-scoring one.
    mixed = [*looping, stage(4, 0.50, 0.0)]
    assert kept(mixed, 1) == {5} and kept(mixed, 2) == {5, 2}
    assert retention(2, tune.CheckpointConfig).checkpoint_score_attribute == CHECKPOINT_SCORE


def test_objective_of_one_row_takes_any_reported_values() -> None:
    """A trial's row also holds lists, dicts and text (per-language metrics, file names): they are not read."""
    cfg = SweepConfig(objective="j")
    row = {"eval_j": 0.4, "eval_per_lang": {"de": 0.3}, "eval_langs": ["de", "en"], "predictions": "p/1.parquet"}
    assert objective_value(row, cfg) == 0.4
    with pytest.raises(KeyError, match=r"needs metric 'eval_j'; row has \['eval_langs', 'eval_per_lang'"):
        objective_value({k: v for k, v in row.items() if k != "eval_j"}, cfg)
    assert objective_column(pd.DataFrame(columns=["eval_chrf"]), cfg).empty  # no rows: nothing is missing


def test_load_results_one_row_per_report(sweep_dir: Path) -> None:
    df = load_results(sweep_dir)
    assert len(df) == N_ROWS
    key = ["trial_id", "phase", "stage_index", "toxic_penalty", "copy_penalty"]
    assert not df.duplicated(key).any()
    assert (df["eval_loss"] != 99.0).all()  # the later report of a repeated stage won
    counts = df.groupby(["ordering", "phase"]).size().to_dict()
    assert counts == {(ORDER_A, "stage"): 2, (ORDER_A, "decode"): 4, (ORDER_B, "stage"): 3,
                      (ORDER_B, "decode"): 4, (BASELINE, "stage"): 1, (BASELINE, "decode"): 4,
                      (UNTRAINED, "decode"): 4}
    untrained = df[df["ordering"] == UNTRAINED]
    assert (untrained["stage_index"] == 0).all() and (untrained["stage"] == UNTRAINED).all()
    assert untrained["is_untrained"].all() and not df.loc[df["ordering"] != UNTRAINED, "is_untrained"].any()
    assert set(df.loc[df["phase"] == "decode", "toxic_penalty"]) == {0.0, INF}
    assert {"config/variant/ordering", "config/variant/schedule", "config/variant/is_baseline"} <= set(df.columns)
    base = df[df["ordering"] == BASELINE].iloc[0]
    assert json.loads(base["schedule"]) == [{"stage": "full", "epochs": 3.0, "lr": 1e-3}]
    # Metrics are exactly what the trainable reported for that row.
    row = df[(df["ordering"] == ORDER_B) & (df["phase"] == "stage") & (df["stage_index"] == 2)].iloc[0]
    expected = fake_metrics(ORDER_B, 2, 3, 0.0, 0.0)
    assert row["eval_chrf"] == pytest.approx(expected["eval_chrf"])
    assert row["eval_copy_rate/en"] == pytest.approx(expected["eval_copy_rate/en"])


def test_load_results_resumed_partial_and_bad_files(sweep_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    trial = next(p for p in sorted(copy.iterdir()) if (p / "result.json").is_file())
    result = trial / "result.json"
    lines = result.read_text().splitlines()
    last = json.loads(lines[-1])
    resumed = {**last, "eval_bertscore_f1": 0.123}
    with result.open("a") as f:
        f.write(json.dumps(resumed) + "\n")
        f.write('{"phase": "decode", "stage_i')  # a trial still writing its next line
    df = load_results(copy)
    assert len(df) == N_ROWS
    again = df[(df["trial_id"] == last["trial_id"]) & (df["phase"] == last["phase"])
               & (df["toxic_penalty"] == last["toxic_penalty"]) & (df["copy_penalty"] == last["copy_penalty"])]
    assert again["eval_bertscore_f1"].tolist() == [0.123]

    result.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"result\.json:2: not a JSON object"):
        load_results(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no trial directories"):
        load_results(tmp_path / "empty")
    (copy / "experiment.yaml").unlink()
    with pytest.raises(ResultsError, match="experiment.yaml"):
        analyze(copy)


def test_both_readers_give_the_same_table(sweep_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow's one-pass reader (any finished sweep) and the line-by-line one (the one that names a bad
    line) read the same sweep to the same table."""
    import raydetox.results as results

    dirs = results.trial_dirs(sweep_dir)
    assert results._rows_by_arrow(dirs) is not None  # a finished sweep: the fast reader takes it
    fast = load_results(sweep_dir)
    monkeypatch.setattr(results, "_rows_by_arrow", lambda dirs: None)
    pd.testing.assert_frame_equal(fast, load_results(sweep_dir))
    monkeypatch.undo()
    # A trial still writing its last line: the line-by-line reader decides (and skips the partial line).
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    with (results.trial_dirs(copy)[0] / "result.json").open("a") as f:
        f.write('{"phase": "decode", "stage_i')
    assert results._rows_by_arrow(results.trial_dirs(copy)) is None
    pd.testing.assert_frame_equal(load_results(copy), fast)


def test_best_row_respects_copy_bound(sweep_dir: Path) -> None:
    df = load_results(sweep_dir)
    cfg = _experiment().sweep
    best = best_row(df, cfg)
    top_bertscore = df.loc[df["eval_bertscore_f1"].idxmax()]
    assert top_bertscore["eval_copy_rate"] > cfg.copy_rate_bound  # the copying baseline has the best BERTScore…
    assert top_bertscore["eval_bertscore_f1"] > best["eval_bertscore_f1"]  # …and loses
    feasible = df[df["eval_copy_rate"] <= cfg.copy_rate_bound]
    assert best["eval_copy_rate"] <= cfg.copy_rate_bound
    assert best["eval_bertscore_f1"] == feasible["eval_bertscore_f1"].max()
    assert (best["ordering"], best["phase"], best["toxic_penalty"], best["copy_penalty"]) == (ORDER_A, "decode", INF, 2.0)


def test_best_row_considers_every_stage_not_the_last(sweep_dir: Path) -> None:
    df = load_results(sweep_dir)
    best = best_row(df, SweepConfig(objective="chrf"))
    assert (best["ordering"], best["phase"], best["stage_index"]) == (ORDER_B, "stage", 2)
    rerun = best_config(_experiment(), best)
    assert [(s.stage, s.epochs, s.lr) for s in rerun.schedule] == [("hard", 1.0, 1e-3), ("medium", 1.0, 1e-3)]
    assert (rerun.decoding.toxic_penalty, rerun.decoding.copy_penalty) == (0.0, 0.0)
    # A searched LoRA rank is part of the re-runnable config too.
    row = best.copy()
    row["config/lora_r"], row["copy_penalty"] = 4, 1.5
    rerun = best_config(_experiment(), row)
    assert (rerun.lora.r, rerun.decoding.copy_penalty, len(rerun.schedule)) == (4, 1.5, 2)
    # So is the pacing the row's trial trained with (rows before pacing existed keep the experiment's).
    assert rerun.curriculum.pacing == "disjoint"
    row["pacing"] = "cumulative"
    assert best_config(_experiment(), row).curriculum.pacing == "cumulative"
    row["schedule"] = None
    with pytest.raises(ValueError, match="no schedule"):
        best_config(_experiment(), row)


def test_language_table(sweep_dir: Path) -> None:
    df = load_results(sweep_dir)
    row = best_row(df, _experiment().sweep)
    table = language_table(df, row)
    assert list(table.columns) == ["de", "en", "all"]
    assert set(table.index) == {"eval_copy_rate", "eval_bertscore_f1", "eval_j"}
    assert table.loc["eval_copy_rate", "en"] == row["eval_copy_rate/en"]
    assert table.loc["eval_bertscore_f1", "all"] == row["eval_bertscore_f1"]


def test_pareto_front_hand_made() -> None:
    points = {
        "E": (0.05, 0.70), "A": (0.10, 0.80), "F": (0.10, 0.80), "B": (0.20, 0.90), "C": (0.20, 0.85),
        "D": (0.30, 0.85), "H": (0.40, 0.95), "G": (np.nan, 0.99), "I": (0.50, 0.95),
    }
    df = pd.DataFrame([(n, x, y) for n, (x, y) in points.items()], columns=["name", "eval_copy_rate", "eval_bertscore_f1"])
    assert pareto_front(df)["name"].tolist() == ["E", "A", "F", "B", "H"]
    front = pareto_front(df.rename(columns={"eval_copy_rate": "tox", "eval_bertscore_f1": "sim"}), x="tox", y="sim")
    assert len(front) == 5


def test_disk_usage(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.bin").write_bytes(b"0" * 10)
    (tmp_path / "a" / "b" / "y.bin").write_bytes(b"1" * 2345)
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / "z.bin").write_bytes(b"2" * 999)
    (tmp_path / "link").symlink_to(tmp_path / "a")  # not followed: counted once
    assert disk_usage(tmp_path, exclude=[tmp_path / "skip"]) == 2355
    assert disk_usage(tmp_path) == 2355 + 999


def test_analyze_writes_tables_plots_config_and_report(sweep_dir: Path, tmp_path: Path) -> None:
    import matplotlib.image

    before = disk_usage(sweep_dir)
    out = tmp_path / "analysis"
    report = analyze(sweep_dir, out)
    assert report.disk_bytes == before and report.n_rows == N_ROWS and report.n_trials == 4

    for name in ("stage_curves", "pareto", "penalty_heatmap"):
        png = report.plots[name]
        assert png == out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(png).shape[0] > 100

    table = pd.read_parquet(report.results_parquet)
    assert len(table) == len(pd.read_csv(report.results_csv)) == N_ROWS
    assert table["objective"].max() == pytest.approx(report.best["objective"])
    assert list(pd.read_csv(report.per_language, index_col=0).columns) == ["de", "en", "all"]

    rerun = load_config(report.best_config)
    assert [s.stage for s in rerun.schedule] == ["easy", "full"]
    assert (rerun.decoding.toxic_penalty, rerun.decoding.copy_penalty) == (INF, 2.0)
    assert rerun.sweep == _experiment().sweep

    text = report.report.read_text()
    assert "## Reference points vs best" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| eval_copy_rate "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # baseline and untrained decoded as the best row is (tox inf, copy 2: best − reference compares
    # schedules, not decodings; the baseline's own stage row has copy rate 0.70), best, best − each
    assert cells == ["eval_copy_rate", "0.4300", "0.6300", "0.1800", "-0.2500", "-0.4500"]
    # The untrained variant ranks last on the objective, yet the variants table shows it (a reference point).
    variants = text.split("## Variants ranked")[1].split("## Trials")[0]
    assert "| untrained " in variants and "No schedule beat" not in text
    assert "untrained: objective" in report.summary()
    assert f"({before} bytes)" in text
    assert "toxic_penalty: .inf" in text and "![pareto](pareto.png)" in text
    assert ORDER_A in report.summary()


def test_when_untrained_wins_the_report_says_no_schedule_beat_it(sweep_dir: Path, tmp_path: Path) -> None:
    """The untrained base is eligible under the objective like the baseline: made the best row, it is
    chosen, and the report says plainly that no schedule beat it."""
    results = tmp_path / "untrained-wins"
    shutil.copytree(sweep_dir, results)
    for result in results.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if any(r.get("ordering") == UNTRAINED for r in lines):
            result.write_text("".join(
                json.dumps({**r, "eval_copy_rate": 0.05, "eval_bertscore_f1": 0.95 + 0.01 * (r.get("copy_penalty", 0) > 0)})
                + "\n" for r in lines))
    report = analyze(results)
    best = report.best
    assert (best["ordering"], best["stage_index"], best["copy_penalty"]) == (UNTRAINED, 0, 2.0)
    assert report.untrained is not None and report.untrained["trial_id"] == best["trial_id"]
    text = report.report.read_text()
    assert "**No schedule beat the untrained base on validation**" in text
    assert "no schedule beat the untrained base on validation" in report.summary()
    assert "Checkpoint: none, the untrained base model" in text and report.best_checkpoint is None
    # Its re-runnable config keeps the experiment's schedule (nothing was trained) and takes its decoding.
    rerun = load_config(report.best_config)
    assert rerun.schedule == _experiment().schedule and rerun.decoding.copy_penalty == 2.0


# ------------------------------------------------------------------------------------- seeds and refusal


def _seeded_rows() -> pd.DataFrame:
    """Variant A has the single luckiest run, variant B the better mean over three seeds; variant C is
    the best on BERTScore but loops (degenerate share above the bound) in one seed."""
    bertscore = {"A": [0.90, 0.60, 0.60], "B": [0.80, 0.78, 0.79], "C": [0.95, 0.95, 0.95]}
    degenerate = {"A": [0.0] * 3, "B": [0.01] * 3, "C": [0.0, 0.10, 0.0]}
    rows = []
    for variant, scores in bertscore.items():
        for seed, score in enumerate(scores):
            rows.append({
                "trial_id": f"{variant}{seed}", "phase": "stage", "stage_index": 1, "toxic_penalty": 0.0,
                "copy_penalty": 0.0, "ordering": variant, "is_baseline": False, "seed": seed,
                "config/variant/ordering": variant, "config/seed": seed,
                "eval_bertscore_f1": score, "eval_copy_rate": 0.1, "eval_degenerate_rate": degenerate[variant][seed],
            })
    return pd.DataFrame(rows)


def test_best_variant_is_ranked_by_its_mean_over_seeds_not_its_luckiest_run() -> None:
    df = _seeded_rows()
    cfg = SweepConfig()
    ranked = rank_variants(df, cfg)
    assert list(ranked["ordering"]) == ["B", "A", "C"]  # C is refused: one seed loops
    b = ranked.iloc[0]
    assert b["objective_n"] == 3 and b["objective_mean"] == pytest.approx(0.79)
    assert b["objective_std"] == pytest.approx(np.std([0.80, 0.78, 0.79], ddof=1))
    assert b["objective_low"] < 0.79 < b["objective_high"]
    assert ranked.iloc[-1]["objective_mean"] == -math.inf
    best = best_row(df, cfg)
    assert best["ordering"] == "B" and best["seed"] == 0 and best["objective"] == pytest.approx(0.79)
    assert best["trials"] == "B0,B1,B2"
    # Penalised instead of refused, C ranks below every row within the bound, but is still ranked.
    penalised = rank_variants(df, SweepConfig(degenerate_action="penalise"))
    assert list(penalised["ordering"]) == ["B", "A", "C"] and np.isfinite(penalised.iloc[-1]["objective_mean"])
    # A row that loops is never "best", whatever its score; when every row loops the error says why.
    with pytest.raises(ValueError, match="max_degenerate_rate"):
        best_row(df.assign(eval_degenerate_rate=0.5), cfg)


def test_a_tie_with_the_untrained_base_is_won_by_the_base_not_by_float_noise() -> None:
    df = _seeded_rows()
    b = df[df["ordering"] == "B"].iloc[0]

    def untrained(score: float) -> pd.DataFrame:
        row = {**b.to_dict(), "trial_id": "U", "ordering": "untrained", "is_untrained": True, "seed": 0,
               "config/variant/ordering": "untrained", "config/seed": 0, "stage_index": 0,
               "eval_bertscore_f1": score, "eval_degenerate_rate": 0.01}
        return pd.concat([df, pd.DataFrame([row])], ignore_index=True)

    # B's mean is 0.79: the same outputs scored in other batches differ by ~1e-9, and that is a tie.
    assert best_row(untrained(0.79 - 4e-9), SweepConfig())["ordering"] == "untrained"
    assert best_row(untrained(0.79 + 4e-9), SweepConfig())["ordering"] == "untrained"
    assert best_row(untrained(0.78), SweepConfig())["ordering"] == "B"  # a real margin is no tie


def test_a_variant_missing_seeds_is_ranked_but_not_chosen_over_complete_ones() -> None:
    """A with one seed left (the others failed or were stopped early) at 0.92 ranks first, but B, with
    all three, is chosen: the seeds a scheduler lets finish are the lucky ones."""
    df = _seeded_rows()
    short = df[~((df["ordering"] == "A") & (df["seed"] > 0))].copy()
    short.loc[short["ordering"] == "A", "eval_bertscore_f1"] = 0.92
    ranked = rank_variants(short, SweepConfig())
    assert ranked.iloc[0]["ordering"] == "A" and ranked.iloc[0]["objective_n"] == 1
    assert best_row(short, SweepConfig())["ordering"] == "B"
    nan_seeds = df.copy()  # the same with A's other seeds present but NaN
    nan_seeds.loc[nan_seeds["ordering"] == "A", "eval_bertscore_f1"] = [0.92, np.nan, np.nan]
    assert best_row(nan_seeds, SweepConfig())["ordering"] == "B"
    alone = short[short["ordering"] == "A"]  # no complete variant to prefer: the short one is chosen
    assert best_row(alone, SweepConfig())["ordering"] == "A"


def test_a_tie_between_schedules_does_not_follow_float_noise() -> None:
    """Two schedules equal but for 1e-9: the same one wins whichever is ahead by the noise."""
    df = _seeded_rows()
    a = df[df["ordering"] == "B"].assign(ordering="A2", **{"config/variant/ordering": "A2"},
                                         trial_id=lambda f: "A2" + f["seed"].astype(str))
    for noise in (1e-9, -1e-9):
        both = pd.concat([df[df["ordering"] == "B"], a.assign(eval_bertscore_f1=a["eval_bertscore_f1"] + noise)],
                         ignore_index=True)
        assert best_row(both, SweepConfig())["ordering"] == "A2"  # its key sorts first


def test_analyze_says_when_every_row_is_refused(sweep_dir: Path, tmp_path: Path) -> None:
    """Every row loops: the report says no row is eligible and shows the least bad one, penalised."""
    results = tmp_path / "refused"
    shutil.copytree(sweep_dir, results)
    for result in results.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        result.write_text("".join(json.dumps({**r, "eval_degenerate_rate": 0.5}) + "\n" for r in lines))
    report = analyze(results)
    text = report.report.read_text()
    assert "**No row is eligible**" in text and "max_degenerate_rate" in text
    assert np.isfinite(report.best["objective"]) and "No row is eligible" in report.summary()


def test_pareto_front_equals_the_pairwise_definition() -> None:
    """The sort-based front is the rows no other row dominates (checked pairwise), ties and NaN included."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"eval_copy_rate": rng.choice(np.linspace(0, 1, 15), 300),
                       "eval_bertscore_f1": rng.choice(np.linspace(0, 1, 12), 300)})
    df.loc[::17, "eval_bertscore_f1"] = np.nan
    data = df.dropna()
    xs, ys = data["eval_copy_rate"].to_numpy(), data["eval_bertscore_f1"].to_numpy()
    dominated = [bool(((xs <= a) & (ys >= b) & ((xs < a) | (ys > b))).any()) for a, b in zip(xs, ys)]
    expected = data[~np.array(dominated)]
    assert sorted(pareto_front(df).index) == sorted(expected.index)
