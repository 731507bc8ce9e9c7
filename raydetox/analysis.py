"""Sweep results → one DataFrame, the best schedule under the objective, plots and a markdown report.

Results are read straight from the Tune experiment directory (each trial dir's ``result.json`` JSON lines
and ``params.json``), so no Ray session is needed and a running, partially finished or restored sweep
can be analysed. Every stage row and every decoding-penalty row is a candidate for "best": the choice is
made explicitly by :func:`objective_value` (the single definition the sweep also reports), never by the
last checkpoint (transformers#16683).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raydetox.config import ExperimentConfig, StageConfig, SweepConfig, config_to_dict, dump_config, load_config

RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
EXPERIMENT_FILE = "experiment.yaml"
PHASES = ("stage", "decode")
# A report must carry these to be a row; Tune-only or non-rank-0 reports lack ``phase`` and are skipped.
KEY_COLUMNS = ("trial_id", "phase", "stage_index", "toxic_penalty", "copy_penalty")
SUMMARY_METRICS = (
    "eval_copy_rate",
    "eval_copy_rate_loose",
    "eval_exact_match",
    "eval_bleu",
    "eval_chrf",
    "eval_bertscore_f1",
    "eval_bertscore_src_f1",
    "eval_toxicity",
    "eval_j",
    "eval_loss",
    "eval_perplexity",
    "objective",
)
DESCRIBE_COLUMNS = ("trial_id", "ordering", "phase", "stage_index", "stage", "toxic_penalty", "copy_penalty")
_LANG_METRIC = re.compile(r"^(?P<metric>eval_[^/]+)/(?P<lang>[^/]+)$")


# --------------------------------------------------------------------------------------------- objective


def objective_value(metrics: Mapping[str, Any], cfg: SweepConfig, prefix: str = "eval_") -> float:
    """The sweep objective (higher is better) of one row of metrics — THE definition used everywhere.

    ``bertscore_copy_bound``: BERTScore F1 when the copy rate is within ``cfg.copy_rate_bound``, else
    ``BERTScore - 1 - (copy_rate - bound)``, so any feasible row beats every infeasible one and infeasible
    rows are ranked by how far they overshoot. ``j`` / ``chrf``: the J score / corpus chrF.
    """

    def get(name: str) -> float:
        key = prefix + name
        if key not in metrics:
            raise KeyError(f"objective {cfg.objective!r} needs metric {key!r}; row has {sorted(metrics)[:20]}")
        return float(metrics[key])

    if cfg.objective == "bertscore_copy_bound":
        bertscore, copy_rate = get("bertscore_f1"), get("copy_rate")
        if copy_rate <= cfg.copy_rate_bound:
            return bertscore
        return bertscore - 1.0 - (copy_rate - cfg.copy_rate_bound)
    if cfg.objective == "j":
        return get("j")
    if cfg.objective == "chrf":
        return get("chrf")
    raise ValueError(f"sweep.objective: unknown objective {cfg.objective!r}")


def objective_column(df: pd.DataFrame, cfg: SweepConfig) -> pd.Series:
    """:func:`objective_value` of every row (NaN where a needed metric is NaN)."""
    values = [objective_value(row, cfg) for row in df.to_dict("records")]
    return pd.Series(values, index=df.index, name="objective", dtype=float)


# ------------------------------------------------------------------------------------------------ loading


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``a/b`` keys (as Tune's DataFrames do); lists → JSON text so parquet can store them."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            out.update(_flatten(item, name + "/"))
        elif isinstance(item, (list, tuple)):
            out[name] = json.dumps(item, sort_keys=True)
        else:
            out[name] = item
    return out


def _read_json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of a ``result.json``; an unfinished last line (trial still writing) is skipped."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                break  # Tune writes whole lines; a partial last one is a write in progress
            raise ValueError(f"{path}:{number}: not a JSON object: {err}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    return rows


def trial_schedule(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The schedule a trial ran, from its Tune config: ``schedule`` (results contract) or the sweep's
    ``variant`` (+ sampled per-stage ``lr_i``, applied by :func:`raydetox.sweep.trial_schedule`)."""
    if "schedule" in config:
        return [dict(s) for s in config["schedule"]]
    if "variant" in config and "schedule" in config["variant"]:
        from raydetox.sweep import trial_schedule as sweep_trial_schedule

        return sweep_trial_schedule(dict(config))
    raise KeyError(f"trial config has no 'schedule' (nor 'variant.schedule'); keys: {sorted(config)}")


