"""Quality benchmark: does the curriculum the sweep selects beat the baseline, the untrained base and delete?

Runs ``experiments/quality.yaml`` exactly as ``raydetox sweep`` + ``raydetox analyze --confirm`` do
(:func:`raydetox.sweep.run_sweep`, then :func:`raydetox.analysis.analyze` with ``confirm=True``):
every variant is trained once per seed, the best variant is chosen by its MEAN objective over seeds on
the validation split only, and then the chosen variant's checkpoints (every seed), the baseline's, the
untrained base with the same decoding, and the copy and delete systems generate for the test split,
which no selection step reads, scored with the independent toxicity judge.

The grid of ``experiments/quality.yaml`` (change it there, or with ``--set sweep.KEY=VALUE``):

- orderings ``easy>medium>hard>full`` and ``hard>medium>easy>full`` (the anti-curriculum control)
  × ``curriculum.pacing`` disjoint and cumulative × lr 3e-4 and 1e-4 (one rate for every stage;
  1e-3 lost ~0.05 J against the untrained base on validation: ``benchmarks/train_vs_untrained.py``)
  × 1 epoch per stage,
- the baseline (one ``full`` stage of 4 epochs, never paced) at each lr, and ``untrained`` (no stage;
  one trial whatever the seed),
- decoding: ``toxic_penalty`` {0, ∞} (``toxic_ban: every_piece``) × ``copy_penalty`` {0, 1}, all with
  ``no_repeat_ngram_size: 3``, scored on each trial's final weights (no retraining),
- seeds 0, 1, 2: 10 trained variants × 3 seeds = 30 trained trials + 1 untrained trial, 2 at a time on
  2 cores (``ray.cpus_per_worker: 1``); objective ``j``, rows with > 2% degenerate outputs refused;
  FIFO scheduling (ASHA would hold a curriculum after its easy stage against the baseline after its
  whole stage, and would stop seeds one by one); every stage checkpoint kept
  (``training.keep_checkpoints: 0``), so that whichever row is chosen can be confirmed for every seed.

Sizing (≤ 60 min on 2 cores, aimed at ~45): the trials of ``make quickstart`` (same data, base and
judge; 2026-11-30, 2 trials at a time at load average 3–4) took 185 s for a disjoint curriculum with 6
decoding rows (74 s training, ~68 s its four validation evaluations, 6–13 s per decoding row; the
(0, 0) row reuses the last stage's), 143 s for the baseline (92 s training) and 52 s for the untrained
base; its confirmation of one seed took 23 s. Hence here ~167 s per disjoint trial, ~189 s per
cumulative one (1.5× the training steps), ~133 s per baseline, ~41 s untrained: ~5,100 trial-seconds,
~43 min at 2 at a time, plus ~1 min of set-up with the quickstart's base and judge cached and ~1 min of
confirmation: **~45 min**. A fresh cache adds the base build (2,400 steps: ~15 min at that load).
The run prints each kind of trial's measured cost, to resize the grid from.

Prints, and writes to ``OUT/quality.md``: the exact grid, the wall time of each phase and the measured
cost of a trial, the variants ranked by mean objective with mean, std and 95% t-interval across seeds,
the confirmation on the test split (every system, per language, with 95% bootstrap intervals; paired
intervals of best − baseline, best − untrained and best − delete with the report's plain sentences),
and issue 13's targets met or not. The sweep lies in ``OUT/sweeps/NAME`` (its full analysis report in
``analysis/report.md`` there); an interrupted run continues with ``--resume``.

    python benchmarks/quality.py --data ../shared/data/multilingual_paradetox [--out out/bench-quality]
        [--set sweep.seeds=[0,1,2]] [--holdout PATH] [--resume]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raydetox.analysis import AnalysisReport, analyze, reference_winner
from raydetox.config import ExperimentConfig, load_config
from raydetox.confirm import BASELINE, BEST, COPY, DELETE, METRICS, PRIMARY, confirmation_markdown
from raydetox.data.prepare import PreparedData, prepare
from raydetox.plots import label
from raydetox.results import UNTRAINED, load_results
from raydetox.selection import variant_key
from raydetox.stats import seed_summary
from raydetox.sweep import decode_grid, orderings, run_sweep, variants

# Validation metrics summarised across seeds beside the objective (unprefixed: eval_<name>).
SEED_METRICS: tuple[str, ...] = ("j", "copy_rate", "chrf", "sta", "degenerate_rate")
# Issue 13's targets for the chosen schedule on the test split: (metric, bound) with lower is better.
TARGET_BOUNDS: dict[str, float] = {"copy": 0.10, "degenerate": 0.01}
SYSTEM_ORDER: tuple[str, ...] = (BEST, BASELINE, UNTRAINED, COPY, DELETE)


def data_arguments(doc: str, out: str, config: str = "experiments/quickstart.yaml") -> argparse.ArgumentParser:
    """The arguments every quality benchmark takes: config, data, output dir and config overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=config)
    parser.add_argument("--data", default="../shared/data/multilingual_paradetox")
    parser.add_argument("--out", default=out)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser


