"""Choosing from a sweep's results table: the best row under the objective, the baseline's row, the
re-runnable config of a row, the checkpoint holding a row's weights (and those of its other seeds), a
row's metrics per language, the Pareto front, disk use.

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
from raydetox.results import (
    CHECKPOINT_GLOB,
    DESCRIBE_COLUMNS,
    STATE_FILE,
    TRAIN_DIR,
    objective_column,
    train_run_name,
    trial_dir_name,
)
from raydetox.stats import seed_summary

_LANG_METRIC = re.compile(r"^(?P<metric>eval_[^/]+)/(?P<lang>[^/]+)$")


def _flag(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df:
        return pd.Series(False, index=df.index)
    return df[column].map(lambda v: v is True or v == 1)


def baseline_mask(df: pd.DataFrame) -> pd.Series:
    """Rows of the baseline trials (one ``full`` stage)."""
    return _flag(df, "is_baseline")


def untrained_mask(df: pd.DataFrame) -> pd.Series:
    """Rows of the ``untrained`` variant (the base model, no stage trained)."""
    return _flag(df, "is_untrained")


class NoEligibleRowError(ResultsError):
    """Every row is refused by the objective (degenerate share above ``sweep.max_degenerate_rate``)."""


# Where a row sits in its trial; with the trial's config (minus its seed) it names a variant's row.
ROW_POSITION: tuple[str, ...] = ("phase", "stage_index", "toxic_penalty", "copy_penalty")


def _variant_columns(df: pd.DataFrame) -> list[str]:
    columns = sorted(c for c in df.columns if str(c).startswith("config/") and not _is_seed_column(str(c)))
    return columns + [c for c in ROW_POSITION if c in df]


def _variant_token(value: object) -> str:
    # numpy scalars as Python values: a row taken with .loc and one from iterrows must give one key
    if _missing(value):
        return "<missing>"
    return repr(value.item() if isinstance(value, np.generic) else value)


def _key_of(values: pd.Series, columns: list[str]) -> str:
    return "\x1f".join(_variant_token(values.get(c)) for c in columns)


def variant_key(df: pd.DataFrame) -> pd.Series:
    """A key shared by the rows of one variant across seeds: the trial config except its seed, and the
    row's position (phase, stage, penalties). Without seeds every trial is its own variant; a column a
    trial lacks counts as a difference."""
    # Tokens of each column's distinct values only (a sweep of a thousand trials has 100k rows).
    parts = []
    for column in _variant_columns(df):
        codes, uniques = pd.factorize(df[column], use_na_sentinel=True)
        tokens = np.array([_variant_token(u) for u in uniques] + ["<missing>"], dtype=object)
        parts.append(tokens[codes])  # code -1 (NaN/None) takes the last token
    keys = ["\x1f".join(values) for values in zip(*parts)] if parts else [""] * len(df)
    return pd.Series(keys, index=df.index, dtype=object, name="variant_key")


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
    describe = first[[c for c in ("ordering", *ROW_POSITION, "stage", "is_baseline", "is_untrained") if c in df]].first()
    describe["trials"] = first["trial_id"].agg(lambda ids: ",".join(sorted(map(str, ids))))
    ranked = summary.merge(describe, left_on="variant_key", right_index=True)
    return ranked.sort_values("objective_mean", ascending=False, kind="stable").reset_index(drop=True)


TIE_RTOL = 1e-6
"""Relative difference of two variants' mean objectives below which :func:`best_row` calls them tied."""


def best_row(df: pd.DataFrame, cfg: SweepConfig) -> pd.Series:
    """The best variant's row (stage or decode) under the objective, recomputed from its metrics under
    ``cfg``: the variant with the highest MEAN objective across seeds, among those with as many seeds as
    any (the untrained base aside). The row returned is that variant's lowest-seed run, with
    ``objective`` set to the mean and ``objective_std|n|low|high`` and ``trials``."""
    ranked = rank_variants(df, cfg)
    if ranked["objective_mean"].isna().all():
        raise ResultsError(f"objective {cfg.objective!r} is NaN on every row (metrics missing or NaN)")
    eligible = ranked[np.isfinite(ranked["objective_mean"].to_numpy(float))]
    if eligible.empty:
        raise NoEligibleRowError(
            f"every row is refused by the objective: degenerate share above sweep.max_degenerate_rate "
            f"({cfg.max_degenerate_rate:g}) in every variant (set sweep.degenerate_action: penalise to rank them)"
        )
    # A variant some of whose seeds reported no value (failed, stopped early by ASHA, still running) is
    # ranked, but chosen only when no variant has more: the seeds that survive a scheduler are the lucky
    # ones. The untrained base runs one seed by design (its outputs depend on none).
    untrained = _flag(eligible, "is_untrained")
    if (~untrained).any():
        most = eligible.loc[~untrained, "objective_n"].max()
        eligible = eligible[untrained | (eligible["objective_n"] >= most)]
    # Objectives equal but for float noise (the same outputs scored in other batches differ by ~1e-9) are
    # a tie, and a schedule must beat the reference points to be chosen: on a tie the untrained base wins,
    # then the baseline, then the first variant key (not the ranking's order, which is the noise's).
    means = eligible["objective_mean"].to_numpy(float)
    tied = eligible[np.isclose(means, means[0], rtol=TIE_RTOL, atol=0.0)]
    preference = 2 * _flag(tied, "is_untrained").astype(int) + _flag(tied, "is_baseline").astype(int)
    tied = tied.assign(_preference=-preference).sort_values(["_preference", "variant_key"], kind="stable")
    top = tied.iloc[0]
    members = df[variant_key(df) == top["variant_key"]]
    order = members.sort_values("seed", kind="stable") if "seed" in members else members
    row = order.iloc[0].copy()
    for col in ("objective_mean", "objective_std", "objective_n", "objective_low", "objective_high", "trials"):
        row[col] = top[col]
    row["objective"] = top["objective_mean"]
    return row