def _trial_dirs(results_dir: Path) -> list[Path]:
    return sorted(p for p in results_dir.iterdir() if p.is_dir() and (p / RESULT_FILE).is_file())


def _trial_config(trial_dir: Path, lines: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    params = trial_dir / PARAMS_FILE
    if params.is_file():
        try:
            config = json.loads(params.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{params}: invalid JSON: {err}") from None
    else:  # every Tune result line also carries the config
        config = next((obj["config"] for _, obj in reversed(lines) if isinstance(obj.get("config"), dict)), {})
    if not isinstance(config, dict):
        raise ValueError(f"{params}: expected a JSON object (the trial config)")
    return config


def load_results(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every contract row of a Tune experiment dir as one DataFrame, each row exactly once.

    One row per report carrying a ``phase``; the trial config is flattened into ``config/...`` columns and
    the schedule the trial ran is added as JSON text in ``schedule``. A resumed trial that reports a stage
    again keeps only its LAST report per (trial_id, phase, stage_index, toxic_penalty, copy_penalty).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: results directory not found")
    trial_dirs = _trial_dirs(results_dir)
    if not trial_dirs:
        raise FileNotFoundError(f"{results_dir}: no trial directories containing {RESULT_FILE}")
    records: list[dict[str, Any]] = []
    for trial_dir in trial_dirs:
        path = trial_dir / RESULT_FILE
        lines = _read_json_lines(path)
        config = _trial_config(trial_dir, lines)
        config_cols = {f"config/{k}": v for k, v in _flatten(config).items()}
        try:
            schedule = json.dumps(trial_schedule(config)) if config else None
        except KeyError as err:
            raise ValueError(f"{trial_dir / PARAMS_FILE}: {err.args[0]}") from None
        for number, obj in lines:
            if obj.get("phase") is None:
                continue
            if obj["phase"] not in PHASES:
                raise ValueError(f"{path}:{number}: key 'phase': expected one of {PHASES}, got {obj['phase']!r}")
            missing = [k for k in KEY_COLUMNS if obj.get(k) is None]
            if missing:
                raise ValueError(f"{path}:{number}: row is missing key(s) {missing}")
            row = _flatten({k: v for k, v in obj.items() if k != "config"})
            for key in ("ordering", "is_baseline"):  # the contract puts them in rows; older rows: the config
                if key not in row:
                    row[key] = config.get(key, config.get("variant", {}).get(key))
            records.append({**row, **config_cols, "schedule": schedule, "trial_dir": trial_dir.name})
    if not records:
        raise ValueError(f"{results_dir}: the trials have not reported any stage or decode row yet")
    df = pd.DataFrame.from_records(records)
    df["stage_index"] = df["stage_index"].astype(int)
    for col in ("toxic_penalty", "copy_penalty"):
        df[col] = df[col].astype(float)
    df = df.drop_duplicates(list(KEY_COLUMNS), keep="last")
    order = df["phase"].map({p: i for i, p in enumerate(PHASES)})
    df = df.assign(_phase_order=order).sort_values(
        ["trial_id", "_phase_order", "stage_index", "toxic_penalty", "copy_penalty"], kind="stable"
    )
    return df.drop(columns="_phase_order").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- selection


def _baseline_mask(df: pd.DataFrame) -> pd.Series:
    if "is_baseline" not in df:
        return pd.Series(False, index=df.index)
    return df["is_baseline"].map(lambda v: v is True or v == 1)


def best_row(df: pd.DataFrame, cfg: SweepConfig) -> pd.Series:
    """The row (stage or decode) with the highest objective, recomputed from its metrics under ``cfg``."""
    if df.empty:
        raise ValueError("no result rows to choose from")
    scores = objective_column(df, cfg)
    if scores.isna().all():
        raise ValueError(f"objective {cfg.objective!r} is NaN on every row (metrics missing or NaN)")
    row = df.loc[scores.idxmax()].copy()
    row["objective"] = scores[scores.idxmax()]
    return row


def baseline_row(df: pd.DataFrame, cfg: SweepConfig) -> pd.Series | None:
    """The reference point: the baseline trials' best stage row (default decoding), or ``None``."""
    base = df[_baseline_mask(df)]
    stage_rows = base[base["phase"] == "stage"]
    candidates = stage_rows if len(stage_rows) else base
    return best_row(candidates, cfg) if len(candidates) else None


def best_config(experiment: ExperimentConfig, row: pd.Series) -> ExperimentConfig:
    """The experiment re-runnable as the best row: its trial's schedule up to the row's stage, its penalties.

    A stage row at stage k means the model after the first k stages was best, so the schedule is cut there.
    """
    if not isinstance(row.get("schedule"), str):
        raise ValueError(f"trial {row.get('trial_id')}: no schedule recorded in its config")
    schedule = json.loads(row["schedule"])[: int(row["stage_index"])]
    stages = [StageConfig(**{k: s[k] for k in ("stage", "epochs", "lr") if k in s}) for s in schedule]
    decoding = dataclasses.replace(
        experiment.decoding, toxic_penalty=float(row["toxic_penalty"]), copy_penalty=float(row["copy_penalty"])
    )
    lora = experiment.lora
    lora_r = row.get("config/lora_r")
    if lora is not None and lora_r is not None and not pd.isna(lora_r):
        lora = dataclasses.replace(lora, r=int(lora_r))
    return dataclasses.replace(experiment, schedule=stages, decoding=decoding, lora=lora)


def per_language_table(df: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """Metrics × languages of one row (from ``eval_<metric>/<lang>`` columns), plus the overall ``all``."""
    cells: dict[str, dict[str, float]] = {}
    for col in df.columns:
        match = _LANG_METRIC.match(str(col))
        if match:
            cells.setdefault(match["metric"], {})[match["lang"]] = row.get(col, np.nan)
    if not cells:
        raise ValueError("no per-language metric columns (eval_<metric>/<lang>) in the results")
    table = pd.DataFrame.from_dict(cells, orient="index").astype(float)
    table = table[sorted(table.columns)].dropna(axis=1, how="all")
    table.insert(len(table.columns), "all", [float(row.get(m, np.nan)) for m in table.index])
    table.index.name = "metric"
    return table


def pareto_front(df: pd.DataFrame, x: str = "eval_copy_rate", y: str = "eval_bertscore_f1") -> pd.DataFrame:
    """Rows not dominated when minimising ``x`` and maximising ``y`` (NaN rows ignored), sorted by ``x``."""
    data = df.dropna(subset=[x, y])
    xs, ys = data[x].to_numpy(float), data[y].to_numpy(float)
    # j dominates i: no worse on both and strictly better on one.
    no_worse = (xs[None, :] <= xs[:, None]) & (ys[None, :] >= ys[:, None])
    better = (xs[None, :] < xs[:, None]) | (ys[None, :] > ys[:, None])
    dominated = (no_worse & better).any(axis=1)
    return data[~dominated].sort_values([x, y], ascending=[True, False], kind="stable")


def disk_usage(path: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = ()) -> int:
    """Bytes of all files under ``path`` (symlinks not followed), skipping the ``exclude`` subtrees."""
    skip = {Path(p).resolve() for p in exclude}
    total = 0
    stack = [Path(path)]
    while stack:
        current = stack.pop()
        if current.resolve() in skip:
            continue
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


# ------------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _label(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:g}"


def plot_stage_curves(
    df: pd.DataFrame, path: str | os.PathLike[str], copy_rate_bound: float | None = None
) -> Path:
    """Per-stage copy rate and BERTScore, one line per trial, coloured by ordering (PNG)."""
    stages = df[df["phase"] == "stage"]
    if stages.empty:
        raise ValueError("no stage rows to plot")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    orderings = sorted(stages["ordering"].astype(str).unique())
    colors = {o: plt.cm.tab10(i % 10) for i, o in enumerate(orderings)}
    trials_per_ordering = stages.groupby("ordering")["trial_id"].nunique()
    for ax, metric, title in zip(axes, ("eval_copy_rate", "eval_bertscore_f1"), ("copy rate", "BERTScore F1")):
        for trial_id, trial in stages.groupby("trial_id", sort=True):
            ordering = str(trial["ordering"].iloc[0])
            label = ordering if trials_per_ordering[ordering] == 1 else f"{ordering} ({trial_id})"
            ax.plot(trial["stage_index"], trial[metric], marker="o", color=colors[ordering], label=label)
        if metric == "eval_copy_rate" and copy_rate_bound is not None:
            ax.axhline(copy_rate_bound, color="grey", linestyle="--", linewidth=1, label="copy-rate bound")
        ax.set_xlabel("stages completed")
        ax.set_ylabel(title)
        ax.set_title(f"{title} after each stage")
        ax.set_xticks(sorted(stages["stage_index"].unique()))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_pareto(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    best: pd.Series | None = None,
    copy_rate_bound: float | None = None,
) -> Path:
    """Copy rate vs BERTScore of every row with the Pareto frontier (min copy, max BERTScore) (PNG)."""
    data = df.dropna(subset=["eval_copy_rate", "eval_bertscore_f1"])
    if data.empty:
        raise ValueError("no rows with both eval_copy_rate and eval_bertscore_f1")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    is_base = _baseline_mask(data)
    for phase, marker in (("stage", "o"), ("decode", "^")):
        for base, color, who in ((False, "tab:blue", "curriculum"), (True, "tab:grey", "baseline")):
            part = data[(data["phase"] == phase) & (is_base == base)]
            if len(part):
                ax.scatter(part["eval_copy_rate"], part["eval_bertscore_f1"], marker=marker, color=color,
                           alpha=0.7, label=f"{who}, {phase} rows")
    front = pareto_front(data)
    ax.step(front["eval_copy_rate"], front["eval_bertscore_f1"], where="post", color="tab:red", label="Pareto front")
    if copy_rate_bound is not None:
        ax.axvline(copy_rate_bound, color="grey", linestyle="--", linewidth=1, label="copy-rate bound")
    if best is not None:
        ax.scatter([best["eval_copy_rate"]], [best["eval_bertscore_f1"]], marker="*", s=250, color="gold",
                   edgecolor="black", zorder=5, label="best (objective)")
    ax.set_xlabel("copy rate (lower is better)")
    ax.set_ylabel("BERTScore F1 (higher is better)")
    ax.set_title("copy rate vs BERTScore")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_penalty_heatmap(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    trial_id: str | None = None,
    metrics: Sequence[str] = ("eval_copy_rate", "eval_bertscore_f1", "objective"),
) -> Path:
    """Decode rows as toxic-penalty × copy-penalty heat maps, one panel per metric (PNG).

    ``trial_id`` picks one trial; otherwise each cell is the mean over the non-baseline trials.
    """
    decode = df[df["phase"] == "decode"]
    if trial_id is not None:
        decode = decode[decode["trial_id"] == trial_id]
        scope = f"trial {trial_id}"
    else:
        decode = decode[~_baseline_mask(decode)]
        scope = f"mean over {decode['trial_id'].nunique()} trials"
    metrics = [m for m in metrics if m in decode]
    if decode.empty or not metrics:
        raise ValueError(f"no decode rows to plot ({scope})")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        grid = decode.pivot_table(index="toxic_penalty", columns="copy_penalty", values=metric, aggfunc="mean")
        grid = grid.sort_index().sort_index(axis=1)
        image = ax.imshow(grid.to_numpy(float), cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(grid.shape[1]), [_label(v) for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [_label(v) for v in grid.index])
        for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
            if not np.isnan(value):
                dark = image.norm(value) < 0.5  # viridis is dark at the low end
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if dark else "black", fontsize=8)
        ax.set_xlabel("copy penalty")
        ax.set_ylabel("toxic penalty")
        ax.set_title(metric)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"decoding penalties ({scope})")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# ------------------------------------------------------------------------------------------------ report


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

    def summary(self) -> str:
        """A few lines for the CLI."""
        best = self.best
        lines = [
            f"{self.n_rows} rows from {self.n_trials} trials in {self.results_dir} "
            f"({_human_bytes(self.disk_bytes)} on disk)",
            f"best: trial {best['trial_id']} {best['ordering']} after stage {int(best['stage_index'])} "
            f"({best['phase']}, toxic_penalty {_label(float(best['toxic_penalty']))}, copy_penalty "
            f"{_label(float(best['copy_penalty']))}): objective {best['objective']:.4f}, "
            f"copy rate {best.get('eval_copy_rate', np.nan):.3f}, BERTScore {best.get('eval_bertscore_f1', np.nan):.4f}",
        ]
        if self.baseline is not None:
            base = self.baseline
            lines.append(
                f"baseline: objective {base['objective']:.4f}, copy rate {base.get('eval_copy_rate', np.nan):.3f}, "
                f"BERTScore {base.get('eval_bertscore_f1', np.nan):.4f}"
            )
        lines += [f"best config: {self.best_config}", f"report: {self.report}"]
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
        return "" if np.isnan(value) else _label(float(value)) if math.isinf(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def _side_by_side(baseline: pd.Series | None, best: pd.Series) -> pd.DataFrame:
    rows = []
    for key in (*DESCRIBE_COLUMNS, *SUMMARY_METRICS):
        if key not in best.index:
            continue
        base_value = baseline.get(key) if baseline is not None else None
        delta = ""
        if key in SUMMARY_METRICS and base_value is not None:
            delta = _fmt(float(best[key]) - float(base_value))
        rows.append({"": key, "baseline": _fmt(base_value), "best": _fmt(best[key]), "best − baseline": delta})
    return pd.DataFrame(rows)


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


def _checkpoint_of(df: pd.DataFrame, row: pd.Series) -> str | None:
    """The checkpoint holding the weights of ``row`` (decode rows use their trial's last stage checkpoint)."""
    if "checkpoint_path" not in df:
        return None
    same = df[(df["trial_id"] == row["trial_id"]) & (df["phase"] == "stage")
              & (df["stage_index"] == row["stage_index"])]
    paths = same["checkpoint_path"].dropna()
    return str(paths.iloc[-1]) if len(paths) else None


def _disk_breakdown(results_dir: Path, exclude: Sequence[Path]) -> pd.DataFrame:
    """Bytes per top-level entry (trial directories summed into one line): where the disk went."""
    skip = {p.resolve() for p in exclude}
    trial_dirs = set(_trial_dirs(results_dir))
    sizes: dict[str, int] = {}
    for child in sorted(results_dir.iterdir()):
        if child.resolve() in skip:
            continue
        is_dir = child.is_dir() and not child.is_symlink()
        size = disk_usage(child, exclude) if is_dir else child.lstat().st_size
        name = f"trial directories ({len(trial_dirs)})" if child in trial_dirs else child.name + ("/" if is_dir else "")
        sizes[name] = sizes.get(name, 0) + size
    table = pd.Series(sizes, dtype="int64").sort_values(ascending=False)
    return pd.DataFrame({"bytes": table, "size": table.map(_human_bytes)}).rename_axis("entry")


def analyze(
    results_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> AnalysisReport:
    """Load a sweep's results, choose the best row, write tables, plots, best_config.yaml and report.md.

    ``out_dir`` defaults to ``RESULTS_DIR/analysis``; ``config`` to ``RESULTS_DIR/experiment.yaml`` (the
    sweep's objective and the base of the re-runnable best config). The objective is recomputed from each
    row's metrics with :func:`objective_value`. Prints nothing.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "analysis"
    config_path = Path(config) if config is not None else results_dir / EXPERIMENT_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: experiment config not found (raydetox sweep writes it beside the "
                                f"trial directories; analyze(config=...) takes another path)")
    experiment = load_config(config_path)
    sweep = experiment.sweep
    # Measured before writing, and without a previous analysis, so it is the sweep's own footprint.
    disk_bytes = disk_usage(results_dir, exclude=[out_dir])
    df = load_results(results_dir)
    df["objective"] = objective_column(df, sweep)
    best = best_row(df, sweep)
    baseline = baseline_row(df, sweep)
    out_dir.mkdir(parents=True, exist_ok=True)

    results_parquet, results_csv = out_dir / "results.parquet", out_dir / "results.csv"
    df.to_parquet(results_parquet, index=False)
    df.to_csv(results_csv, index=False)
    chosen = best_config(experiment, best)
    best_yaml = out_dir / "best_config.yaml"
    dump_config(chosen, best_yaml)

    per_language_path: Path | None = None
    language_table: pd.DataFrame | None = None
    if any(_LANG_METRIC.match(str(c)) for c in df.columns):
        language_table = per_language_table(df, best)
        per_language_path = out_dir / "per_language.csv"
        language_table.to_csv(per_language_path)

    bound = sweep.copy_rate_bound if sweep.objective == "bertscore_copy_bound" else None
    best_decoded = bool(((df["trial_id"] == best["trial_id"]) & (df["phase"] == "decode")).any())
    plot_jobs = {
        "stage_curves": lambda p: plot_stage_curves(df, p, copy_rate_bound=bound),
        "pareto": lambda p: plot_pareto(df, p, best=best, copy_rate_bound=bound),
        "penalty_heatmap": lambda p: plot_penalty_heatmap(df, p, trial_id=best["trial_id"] if best_decoded else None),
    }
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
    )
    report_path.write_text(
        _report_markdown(report, df, experiment, chosen, language_table, plot_notes,
                         _disk_breakdown(results_dir, [out_dir])),
        encoding="utf-8",
    )
    return report


def _objective_text(cfg: SweepConfig) -> str:
    if cfg.objective == "bertscore_copy_bound":
        return (f"`bertscore_copy_bound`: BERTScore F1 when copy rate ≤ {cfg.copy_rate_bound:g}, else "
                f"BERTScore − 1 − (copy rate − {cfg.copy_rate_bound:g}) (any feasible row beats every infeasible one)")
    return f"`{cfg.objective}`: eval_{cfg.objective} (higher is better)"


def _report_markdown(
    report: AnalysisReport,
    df: pd.DataFrame,
    experiment: ExperimentConfig,
    chosen: ExperimentConfig,
    language_table: pd.DataFrame | None,
    plot_notes: dict[str, str],
    disk: pd.DataFrame,
) -> str:
    best = report.best
    n_stage, n_decode = int((df["phase"] == "stage").sum()), int((df["phase"] == "decode").sum())
    checkpoint = _checkpoint_of(df, best)
    if checkpoint is not None and "://" not in checkpoint and not Path(checkpoint).exists():
        checkpoint += " (no longer on disk: removed by checkpoint retention; re-run best_config.yaml)"
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
        "## Best schedule",
        "",
        f"Trial `{best['trial_id']}`, ordering `{best['ordering']}`, after stage {int(best['stage_index'])} "
        f"(`{best.get('stage', '')}`), {best['phase']} row, toxic_penalty {_label(float(best['toxic_penalty']))}, "
        f"copy_penalty {_label(float(best['copy_penalty']))}: objective **{best['objective']:.4f}**.",
        "",
        schedule.to_markdown(),
        "",
        f"Checkpoint: `{checkpoint}`" if checkpoint else "Checkpoint: none recorded for this row.",
        "",
        "## Baseline vs best",
        "",
    ]
    if report.baseline is None:
        parts += ["No baseline trial in this sweep (`sweep.include_baseline: false`).", ""]
    parts += [_side_by_side(report.baseline, best).to_markdown(index=False, disable_numparse=True), ""]
    if language_table is not None:
        parts += ["## Best row per language", "", language_table.to_markdown(floatfmt=".4f"), ""]
        if report.baseline is not None:
            base_table = per_language_table(df, report.baseline)
            parts += ["## Baseline per language", "", base_table.to_markdown(floatfmt=".4f"), ""]
    parts += [
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
        yaml.safe_dump(config_to_dict(chosen), sort_keys=False, allow_unicode=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(parts)