def benchmark_config(args: argparse.Namespace) -> ExperimentConfig:
    """The config of ``--config`` with ``--data`` and the ``--set`` overrides (values parsed as YAML)."""
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    return load_config(args.config, {"data.source": args.data, **overrides})


def prepared_data(args: argparse.Namespace) -> tuple[ExperimentConfig, PreparedData, Path]:
    """The config (with ``--data`` and ``--set``), the data it prepares under ``--out``, and ``--out``."""
    cfg = benchmark_config(args)
    out = Path(args.out)
    return cfg, prepare(cfg, out / "data"), out


# ------------------------------------------------------------------------------------------------ tables


def grid_lines(cfg: ExperimentConfig) -> list[str]:
    """The exact grid the sweep searches, as markdown bullets."""
    sweep = cfg.sweep
    all_variants = variants(cfg)
    seeds = list(sweep.seeds or [cfg.training.seed])
    trained = [v for v in all_variants if not v["is_untrained"]]
    untrained = len(all_variants) - len(trained)
    decoding = ", ".join(f"({label(t)}, {label(c)})" for t, c in decode_grid(cfg))
    return [
        f"- config `{cfg.name}`: data `{cfg.data.source}`, model `{cfg.model.name_or_path}`, objective "
        f"`{sweep.objective}`, degenerate rows over {sweep.max_degenerate_rate:.0%} {sweep.degenerate_action}d, "
        f"scheduler `{sweep.scheduler}`",
        f"- orderings: {', '.join('`' + '>'.join(o) + '`' for o in orderings(cfg))}; pacing: "
        f"{', '.join(sweep.pacing or [cfg.curriculum.pacing])}; lr: {', '.join(f'{x:g}' for x in sweep.lr)}; "
        f"epochs per stage: {', '.join(f'{x:g}' for x in sweep.epochs)}",
        "- variants: " + ", ".join(f"`{v['ordering']}`" + (f" lr {v['lr']:g}" if v["lr"] else "") for v in trained)
        + (", `untrained`" if untrained else ""),
        f"- decoding (toxic_penalty, copy_penalty) on each trial's final weights: {decoding}",
        f"- seeds: {', '.join(map(str, seeds))}: {len(trained)} trained variants × {len(seeds)} seeds = "
        f"{len(trained) * len(seeds)} trained trials" + (" + 1 untrained trial" if untrained else ""),
    ]


def trial_costs(df: pd.DataFrame) -> pd.DataFrame:
    """Wall seconds per trial (Tune's ``time_total_s``) by kind of variant: what one more trial costs."""
    per_trial = df.groupby("trial_id").agg(
        ordering=("ordering", "first"), seconds=("time_total_s", "max"),
        training=("stage_seconds", "sum"), rows=("phase", "size"))
    kind = per_trial["ordering"].str.partition(":")[0].where(per_trial["ordering"].str.contains(":"), "disjoint")
    kind = kind.where(~per_trial["ordering"].isin(["baseline:full", UNTRAINED]), per_trial["ordering"])
    table = per_trial.assign(kind=kind).groupby("kind").agg(
        trials=("seconds", "size"), mean_s=("seconds", "mean"), max_s=("seconds", "max"),
        training_s=("training", "mean"), rows=("rows", "mean"))
    return table.round(1).rename(columns={"mean_s": "mean s per trial", "max_s": "max s",
                                          "training_s": "of which training s", "rows": "rows per trial"})