# What a row's decoding is, as the result rows record it (raydetox.results.KEY_COLUMNS).
_PENALTIES: tuple[str, ...] = ("toxic_penalty", "copy_penalty")


def _decoded_like(rows: pd.DataFrame, like: pd.Series) -> pd.DataFrame:
    """``rows`` decoded with ``like``'s toxic and copy penalties (possibly none of them)."""
    return rows[np.logical_and.reduce([rows[k] == float(like[k]) for k in _PENALTIES])]


def decoded_alike(row: pd.Series, like: pd.Series) -> bool:
    """Whether ``row`` was decoded with ``like``'s toxic and copy penalties."""
    return all(float(row[k]) == float(like[k]) for k in _PENALTIES)


def baseline_row(df: pd.DataFrame, cfg: SweepConfig, like: pd.Series | None = None) -> pd.Series | None:
    """The reference point: the baseline trials' best row decoded like ``like`` (the chosen row), so that
    best − baseline compares schedules, not decodings; without ``like`` (or no baseline row decoded that
    way) its best stage row, under the run's own decoding. ``None`` without a baseline trial."""
    base = df[baseline_mask(df)]
    if like is not None and len(same := _decoded_like(base, like)):
        return _reference_row(same, cfg)
    stage_rows = base[base["phase"] == "stage"]
    candidates = stage_rows if len(stage_rows) else base
    return _reference_row(candidates, cfg) if len(candidates) else None


def untrained_row(df: pd.DataFrame, cfg: SweepConfig, like: pd.Series | None = None) -> pd.Series | None:
    """The other reference point: the ``untrained`` variant's row decoded like ``like`` (the chosen row),
    else its best decoding row; ``None`` without one."""
    rows = df[untrained_mask(df)]
    if like is not None and len(same := _decoded_like(rows, like)):
        rows = same
    return _reference_row(rows, cfg) if len(rows) else None


def _reference_row(rows: pd.DataFrame, cfg: SweepConfig) -> pd.Series:
    """:func:`best_row` of a reference point's rows; when none is eligible (objective NaN or refused on every
    row) its first row with that objective: a reference is reported as it is, never a reason to stop."""
    try:
        return best_row(rows, cfg)
    except (NoEligibleRowError, ResultsError):
        row = rows.iloc[0].copy()
        row["objective"] = float(objective_column(rows.iloc[:1], cfg).iloc[0])
        return row


def best_config(experiment: ExperimentConfig, row: pd.Series) -> ExperimentConfig:
    """The experiment re-runnable as the best row: its trial's schedule up to the row's stage, its penalties,
    its pacing.

    A stage row at stage k means the model after the first k stages was best, so the schedule is cut there
    (under competence pacing the cut schedule is a shorter run whose competence reaches 1 at its end).
    An ``untrained`` row trains nothing: only its decoding is taken (apply it to the base model).
    """
    decoding = dataclasses.replace(
        experiment.decoding, toxic_penalty=float(row["toxic_penalty"]), copy_penalty=float(row["copy_penalty"])
    )
    if bool(untrained_mask(row.to_frame().T).iloc[0]):
        return dataclasses.replace(experiment, decoding=decoding)
    if not isinstance(row.get("schedule"), str):
        raise ResultsError(f"trial {row.get('trial_id')}: no schedule recorded in its config")
    schedule = json.loads(row["schedule"])[: int(row["stage_index"])]
    stages = [StageConfig(**{k: s[k] for k in ("stage", "epochs", "lr") if k in s}) for s in schedule]
    lora = experiment.lora
    lora_r = row.get("config/lora_r")
    if lora is not None and lora_r is not None and not pd.isna(lora_r):
        lora = dataclasses.replace(lora, r=int(lora_r))
    curriculum = experiment.curriculum
    if isinstance(row.get("pacing"), str):
        curriculum = dataclasses.replace(curriculum, pacing=row["pacing"])
    return dataclasses.replace(experiment, schedule=stages, decoding=decoding, lora=lora, curriculum=curriculum)


