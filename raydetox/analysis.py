"""Sweep results → one DataFrame, the best schedule under the objective, plots and a markdown report.

Results are read straight from the Tune experiment directory through the results contract
(:mod:`raydetox.results`), so no Ray session is needed and a running, partially finished or restored
sweep can be analysed. The choice is made by :mod:`raydetox.selection`; plots by :mod:`raydetox.plots`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from raydetox.ablation import ablation_effects, ablation_markdown
from raydetox.config import ExperimentConfig, SweepConfig, config_to_dict, dump_config, load_config, yaml_text
from raydetox.errors import ResultsError
from raydetox.plots import label, plot_ablation_effects, plot_penalty_heatmap, plot_pareto, plot_stage_curves
from raydetox.results import (
    CONFIRMATION_FILES,
    DESCRIBE_COLUMNS,
    EXPERIMENT_FILE,
    OBJECTIVE_METRICS,
    RESULT_FILE,
    ROW_METRICS,
    TRIALS_FILE,
    load_results,
    objective_column,
    skipped_trial,
    started_trials,
    trial_dir_name,
    trial_dirs,
)
from raydetox.selection import (
    baseline_mask,
    baseline_row,
    decoded_alike,
    best_config,
    best_row,
    checkpoint_of,
    detox_command,
    disk_usage,
    NoEligibleRowError,
    has_language_columns,
    language_table,
    rank_variants,
    untrained_mask,
    untrained_row,
    write_checkpoint_note,
)

if TYPE_CHECKING:
    from raydetox.confirm import Confirmation


@dataclasses.dataclass
class AnalysisReport:
    """What :func:`analyze` wrote and chose."""

    results_dir: Path
    out_dir: Path
    results_parquet: Path
    results_csv: Path
    best_config: Path
    per_language: Path | None
    plots: dict[str, Path | None]
    report: Path
    best: pd.Series
    baseline: pd.Series | None
    n_trials: int
    n_rows: int
    disk_bytes: int
    variants: pd.DataFrame
    refusal_note: str = ""
    best_checkpoint: Path | None = None
    confirmation: Confirmation | None = None
    ablations: pd.DataFrame | None = None  # each ablated factor's effect (sweep.ablations), else None
    untrained: pd.Series | None = None  # the untrained base's row decoded as the best row (sweep.untrained)
    missing: list[str] = dataclasses.field(default_factory=list)  # what the results lack (missing_results)
    # Wall seconds of each phase: "analysis" (selection on validation, tables, plots, report) and, when
    # run, "confirmation" (generation and scoring on the test split and holdouts).
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the CLI."""
        best = self.best
        lines = [
            f"{self.n_rows} rows from {self.n_trials} trials in {self.results_dir} "
            f"({_human_bytes(self.disk_bytes)} on disk)",
            *([f"incomplete: {len(self.missing)} problem(s) in the results, listed in the report:"]
              + [f"  {line}" for line in self.missing[:5]] + (["  ..."] if len(self.missing) > 5 else [])
              if self.missing else []),
            *([self.refusal_note.replace("**", "")] if self.refusal_note else []),
            f"best: trial {best['trial_id']} {best['ordering']} after stage {int(best['stage_index'])} "
            f"({best['phase']}, toxic_penalty {label(float(best['toxic_penalty']))}, copy_penalty "
            f"{label(float(best['copy_penalty']))}): objective {best['objective']:.4f}, "
            f"copy rate {best.get('eval_copy_rate', np.nan):.3f}, BERTScore {best.get('eval_bertscore_f1', np.nan):.4f}",
        ]
        if self.baseline is not None:
            base = self.baseline
            lines.append(
                f"baseline: objective {base['objective']:.4f}, copy rate {base.get('eval_copy_rate', np.nan):.3f}, "
                f"BERTScore {base.get('eval_bertscore_f1', np.nan):.4f}"
            )
        if self.untrained is not None:
            ref = self.untrained
            lines.append(
                f"untrained: objective {ref['objective']:.4f}, copy rate {ref.get('eval_copy_rate', np.nan):.3f}, "
                f"BERTScore {ref.get('eval_bertscore_f1', np.nan):.4f}"
            )
        if (reference := reference_winner(self.best)) is not None:
            lines.append(f"no schedule beat the {reference} on validation")
        lines += [f"best config: {self.best_config}", f"best checkpoint: {self.best_checkpoint or 'not on disk'}"]
        if self.ablations is not None:
            lines.append(f"ablations (on − off, 95% paired interval over sentences): {self.out_dir / 'ablations.csv'}")
            lines += [f"  {r.factor:<17} {r.metric:<12} {r.effect:+.4f} [{r.sentence_low:+.4f}, {r.sentence_high:+.4f}]"
                      for r in self.ablations.itertuples(index=False)]
        if self.confirmation is not None:
            lines.append(f"confirmation: {self.confirmation.paths['csv']}")
        lines.append(f"report: {self.report}")
        return "\n".join(lines)


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    raise AssertionError("unreachable")


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else label(float(value)) if math.isinf(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def reference_winner(best: pd.Series) -> str | None:
    """``"untrained base"`` or ``"baseline"`` when the best row is that reference point, else ``None``."""
    frame = best.to_frame().T
    if bool(untrained_mask(frame).iloc[0]):
        return "untrained base"
    if bool(baseline_mask(frame).iloc[0]):
        return "baseline"
    return None


def _side_by_side_notes(best: pd.Series, baseline: pd.Series | None, untrained: pd.Series | None) -> list[str]:
    """What the side-by-side table mixes: a reference point decoded otherwise than the best row (it has
    no row with the best row's penalties), and seed means (``objective``) beside one seed's metrics."""
    notes = []
    for name, ref in (("baseline", baseline), ("untrained", untrained)):
        if ref is not None and not decoded_alike(ref, best):
            notes.append(f"The {name} has no row decoded with the best row's penalties (toxic "
                         f"{float(best['toxic_penalty']):g}, copy {float(best['copy_penalty']):g}): its row here is "
                         f"decoded with toxic {float(ref['toxic_penalty']):g}, copy {float(ref['copy_penalty']):g}, so "
                         f"best − {name} measures the decoding as well as the schedule.")
    seeds = max(int(r.get("objective_n", 1) or 1) for r in (best, baseline, untrained) if r is not None)
    if seeds > 1:
        notes.append("`objective` is each variant's mean over its seeds; every other metric row is one run of it, "
                     f"the lowest seed's (best: trial {best['trial_id']}). Across-seed spread: the variants table "
                     "below.")
    return notes


def _side_by_side(baseline: pd.Series | None, best: pd.Series, untrained: pd.Series | None = None) -> pd.DataFrame:
    rows = []
    for key in (*DESCRIBE_COLUMNS, *ROW_METRICS):
        if key not in best.index:
            continue
        row: dict[str, str] = {"": key}
        for name, ref in (("baseline", baseline), ("untrained", untrained)):
            value = ref.get(key) if ref is not None else None
            row[name] = _fmt(value)
            delta = ""
            if key in ROW_METRICS and value is not None and not pd.isna(value):
                delta = _fmt(float(best[key]) - float(value))
            row[f"best − {name}"] = delta
        row["best"] = _fmt(best[key])
        rows.append(row)
    columns = ["", "baseline", "untrained", "best", "best − baseline", "best − untrained"]
    if untrained is None:
        columns = [c for c in columns if "untrained" not in c]
    return pd.DataFrame(rows)[columns]


def _trials_table(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby("trial_id", sort=True)
    stage_rows = df[df["phase"] == "stage"].groupby("trial_id")["stage_index"].max()
    return pd.DataFrame(
        {
            "ordering": grouped["ordering"].first(),
            "stages reported": stage_rows.reindex(grouped.size().index).fillna(0).astype(int),
            "decode rows": grouped["phase"].apply(lambda p: int((p == "decode").sum())),
            "best objective": grouped["objective"].max(),
        }
    )


def _disk_breakdown(results_dir: Path, exclude: Sequence[Path]) -> pd.DataFrame:
    """Bytes per top-level entry (trial directories summed into one line): where the disk went."""
    skip = {p.resolve() for p in exclude}
    trials = set(trial_dirs(results_dir))
    sizes: dict[str, int] = {}
    for child in sorted(results_dir.iterdir()):
        if child.resolve() in skip:
            continue
        is_dir = child.is_dir() and not child.is_symlink()
        size = disk_usage(child, exclude) if is_dir else child.lstat().st_size
        name = f"trial directories ({len(trials)})" if child in trials else child.name + ("/" if is_dir else "")
        sizes[name] = sizes.get(name, 0) + size
    table = pd.Series(sizes, dtype="int64").sort_values(ascending=False)
    return pd.DataFrame({"bytes": table, "size": table.map(_human_bytes)}).rename_axis("entry")


def missing_results(results_dir: Path, df: pd.DataFrame) -> list[str]:
    """What a sweep's results lack, one line each, so that an analysis never passes over it: trials
    :data:`~raydetox.results.TRIALS_FILE` lists whose directory is gone, trial directories with no result
    row (an interrupted trial, a deleted or truncated ``result.json``), trials that reported fewer stages
    than their schedule or fewer decoding rows than the other trials, and rows whose objective is NaN (a
    metric it needs is missing or NaN: no mean over seeds counts them)."""
    lines = []
    reported = set(df["trial_dir"])
    for trial_id in started_trials(results_dir):
        if not (results_dir / trial_dir_name(trial_id)).is_dir():
            lines.append(f"{trial_dir_name(trial_id)}: started ({TRIALS_FILE}) but its directory is gone (deleted or "
                         "moved?): its rows are lost")
    for path in sorted(p for p in results_dir.iterdir() if p.is_dir() and p.name.startswith("trial_")):
        trial = path.name
        if trial not in reported and not skipped_trial(path):
            lines.append(f"{trial}: no result row ({RESULT_FILE} missing, empty or not a file): interrupted? "
                         "`raydetox sweep --resume` finishes it")
    decodes = df[df["phase"] == "decode"].groupby("trial_dir").size()
    for trial, rows in df.groupby("trial_dir", sort=True):
        schedule = rows["schedule"].iloc[0]
        planned = len(json.loads(schedule)) if isinstance(schedule, str) else None
        stages = rows.loc[rows["phase"] == "stage", "stage_index"]
        done = int(stages.max()) if len(stages) else 0
        if planned is not None and done < planned:
            lines.append(f"{trial}: reported {done} of its {planned} stages: interrupted? `raydetox sweep --resume`")
        if len(decodes) and decodes.get(trial, 0) < decodes.max():
            lines.append(f"{trial}: {decodes.get(trial, 0)} decoding rows where other trials have {decodes.max()}")
    for row in df[df["objective"].isna()].itertuples(index=False):
        lines.append(f"{row.trial_dir}/{RESULT_FILE}: {row.phase} row (stage {row.stage_index}, toxic_penalty "
                     f"{label(float(row.toxic_penalty))}, copy_penalty {label(float(row.copy_penalty))}) has no "
                     "objective: a metric it needs is missing or NaN; its variant is ranked over its other seeds")
    return lines


def analyze(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    confirm: bool = False,
    holdouts: Sequence[str | os.PathLike[str]] = (),
) -> AnalysisReport:
    """Load a sweep's results, choose the best row, write tables, plots, best_config.yaml and report.md.

    ``out_dir`` defaults to ``RESULTS_DIR/analysis``; ``config`` to ``RESULTS_DIR/experiment.yaml`` (the
    sweep's objective and the base of the re-runnable best config). The objective is recomputed from each
    row's metrics with :func:`objective_value`. The best row's checkpoint goes into ``best_checkpoint.json``
    beside ``best_config.yaml``. ``confirm`` (or any ``holdouts``) then runs :func:`raydetox.confirm.confirm`
    on the test split and the holdout files and appends its section to the report. Each phase's wall
    seconds go into ``seconds``. Prints nothing.
    """
    started = time.perf_counter()
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "analysis"
    config_path = Path(config) if config is not None else results_dir / EXPERIMENT_FILE
    if not results_dir.is_dir():
        raise ResultsError(f"{results_dir}: {'not a directory' if results_dir.exists() else 'not found'} (a sweep's "
                           "results directory: STORAGE/NAME, as `raydetox sweep` prints it)")
    if not config_path.is_file():
        raise ResultsError(f"{config_path}: experiment config not found (raydetox sweep writes it beside the "
                                f"trial directories; analyze(config=...) takes another path)")
    experiment = load_config(config_path)
    sweep = experiment.sweep
    if holdouts:  # a holdout that cannot be read fails now, not after the analysis has written its files
        from raydetox.confirm import load_holdout

        for path in holdouts:
            load_holdout(path)
    # Measured before writing, and without a previous analysis, so it is the sweep's own footprint.
    disk_bytes = disk_usage(results_dir, exclude=[out_dir])
    df = load_results(results_dir)
    needed = [f"eval_{m}" for m in OBJECTIVE_METRICS[sweep.objective] if f"eval_{m}" not in df]
    if needed:
        files = ", ".join(f"{results_dir / d / RESULT_FILE}" for d in sorted(df["trial_dir"].unique())[:3])
        raise ResultsError(f"{files}: no row reports {needed}, which sweep.objective {sweep.objective!r} "
                           f"(from {config_path}) needs")
    df["objective"] = objective_column(df, sweep)
    missing = missing_results(results_dir, df)
    refusal_note = ""
    try:
        best = best_row(df, sweep)
    except NoEligibleRowError as err:
        # Still say which row comes closest, ranked with the degenerate rows penalised, and say why.
        refusal_note = f"**No row is eligible**: {err}. The row below is the best with them penalised instead."
        sweep = dataclasses.replace(sweep, degenerate_action="penalise")
        df["objective"] = objective_column(df, sweep)
        best = best_row(df, sweep)
    # Reference points decoded as the chosen row is: best − reference then measures the schedule.
    baseline = baseline_row(df, sweep, like=best)
    untrained = untrained_row(df, sweep, like=best)
    variants = rank_variants(df, sweep)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (confirm or holdouts):  # an earlier run's confirmation would pass for this analysis's
        for name in CONFIRMATION_FILES.values():
            (out_dir / name).unlink(missing_ok=True)

    results_parquet, results_csv = out_dir / "results.parquet", out_dir / "results.csv"
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, results_parquet)
    # Arrow's writer: pandas' to_csv takes ~10 s on a thousand trials' 100k rows.
    pa_csv.write_csv(table, results_csv, pa_csv.WriteOptions(quoting_style="needed"))
    variants.drop(columns="variant_key").to_csv(out_dir / "variants.csv", index=False)
    chosen = best_config(experiment, best)
    best_yaml = out_dir / "best_config.yaml"
    dump_config(chosen, best_yaml)
    checkpoint = checkpoint_of(results_dir, best)
    write_checkpoint_note(out_dir / "best_checkpoint.json", best, checkpoint, best_yaml)

    per_language_path: Path | None = None
    best_languages: pd.DataFrame | None = None
    if has_language_columns(df):
        best_languages = language_table(df, best)
        per_language_path = out_dir / "per_language.csv"
        best_languages.to_csv(per_language_path)

    bound = sweep.copy_rate_bound if sweep.objective == "bertscore_copy_bound" else None
    best_decoded = bool(((df["trial_id"] == best["trial_id"]) & (df["phase"] == "decode")).any())
    plot_jobs = {
        "stage_curves": lambda p: plot_stage_curves(df, p, copy_rate_bound=bound, untrained=_at_run_decoding(df, experiment)),
        "pareto": lambda p: plot_pareto(df, p, best=best, copy_rate_bound=bound),
        "penalty_heatmap": lambda p: plot_penalty_heatmap(df, p, trial_id=best["trial_id"] if best_decoded else None),
    }
    effects: pd.DataFrame | None = None
    if experiment.sweep.ablations is not None:
        effects = ablation_effects(df, experiment.sweep, results_dir)
        effects.to_csv(out_dir / "ablations.csv", index=False)
        plot_jobs["ablations"] = lambda p: plot_ablation_effects(effects, p)
    plots: dict[str, Path | None] = {}
    plot_notes: dict[str, str] = {}
    for name, draw in plot_jobs.items():
        try:
            plots[name] = draw(out_dir / f"{name}.png")
        except ValueError as err:  # e.g. no decode rows yet in a sweep still running
            plots[name], plot_notes[name] = None, str(err)

    report_path = out_dir / "report.md"
    report = AnalysisReport(
        results_dir=results_dir,
        out_dir=out_dir,
        results_parquet=results_parquet,
        results_csv=results_csv,
        best_config=best_yaml,
        per_language=per_language_path,
        plots=plots,
        report=report_path,
        best=best,
        baseline=baseline,
        n_trials=int(df["trial_id"].nunique()),
        n_rows=len(df),
        disk_bytes=disk_bytes,
        variants=variants,
        refusal_note=refusal_note,
        best_checkpoint=checkpoint,
        ablations=effects,
        untrained=untrained,
        missing=missing,
    )
    text = _report_markdown(report, df, experiment, chosen, best_languages, plot_notes,
                            _disk_breakdown(results_dir, [out_dir]))
    report_path.write_text(text, encoding="utf-8")  # first, so a failing confirmation leaves the report
    report.seconds["analysis"] = time.perf_counter() - started
    if confirm or holdouts:
        from raydetox.confirm import Selection, confirm as run_confirmation, confirmation_markdown

        started = time.perf_counter()
        chosen_rows = Selection(results_dir, experiment, df, best, baseline)
        report.confirmation = run_confirmation(chosen_rows, out_dir, holdouts)
        report.seconds["confirmation"] = time.perf_counter() - started
        report_path.write_text(text + "\n" + confirmation_markdown(report.confirmation), encoding="utf-8")
    return report


def _at_run_decoding(df: pd.DataFrame, experiment: ExperimentConfig) -> pd.Series | None:
    """The untrained row scored with the decoding the stage rows were scored with (the run's own)."""
    rows = df[untrained_mask(df) & (df["toxic_penalty"] == experiment.decoding.toxic_penalty)
              & (df["copy_penalty"] == experiment.decoding.copy_penalty)]
    return rows.iloc[0] if len(rows) else None


def _objective_text(cfg: SweepConfig) -> str:
    if cfg.objective == "bertscore_copy_bound":
        text = (f"`bertscore_copy_bound`: BERTScore F1 when copy rate ≤ {cfg.copy_rate_bound:g}, else "
                f"BERTScore − 1 − (copy rate − {cfg.copy_rate_bound:g}) (any feasible row beats every infeasible one)")
    else:
        text = f"`{cfg.objective}`: eval_{cfg.objective} (higher is better)"
    action = "refused" if cfg.degenerate_action == "refuse" else "penalised below every other row"
    return (f"{text}; rows with more than {cfg.max_degenerate_rate:.0%} degenerate outputs (n-gram loops) are "
            f"{action}; variants are ranked by their mean over seeds")


def _samples_section(results_dir: Path, best: pd.Series, baseline: pd.Series | None, per_lang: int) -> list[str]:
    """What the best row, the baseline and ``delete`` wrote for the same validation inputs, per language
    (from the rows' stored predictions): read before trusting any number above."""
    from raydetox.data.lexicon import Lexicon
    from raydetox.metrics import reference_systems
    from raydetox.results import DATA_DIR, read_predictions

    rows = {"best": best, "baseline": baseline}
    files = {name: row.get("predictions") for name, row in rows.items() if row is not None}
    files = {name: results_dir / path for name, path in files.items() if isinstance(path, str)}
    if "best" not in files or not files["best"].is_file() or per_lang <= 0:
        return []
    table = read_predictions(files["best"])[["id", "lang", "input", "output"]].rename(columns={"output": "best"})
    table = table.groupby("lang", sort=True).head(per_lang)
    if "baseline" in files and files["baseline"].is_file():
        base = read_predictions(files["baseline"]).set_index("id")["output"]
        table["baseline"] = table["id"].map(base)
    lexicon_file = results_dir / DATA_DIR / "lexicon.json"
    if lexicon_file.is_file():
        systems = reference_systems(list(table["input"]), [[""]] * len(table), list(table["lang"]),
                                    Lexicon.load(lexicon_file))
        table["delete"] = systems["delete"]
    cells = table.drop(columns="id").map(lambda t: str(t).replace("|", "\\|").replace("\n", " "))
    return ["## Sample outputs (validation, per language)", "", cells.to_markdown(index=False, disable_numparse=True), ""]


def _judge_section(results_dir: Path) -> list[str]:
    """How far to trust STA: the judge's test-split quality, and the reference systems' toxicity under
    the judge beside the lexicon (the lexicon makes ``delete`` non-toxic by construction)."""
    import json

    from raydetox.judge import POINTER_FILE, REPORT_JSON

    pointer = results_dir / "data" / POINTER_FILE
    if not pointer.is_file():
        return ["## Toxicity judge", "", "STA comes from `metrics.toxicity_classifier` or the lexicon "
                "(no offline judge recorded for this sweep).", ""]
    judge_dir = Path(json.loads(pointer.read_text(encoding="utf-8"))["path"])
    report_file = judge_dir / REPORT_JSON
    if not report_file.is_file():
        return ["## Toxicity judge", "", f"Judge `{judge_dir}`: its report is missing.", ""]
    report = json.loads(report_file.read_text(encoding="utf-8"))
    test = report["test"]
    systems = pd.DataFrame({name: {"P(toxic), judge": v["judge"], "toxic share, lexicon": v["lexicon"]}
                            for name, v in report["reference_systems"].items()}).T
    return [
        "## Toxicity judge (STA in J)",
        "",
        f"An independent classifier (`{judge_dir}`; char n-gram TF-IDF + logistic regression, trained on "
        f"{report['n_train']} labelled texts, never on validation or test rows). On the test split (toxic "
        f"inputs vs references): accuracy **{test['accuracy']:.3f}**, ROC-AUC **{test['roc_auc']:.3f}**. "
        "Read STA as a ranking, not a calibrated probability. The lexicon column is the one that drives "
        "cleaning, the toxic penalty and the delete system:",
        "",
        systems.to_markdown(floatfmt=".3f"),
        "",
    ]


def _checkpoint_text(report: AnalysisReport, experiment: ExperimentConfig) -> str:
    if reference_winner(report.best) == "untrained base":
        return (f"Checkpoint: none, the untrained base model (`model.name_or_path: {experiment.model.name_or_path}`) "
                "with `best_config.yaml`'s decoding.")
    if report.best_checkpoint is not None:
        return f"Checkpoint: `{report.best_checkpoint}`. Reuse it: `{detox_command(report.best_checkpoint, report.best_config)}`"
    return "Checkpoint: not on disk (checkpoint retention removed it); re-train with `raydetox train best_config.yaml`."


def _reference_won(best: pd.Series) -> list[str]:
    """The plain sentence when a reference point is the best row."""
    reference = reference_winner(best)
    if reference is None:
        return []
    return [f"**No schedule beat the {reference} on validation**: the objective picked the {reference} itself.", ""]


def _seed_text(row: pd.Series) -> str:
    n = int(row.get("objective_n", 1) or 1)
    if n < 2:
        return " (one seed: no interval across seeds; add `sweep.seeds` for one)"
    return (f", mean over {n} seeds (std {row['objective_std']:.4f}, 95% t-interval "
            f"{row['objective_low']:.4f} to {row['objective_high']:.4f}; trials {row['trials']})")


def _variants_table(variants: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The ``top`` variants by mean objective, plus the best baseline and untrained rows below them when
    they rank lower (reference points are always shown), with each row's rank."""
    cols = [c for c in ("ordering", "phase", "stage_index", "toxic_penalty", "copy_penalty", "objective_n",
                        "objective_mean", "objective_std", "objective_low", "objective_high", "trials") if c in variants]
    ranked = variants.assign(rank=np.arange(1, len(variants) + 1))
    shown = ranked.head(top)
    for mask in (baseline_mask(ranked), untrained_mask(ranked)):
        if mask.any() and not mask.iloc[:top].any():
            shown = pd.concat([shown, ranked[mask].head(1)])
    return shown[["rank", *cols]].rename(columns={"objective_n": "seeds"})


def _report_markdown(
    report: AnalysisReport,
    df: pd.DataFrame,
    experiment: ExperimentConfig,
    chosen: ExperimentConfig,
    best_languages: pd.DataFrame | None,
    plot_notes: dict[str, str],
    disk: pd.DataFrame,
) -> str:
    best = report.best
    n_stage, n_decode = int((df["phase"] == "stage").sum()), int((df["phase"] == "decode").sum())
    schedule = pd.DataFrame([config_to_dict(s) for s in chosen.schedule])
    schedule.index = schedule.index + 1
    top_cols = [c for c in (*DESCRIBE_COLUMNS, "eval_copy_rate", "eval_bertscore_f1", "eval_chrf", "eval_j",
                            "objective") if c in df]
    top = df.sort_values("objective", ascending=False, kind="stable").head(10)[top_cols]

    parts = [
        f"# Sweep analysis: {experiment.name}",
        "",
        f"- results: `{report.results_dir}`",
        f"- {report.n_trials} trials, {report.n_rows} rows ({n_stage} stage rows, {n_decode} decoding-penalty rows)",
        f"- disk use of the sweep: **{_human_bytes(report.disk_bytes)}** ({report.disk_bytes} bytes)",
        f"- objective: {_objective_text(experiment.sweep)}; chosen over every stage and decoding row "
        "(not the last checkpoint)",
        "",
        *(["## What the results lack", "",
           "Each line is a trial or row this analysis could not use; the choice below is made without it.", "",
           *[f"- {line}" for line in report.missing], ""] if report.missing else []),
        "## Best schedule",
        "",
        *([report.refusal_note, ""] if report.refusal_note else []),
        f"Trial `{best['trial_id']}`, ordering `{best['ordering']}`, after stage {int(best['stage_index'])} "
        f"(`{best.get('stage', '')}`), {best['phase']} row, toxic_penalty {label(float(best['toxic_penalty']))}, "
        f"copy_penalty {label(float(best['copy_penalty']))}: objective **{best['objective']:.4f}**"
        + _seed_text(best) + ".",
        "",
        schedule.to_markdown(),
        "",
        _checkpoint_text(report, experiment),
        "",
        *_reference_won(best),
        "## Reference points vs best",
        "",
        "The baseline (one `full` stage) and `untrained` (the base model with no stage trained, the same "
        "decoding grid; `sweep.untrained`) are reference points: always reported, and eligible as best.",
        "",
    ]
    if report.baseline is None:
        parts += ["The baseline trials have reported no row usable here (see what the results lack above)."
                  if experiment.sweep.include_baseline else
                  "No baseline trial in this sweep (`sweep.include_baseline: false`).", ""]
    if report.untrained is None:
        parts += ["The untrained trial has reported no row usable here (see what the results lack above)."
                  if experiment.sweep.untrained else "No untrained row in this sweep (`sweep.untrained: false`).", ""]
    parts += [_side_by_side(report.baseline, best, report.untrained).to_markdown(index=False, disable_numparse=True), ""]
    parts += [f"- {note}" for note in _side_by_side_notes(best, report.baseline, report.untrained)]
    parts += [""] if parts[-1] != "" else []
    if best_languages is not None:
        parts += ["## Best row per language", "", best_languages.to_markdown(floatfmt=".4f"), ""]
        if report.baseline is not None:
            base_table = language_table(df, report.baseline)
            parts += ["## Baseline per language", "", base_table.to_markdown(floatfmt=".4f"), ""]
    parts += [
        *(ablation_markdown(report.ablations, report.plots.get("ablations")) if report.ablations is not None else []),
        *_judge_section(report.results_dir),
        *_samples_section(report.results_dir, best, report.baseline, experiment.metrics.samples_per_lang),
        "## Variants ranked by mean objective across seeds (top 10, and the reference points)",
        "",
        _variants_table(report.variants).to_markdown(index=False, floatfmt=".4f"),
        "",
        "## Trials",
        "",
        _trials_table(df).to_markdown(floatfmt=".4f"),
        "",
        "## Top 10 rows by objective",
        "",
        top.to_markdown(index=False, floatfmt=".4f"),
        "",
        "## Plots",
        "",
    ]
    for name, path in report.plots.items():
        if name == "ablations" and path is not None:
            continue  # shown in its section
        parts.append(f"![{name}]({path.name})" if path is not None else f"- {name}: not drawn ({plot_notes[name]})")
    parts += [
        "",
        "## Disk use by entry",
        "",
        disk.to_markdown(),
        "",
        "## Best config (re-run with `raydetox train best_config.yaml`)",
        "",
        "```yaml",
        yaml_text(config_to_dict(chosen)).rstrip(),
        "```",
        "",
    ]
    return "\n".join(parts)