def phase_table(sweep_s: float, df: pd.DataFrame, report: AnalysisReport) -> pd.DataFrame:
    """Wall seconds of each phase: the sweep's setup (data, embedded base, judge: everything before the
    first trial started), its trials, the selection on validation, the confirmation on test."""
    started = float((df["timestamp"] - df["time_total_s"]).min())
    trials_s = float(df["timestamp"].max()) - started
    phases = {
        "sweep: data, embedded base, judge, Ray start": max(0.0, sweep_s - trials_s),
        "sweep: trials (first start to last report)": trials_s,
        "selection on validation (`analyze`)": report.seconds.get("analysis", np.nan),
        "confirmation on test (`analyze --confirm`)": report.seconds.get("confirmation", np.nan),
    }
    phases["total"] = sum(phases.values())
    seconds = pd.Series(phases, name="wall s")
    return pd.DataFrame({"wall s": seconds.round(1), "min": (seconds / 60).round(1)})


def variant_table(report: AnalysisReport, df: pd.DataFrame) -> pd.DataFrame:
    """One line per trained variant (and ``untrained``): its best row by mean objective over seeds, with
    mean ± std and the 95% t-interval across seeds of the objective and of :data:`SEED_METRICS`."""
    ranked = report.variants.assign(rank=np.arange(1, len(report.variants) + 1))
    # Rows of one trained variant share its trials; ranked is sorted best first.
    best_rows = ranked.drop_duplicates("trials")
    metrics = [f"eval_{m}" for m in SEED_METRICS if f"eval_{m}" in df]
    keyed = df.assign(variant_key=variant_key(df))
    summary = seed_summary(keyed[keyed["variant_key"].isin(best_rows["variant_key"])], "variant_key", metrics)
    cells = summary.assign(cell=[_seed_cell(r) for r in summary.itertuples()]).pivot(
        index="variant_key", columns="metric", values="cell")
    lr = keyed.groupby("variant_key")["config/variant/lr"].first() if "config/variant/lr" in keyed else None
    table = pd.DataFrame({
        "rank": best_rows["rank"].to_numpy(),
        "variant": best_rows["ordering"].to_numpy(),
        "lr": [label(float(v)) if lr is not None and pd.notna(v := lr.get(k)) else "" for k in best_rows["variant_key"]],
        "best row": [_row_text(r) for r in best_rows.itertuples()],
        "seeds": best_rows["objective_n"].to_numpy(),
        "objective": [_seed_cell(r, prefix="objective_") for r in best_rows.itertuples()],
    })
    for metric in metrics:
        table[metric.removeprefix("eval_")] = best_rows["variant_key"].map(cells[metric]).to_numpy()
    return table


def _seed_cell(rec: Any, prefix: str = "") -> str:
    mean, std, low, high = (getattr(rec, prefix + k) for k in ("mean", "std", "low", "high"))
    if not np.isfinite(mean):
        return f"{mean}"
    if pd.isna(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]"


def _row_text(rec: Any) -> str:
    if rec.phase == "stage":
        return f"after stage {int(rec.stage_index)} ({rec.stage})"
    return f"tox {label(float(rec.toxic_penalty))}, copy {label(float(rec.copy_penalty))}"


def per_language(report: AnalysisReport, metric: str) -> pd.DataFrame:
    """``metric`` on the test split per language and system, with its 95% bootstrap interval."""
    assert report.confirmation is not None
    table = report.confirmation.table
    rows = table[(table["dataset"] == "test") & (table["kind"] == "score") & (table["metric"] == metric)]
    cells = rows.assign(cell=[_interval_cell(r) for r in rows.itertuples()]).pivot(
        index="lang", columns="system", values="cell")
    return cells[[s for s in SYSTEM_ORDER if s in cells]]