def _checkpoint_dirs(results_dir: Path, row: pd.Series) -> list[Path]:
    """A trial's checkpoints in either executor layout, oldest first (Tune numbers them, Ray Train
    stamps them with the time: both sort by name)."""
    trial_id = str(row["trial_id"])
    trial_dir = row.get("trial_dir")
    trial_dir = trial_dir if isinstance(trial_dir, str) and trial_dir else trial_dir_name(trial_id)
    found: list[Path] = []
    for root in (results_dir / trial_dir, results_dir / TRAIN_DIR / train_run_name(trial_id)):
        if root.is_dir():
            found += sorted(p for p in root.glob(CHECKPOINT_GLOB) if p.is_dir())
    return found


def checkpoint_of(results_dir: str | os.PathLike[str], row: pd.Series) -> Path | None:
    """The model directory holding the weights of a result row, or ``None`` when it is not on disk.

    A stage row at stage k lives in the trial checkpoint whose ``curriculum_state.json`` lists k
    finished stages, as its ``checkpoints/stage-{k-1:02d}-<stage>``; a decoding row scores its trial's
    final weights, which is the stage checkpoint at its ``stage_index``. Both executor layouts are
    searched (``trial_<id>/checkpoint_*`` and ``train/train-<id>/checkpoint_*``); ``None`` when checkpoint
    retention removed it. The newest matching checkpoint wins (a restarted trial may save a stage twice).
    An ``untrained`` row has none: its weights are the base model's.
    """
    results_dir = Path(results_dir)
    k = int(row["stage_index"])
    if k == 0:
        return None
    for ckpt in reversed(_checkpoint_dirs(results_dir, row)):
        state_file = ckpt / STATE_FILE
        if not state_file.is_file():
            continue
        try:
            stages = json.loads(state_file.read_text(encoding="utf-8"))["stages"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise ResultsError(f"{state_file}: not a curriculum state (expected a 'stages' list): {err}") from None
        if len(stages) != k:
            continue
        stage = stages[k - 1]
        if isinstance(row.get("stage"), str) and stage.get("stage") != row["stage"]:
            raise ResultsError(
                f"{state_file}: stage {k} is {stage.get('stage')!r} but the row of trial {row['trial_id']} "
                f"says {row['stage']!r}"
            )
        path = ckpt / stage["checkpoint"]
        if path.is_dir():
            return path.resolve()
    return None


def detox_command(checkpoint: Path, config: Path) -> str:
    """The documented way to reuse a chosen checkpoint on new sentences."""
    return f"raydetox detox --model {checkpoint} --config {config} INPUT.txt"


def write_checkpoint_note(path: Path, row: pd.Series, checkpoint: Path | None, config: Path) -> None:
    """Write which checkpoint holds ``row``'s weights (``None``: not on disk) and how to reuse it, as JSON."""
    note: dict[str, object] = {
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "command": detox_command(checkpoint, config) if checkpoint is not None else None,
    }
    for key in DESCRIBE_COLUMNS:
        if key in row:
            value = row[key]
            note[key] = value.item() if hasattr(value, "item") else value  # numpy scalars → JSON numbers
    path.write_text(json.dumps(note, indent=1, allow_nan=True) + "\n", encoding="utf-8")


def _is_seed_column(column: str) -> bool:
    return column.startswith("config/") and column.rsplit("/", 1)[-1] == "seed"


def seed_rows(df: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The rows of every run of ``row``'s variant (same :func:`variant_key`: trial config except the
    seed, same phase, stage and decoding penalties); one row per trial, ``row``'s own trial first."""
    runs = df[(variant_key(df) == _key_of(row, _variant_columns(df))).to_numpy()]
    runs = runs.drop_duplicates("trial_id", keep="last")
    own = runs["trial_id"] == row["trial_id"]
    return pd.concat([runs[own], runs[~own].sort_values("trial_id", kind="stable")])


def seed_of(row: pd.Series) -> object:
    """The seed a row's trial ran with (its ``config/.../seed`` value), else its trial id."""
    for col, value in row.items():
        if _is_seed_column(str(col)) and not _missing(value):
            return value
    return row["trial_id"]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


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
    xs, ys = data[x].astype(float), data[y].astype(float)
    # j dominates i: no worse on both and strictly better on one. So i is dominated by a row of its own x
    # with a higher y, or by any row of a smaller x with a y at least as high (O(n log n): 100k rows).
    by_x = ys.groupby(xs)
    best_of_smaller_x = by_x.max().sort_index().cummax().shift(1, fill_value=-np.inf)
    dominated = (ys < by_x.transform("max")) | (xs.map(best_of_smaller_x) >= ys)
    return data[~dominated.to_numpy()].sort_values([x, y], ascending=[True, False], kind="stable")


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


