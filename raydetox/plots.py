"""Plots of a sweep's results table (PNG files only, never a display): per-stage curves, the copy-rate vs
BERTScore frontier, decoding-penalty heat maps."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raydetox.selection import baseline_mask, pareto_front, untrained_mask


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def label(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:g}"


# Up to this many trials of one ordering are each named in the stage-curve legend; above _LINE_TRIALS
# an ordering is drawn as its median and a band (thousands of lines take minutes to draw).
_LEGEND_TRIALS = 6
_LINE_TRIALS = 50


def plot_stage_curves(
    df: pd.DataFrame, path: str | os.PathLike[str], copy_rate_bound: float | None = None,
    untrained: pd.Series | None = None,
) -> Path:
    """Per-stage copy rate and BERTScore, one line per trial, coloured by ordering (PNG); ``untrained``
    (a row of the untrained base) is drawn as a level line, what no stage has been trained yet gives."""
    stages = df[df["phase"] == "stage"]
    if stages.empty:
        raise ValueError("no stage rows to plot")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    orderings = sorted(stages["ordering"].astype(str).unique())
    colors = {o: plt.cm.tab10(i % 10) for i, o in enumerate(orderings)}
    trials_per_ordering = stages.groupby("ordering")["trial_id"].nunique()
    for ax, metric, title in zip(axes, ("eval_copy_rate", "eval_bertscore_f1"), ("copy rate", "BERTScore F1")):
        labelled: set[str] = set()
        many = {o for o, n in trials_per_ordering.items() if n > _LINE_TRIALS}
        for ordering in sorted(map(str, many)):  # a band (10–90 %) and the median instead of every line
            per_stage = stages[stages["ordering"].astype(str) == ordering].groupby("stage_index")[metric]
            q = per_stage.quantile([0.1, 0.5, 0.9]).unstack()
            ax.fill_between(q.index, q[0.1], q[0.9], color=colors[ordering], alpha=0.2)
            ax.plot(q.index, q[0.5], marker="o", color=colors[ordering],
                    label=f"{ordering} (median, 10–90 % of {trials_per_ordering[ordering]} trials)")
        for trial_id, trial in stages[~stages["ordering"].isin(many)].groupby("trial_id", sort=True):
            ordering = str(trial["ordering"].iloc[0])
            n = trials_per_ordering[ordering]
            if n <= _LEGEND_TRIALS:
                name = ordering if n == 1 else f"{ordering} ({trial_id})"
            else:  # hundreds of trials: one legend entry per ordering, not one per trial
                name = "_nolegend_" if ordering in labelled else f"{ordering} ({n} trials)"
                labelled.add(ordering)
            ax.plot(trial["stage_index"], trial[metric], marker="o", color=colors[ordering], label=name,
                    alpha=1.0 if n <= _LEGEND_TRIALS else 0.3)
        if metric == "eval_copy_rate" and copy_rate_bound is not None:
            ax.axhline(copy_rate_bound, color="grey", linestyle="--", linewidth=1, label="copy-rate bound")
        if untrained is not None and metric in untrained:
            ax.axhline(float(untrained[metric]), color="black", linestyle=":", linewidth=1.2,
                       label=f"untrained (tox {label(float(untrained['toxic_penalty']))}, "
                             f"copy {label(float(untrained['copy_penalty']))})")
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
    kind = pd.Series("curriculum", index=data.index).mask(baseline_mask(data), "baseline")
    kind = kind.mask(untrained_mask(data), "untrained")
    for phase, marker in (("stage", "o"), ("decode", "^")):
        for who, color in (("curriculum", "tab:blue"), ("baseline", "tab:grey"), ("untrained", "black")):
            part = data[(data["phase"] == phase) & (kind == who)]
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

    ``trial_id`` picks one trial; otherwise each cell is the mean over the trained non-baseline trials.
    """
    decode = df[df["phase"] == "decode"]
    if trial_id is not None:
        decode = decode[decode["trial_id"] == trial_id]
        scope = f"trial {trial_id}"
    else:
        decode = decode[~baseline_mask(decode) & ~untrained_mask(decode)]
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
        ax.set_xticks(range(grid.shape[1]), [label(v) for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [label(v) for v in grid.index])
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


def plot_ablation_effects(effects: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Each ablated factor's effect (on − off) with its paired sentence interval (error bar; green: "on" is
    significantly better, red: worse, grey: neither) and its interval across seeds (a blue line, from two
    seeds), one panel per metric (PNG)."""
    effects = effects.dropna(subset=["effect"])
    if effects.empty:
        raise ValueError("no ablation effect to plot (no matched pair of rows yet)")
    plt = _pyplot()
    metrics = list(dict.fromkeys(effects["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.6 + 0.7 * effects["factor"].nunique()),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = effects[effects["metric"] == metric].reset_index(drop=True)
        y = np.arange(len(rows))
        est = rows["effect"].to_numpy(float)
        low, high = rows["sentence_low"].to_numpy(float), rows["sentence_high"].to_numpy(float)
        err = np.vstack([est - low, high - est])
        better = (high < 0) if metric == "copy_rate" else (low > 0)
        worse = (low > 0) if metric == "copy_rate" else (high < 0)
        colors = np.where(better, "tab:green", np.where(worse, "tab:red", "tab:grey"))
        ax.barh(y, est, color=colors, alpha=0.7)
        ax.errorbar(est, y, xerr=np.where(np.isfinite(err), err, 0), fmt="none", ecolor="black", capsize=4)
        seeds = np.isfinite(rows["seed_low"].to_numpy(float))
        if seeds.any():
            ax.hlines(y[seeds] + 0.3, rows["seed_low"][seeds], rows["seed_high"][seeds], color="tab:blue",
                      label="across seeds")
            ax.legend(fontsize=7, loc="best")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, rows["factor"])
        ax.set_xlabel(f"{metric}: on − off")
        ax.set_title(metric + (" (lower is better)" if metric == "copy_rate" else ""))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("ablation effects, 95% paired intervals over sentences")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


