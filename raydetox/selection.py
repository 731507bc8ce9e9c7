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
from raydetox.results import objective_column

_LANG_METRIC = re.compile(r"^(?P<metric>eval_[^/]+)/(?P<lang>[^/]+)$")


def baseline_mask(df: pd.DataFrame) -> pd.Series:
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
    base = df[baseline_mask(df)]
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