def _interval_cell(rec: Any, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    if pd.isna(rec.estimate):
        return ""
    text = fmt.format(rec.estimate)
    return text if pd.isna(rec.low) else f"{text} [{fmt.format(rec.low)}, {fmt.format(rec.high)}]"


def targets(report: AnalysisReport) -> pd.DataFrame:
    """Issue 13's targets for the chosen schedule on the test split, each measured and met or not: a
    curriculum chosen (not the baseline or the untrained base), copy rate < 10%, degenerate share < 1%,
    J above delete's and the baseline's (paired interval > 0)."""
    assert report.confirmation is not None
    table = report.confirmation.table
    test = table[(table["dataset"] == "test") & (table["lang"] == "all")]
    reference = reference_winner(report.best)
    rows = [{"target": "the objective chose a curriculum, not a reference point",
             "measured": f"chose the {reference}" if reference else f"chose `{report.best['ordering']}`",
             "met": "no" if reference else "yes"}]
    for metric, bound in TARGET_BOUNDS.items():
        hit = test[(test["kind"] == "score") & (test["system"] == BEST) & (test["metric"] == metric)]
        rec = hit.iloc[0] if len(hit) else None
        rows.append({"target": f"{METRICS[metric][0]} of the chosen schedule < {bound:g}",
                     "measured": _interval_cell(rec) if rec is not None else "not measured",
                     "met": "yes" if rec is not None and rec["estimate"] < bound else "no"})
    for other in (DELETE, BASELINE):
        hit = test[(test["kind"] == "difference") & (test["system"] == f"{BEST} − {other}")
                   & (test["metric"] == PRIMARY)]
        rec = hit.iloc[0] if len(hit) else None
        rows.append({"target": f"{METRICS[PRIMARY][0]}: chosen − {other} > 0, paired interval excluding 0",
                     "measured": _interval_cell(rec, signed=True) if rec is not None else "not compared",
                     "met": "yes" if rec is not None and rec["low"] > 0 else "no"})
    return pd.DataFrame(rows)


def benchmark_markdown(cfg: ExperimentConfig, report: AnalysisReport, df: pd.DataFrame, sweep_s: float,
                       errored: list[str], command: str) -> str:
    """The benchmark's report: grid, phases, trial costs, variants across seeds, confirmation, targets."""
    parts = [
        "# Quality benchmark: selected on validation, confirmed on test",
        "",
        f"`{command}`",
        "",
        "## Grid",
        "",
        *grid_lines(cfg),
        "",
    ]
    if errored:
        parts += [f"**{len(errored)} trial(s) errored** and are missing from the tables: {', '.join(errored)}.", ""]
    parts += [
        "## Wall time per phase",
        "",
        phase_table(sweep_s, df, report).to_markdown(),
        "",
        "Cost of one trial (Tune's `time_total_s`: its stages with their validation rows, then its decoding rows):",
        "",
        trial_costs(df).to_markdown(),
        "",
        "## Variants on validation, ranked by mean objective across seeds",
        "",
        "Each variant's best row (stage or decoding setting) by its mean over seeds: mean ± std [95% "
        f"t-interval across seeds]. Every row: `{report.out_dir / 'variants.csv'}`.",
        "",
        *([report.refusal_note, ""] if report.refusal_note else []),
        variant_table(report, df).to_markdown(index=False),
        "",
    ]
    if report.confirmation is not None:
        parts += [
            confirmation_markdown(report.confirmation),
            *[line for metric in ("copy", "degenerate") for line in (
                f"### {METRICS[metric][0].capitalize()} per language (test, 95% bootstrap intervals)", "",
                per_language(report, metric).to_markdown(), "")],
            "## Targets (issue 13), on the test split",
            "",
            targets(report).to_markdown(index=False),
            "",
        ]
    parts += [f"Full analysis: `{report.report}`", ""]
    return "\n".join(parts)


def main() -> int:
    parser = data_arguments(__doc__, "out/bench-quality", config="experiments/quality.yaml")
    parser.add_argument("--holdout", action="append", default=[], metavar="PATH",
                        help="also confirm on this pairs file (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep under --out")
    args = parser.parse_args()
    cfg = benchmark_config(args)
    out = Path(args.out)
    storage = out / "sweeps"
    started = time.perf_counter()
    results = run_sweep(cfg, resume=args.resume, storage_path=str(storage), overwrite=not args.resume)
    sweep_s = time.perf_counter() - started
    errored = [str(r.metrics.get("trial_id", r.path)) for r in results if r.error]
    import ray

    ray.shutdown()  # the trials are done: their workers' memory is the confirmation's
    results_dir = storage / (cfg.ray.name or cfg.name)
    report = analyze(results_dir, confirm=True, holdouts=args.holdout)
    text = benchmark_markdown(cfg, report, load_results(results_dir), sweep_s, errored,
                              " ".join(["python", *sys.argv]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"written: {out / 'quality.md'}")
    return 1 if errored else 0


if __name__ == "__main__":
    sys.exit(main())
