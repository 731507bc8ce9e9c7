"""Choosing from a sweep's results table: the best row under the objective, the baseline's row, the
re-runnable config of a row, a row's metrics per language, the Pareto front, disk use.

Every stage row and every decoding-penalty row is a candidate for "best": the choice is made explicitly
by :func:`raydetox.results.objective_value` (the single definition the sweep also reports), never by
the last checkpoint (transformers#16683).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raydetox.config import ExperimentConfig, StageConfig, SweepConfig
from raydetox.errors import ResultsError
from raydetox.results import objective_column
from raydetox.stats import seed_summary

_LANG_METRIC = re.compile(r"^(?P<metric>eval_[^/]+)/(?P<lang>[^/]+)$")


def baseline_mask(df: pd.DataFrame) -> pd.Series:
    if "is_baseline" not in df:
        return pd.Series(False, index=df.index)
    return df["is_baseline"].map(lambda v: v is True or v == 1)


class NoEligibleRowError(ResultsError):
    """Every row is refused by the objective (degenerate share above ``sweep.max_degenerate_rate``)."""


# Where a row sits in its trial; with the trial's config (minus its seed) it names a variant's row.
ROW_POSITION: tuple[str, ...] = ("phase", "stage_index", "toxic_penalty", "copy_penalty")


def variant_key(df: pd.DataFrame) -> pd.Series:
    """A key shared by the rows of one variant across seeds: the trial config except its seed, and the
    row's position (phase, stage, penalties). Without seeds every trial is its own variant."""
    columns = sorted(c for c in df.columns if str(c).startswith("config/") and c != "config/seed")
    columns += [c for c in ROW_POSITION if c in df]
    return df[columns].astype(str).agg("\x1f".join, axis=1).rename("variant_key")


def rank_variants(df: pd.DataFrame, cfg: SweepConfig) -> pd.DataFrame:
    """One row per variant row: the objective's mean, std, number of seeds and 95% t-interval across
    seeds, the trials, and the variant's description; sorted by the mean (best first).

    A variant is ranked by its mean over seeds, never by its luckiest run; a seed whose row is refused
    (``-inf``, e.g. degenerate outputs) makes the whole variant refused.
    """
    if df.empty:
        raise ResultsError("no result rows to choose from")
    frame = pd.DataFrame({"variant_key": variant_key(df), "objective": objective_column(df, cfg)})
    summary = seed_summary(frame, "variant_key", ["objective"]).drop(columns="metric")
    summary = summary.rename(columns={c: f"objective_{c}" for c in ("mean", "std", "n", "low", "high")})
    first = df.assign(variant_key=frame["variant_key"]).groupby("variant_key", sort=False)
    describe = first[[c for c in ("ordering", *ROW_POSITION, "stage", "is_baseline") if c in df]].first()
    describe["trials"] = first["trial_id"].agg(lambda ids: ",".join(sorted(map(str, ids))))
    ranked = summary.merge(describe, left_on="variant_key", right_index=True)
    return ranked.sort_values("objective_mean", ascending=False, kind="stable").reset_index(drop=True)


def best_row(df: pd.DataFrame, cfg: SweepConfig) -> pd.Series:
    """The best variant's row (stage or decode) under the objective, recomputed from its metrics under
    ``cfg``: the variant with the highest MEAN objective across seeds. The row returned is that variant's
    lowest-seed run, with ``objective`` set to the mean and ``objective_std|n|low|high`` and ``trials``."""
    ranked = rank_variants(df, cfg)
    if ranked["objective_mean"].isna().all():
        raise ResultsError(f"objective {cfg.objective!r} is NaN on every row (metrics missing or NaN)")
    eligible = ranked[np.isfinite(ranked["objective_mean"].to_numpy(float))]
    if eligible.empty:
        raise NoEligibleRowError(
            f"every row is refused by the objective: degenerate share above sweep.max_degenerate_rate "
            f"({cfg.max_degenerate_rate:g}) in every variant (set sweep.degenerate_action: penalise to rank them)"
        )
    top = eligible.iloc[0]
    members = df[variant_key(df) == top["variant_key"]]
    order = members.sort_values("seed", kind="stable") if "seed" in members else members
    row = order.iloc[0].copy()
    for col in ("objective_mean", "objective_std", "objective_n", "objective_low", "objective_high", "trials"):
        row[col] = top[col]
    row["objective"] = top["objective_mean"]
    return row


def baseline_row(df: pd.DataFrame, cfg: SweepConfig) -> pd.Series | None:
    """The reference point: the baseline trials' best stage row (default decoding), or ``None``."""
    base = df[baseline_mask(df)]
    stage_rows = base[base["phase"] == "stage"]
    candidates = stage_rows if len(stage_rows) else base
    return best_row(candidates, cfg) if len(candidates) else None


def best_config(experiment: ExperimentConfig, row: pd.Series) -> ExperimentConfig:
    """The experiment re-runnable as the best row: its trial's schedule up to the row's stage, its penalties.

    A stage row at stage k means the model after the first k stages was best, so the schedule is cut there.
    """
    if not isinstance(row.get("schedule"), str):
        raise ResultsError(f"trial {row.get('trial_id')}: no schedule recorded in its config")
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


def has_language_columns(df: pd.DataFrame) -> bool:
    """Whether the results carry per-language metrics (``eval_<metric>/<lang>`` columns)."""
    return any(_LANG_METRIC.match(str(c)) for c in df.columns)


def language_table(df: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """Metrics × languages of one row (from ``eval_<metric>/<lang>`` columns), plus the overall ``all``."""
    cells: dict[str, dict[str, float]] = {}
    for col in df.columns:
        match = _LANG_METRIC.match(str(col))
        if match:
            cells.setdefault(match["metric"], {})[match["lang"]] = row.get(col, np.nan)
    if not cells:
        raise ResultsError("no per-language metric columns (eval_<metric>/<lang>) in the results")
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


