"""Ablations as a sweep axis: which arms a sweep's trials run, and each factor's effect in its results.

``sweep.ablations.factors`` switches factors on and off in a full factorial, crossed with
``sweep.seeds``:

- ``cleaning``: the trials train on the cleaned training rows (``data/``) or on the uncleaned ones
  (``data-cleaning-off/``, every drop rule that is a cleaning choice off; empty, unidentified and
  over-long rows stay dropped). Each variant is prepared once by the sweep's driver; both hold the same
  validation and test rows (checked), the same lexicon, the same judge and the same embedded base.
- ``curriculum``: the curriculum variants ("on") against the baseline schedule ("off": one ``full``
  stage with the same total epochs).
- ``decoding_controls``: every trial's final weights decoded with the logits penalties of
  ``sweep.ablations.decoding_controls`` ("on") and with none ("off").

Each result row records its arm of every factor in an ``ablation_<factor>`` column (the results
contract, :mod:`raydetox.results`). :func:`ablation_effects` pairs rows that differ only in one factor
(same other arms, seed, variant and penalties; decode rows, i.e. final weights) and reports the effect
on − off on copy rate, J and BERTScore with two intervals: a paired bootstrap over the validation
sentences (from the rows' stored predictions) and a t-interval across seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raydetox.config import CleaningConfig, ExperimentConfig, SweepConfig
from raydetox.data.io import DataError
from raydetox.errors import ResultsError
from raydetox.results import ARMS, CLEANING_OFF_DATA_DIR, DATA_DIR, ablation_column, read_predictions
from raydetox.selection import seed_of
from raydetox.stats import DECISION_WIDTH, Interval, paired_bootstrap, seed_summary, verdict

if TYPE_CHECKING:
    from raydetox.data.prepare import PreparedData

# The cleaning rules that are a choice; the arm "off" switches them all off for the training rows.
CLEANING_OFF: dict[str, bool] = {
    "drop_duplicates": False, "drop_identical": False, "drop_already_neutral": False,
    "drop_still_toxic": False, "drop_noisy": False,
}
# Row metric → the per-sentence column of a predictions file whose mean it is.
EFFECT_METRICS: dict[str, str] = {"eval_copy_rate": "copy", "eval_j": "j", "eval_bertscore_f1": "bertscore_f1"}
LOWER_IS_BETTER: frozenset[str] = frozenset({"eval_copy_rate"})
EFFECT_COLUMNS: tuple[str, ...] = (
    "factor", "metric", "pairs", "on_mean", "off_mean", "effect", "seeds", "sentences", "sentence_low", "sentence_high",
    "seed_low", "seed_high", "verdict",
)


def factors(sweep: SweepConfig) -> list[str]:
    """The ablated factors of a sweep, in config order (empty without ``sweep.ablations``)."""
    return list(sweep.ablations.factors) if sweep.ablations is not None else []


# --------------------------------------------------------------------------------------- the sweep side


def cleaning_off(cfg: CleaningConfig) -> CleaningConfig:
    """``cfg`` with every cleaning choice off (the training rows of the arm ``cleaning: off``)."""
    return dataclasses.replace(cfg, **CLEANING_OFF)


def prepare_arms(cfg: ExperimentConfig, sweep_dir: Path, cleaned: PreparedData | None) -> dict[str, str]:
    """The prepared data dir of each ``cleaning`` arm (``{"on": data dir}`` when cleaning is not ablated).

    ``cleaned`` is the sweep's own prepared data (``None`` on resume: both arms are on disk then). The
    uncleaned arm is prepared once here, shares the cleaned arm's judge, and is checked to hold the same
    validation and test rows and the same embedded-base corpus, so that every difference is paired.
    """
    on_dir = sweep_dir / DATA_DIR
    arms = {"on": str(on_dir.resolve())}
    if "cleaning" not in factors(cfg.sweep):
        return arms
    from raydetox.data.prepare import load_prepared, prepare

    off_dir = sweep_dir / CLEANING_OFF_DATA_DIR
    if cleaned is not None or not (off_dir / "manifest.json").is_file():
        on = cleaned if cleaned is not None else load_prepared(on_dir)
        off = prepare(cfg, off_dir, train_cleaning=cleaning_off(cfg.cleaning))
        check_paired(on, off, embedded_base=cfg.model.name_or_path == "embedded")
        from raydetox.judge import POINTER_FILE
        from raydetox.pretraining_corpus import BASE_POINTER

        # One judge scores both arms, and both start from one base (check_paired: the same corpus).
        for pointer in (POINTER_FILE, BASE_POINTER):
            if (on_dir / pointer).is_file():
                shutil.copyfile(on_dir / pointer, off_dir / pointer)
    arms["off"] = str(off_dir.resolve())
    return arms


def check_paired(on: PreparedData, off: PreparedData, embedded_base: bool = True) -> None:
    """Raise unless two prepared arms evaluate on the same rows (ids and texts of validation and test)
    and, with ``embedded_base``, build the same embedded base (the same set of training-split texts)."""
    for split in ("validation", "test"):
        a, b = (getattr(p, split)[["id", "lang", "toxic"]].reset_index(drop=True) for p in (on, off))
        if not a.astype(str).equals(b.astype(str)):
            raise AssertionError(f"{off.out_dir}: the {split} rows differ from {on.out_dir}'s: the arms are not paired")
    if not embedded_base:
        return
    from raydetox.pretraining_corpus import base_corpus, corpus_key

    if corpus_key(base_corpus(on)) != corpus_key(base_corpus(off)):
        raise DataError(
            f"{off.out_dir}: the uncleaned arm's pretraining texts or pairs differ from the cleaned arm's (rows with several "
            "references whose extra references cleaning dropped): both arms would need their own embedded base; "
            "set data.expand_refs: true or drop 'cleaning' from sweep.ablations.factors"
        )


def search_space(sweep: SweepConfig) -> dict[str, list[str]]:
    """Trial-config keys the ablation adds to the Tune search space, with their values."""
    return {ablation_column("cleaning"): list(ARMS)} if "cleaning" in factors(sweep) else {}


def trial_arms(config: Mapping[str, Any], ablated: Sequence[str]) -> dict[str, str]:
    """A trial's arms of the ``ablated`` factors fixed per trial (cleaning, curriculum), from its Tune config."""
    arms: dict[str, str] = {}
    if "cleaning" in ablated:
        arms[ablation_column("cleaning")] = str(config[ablation_column("cleaning")])
    if "curriculum" in ablated and not config["variant"].get("is_untrained"):  # no schedule: neither arm
        arms[ablation_column("curriculum")] = "off" if config["variant"]["is_baseline"] else "on"
    return arms


def decode_settings(sweep: SweepConfig) -> list[list[float]]:
    """The (toxic_penalty, copy_penalty) pairs the ``decoding_controls`` arms need decoded."""
    if "decoding_controls" not in factors(sweep):
        return []
    on = sweep.ablations.decoding_controls  # type: ignore[union-attr]
    return [[0.0, 0.0], [float(on.toxic_penalty), float(on.copy_penalty)]]


# ------------------------------------------------------------------------------------ the analysis side


# The variant keys a curriculum and its baseline share (the rest, ordering, schedule and epochs, is what
# the factor changes; epochs are matched by :func:`baseline_epochs_of`).
_CURRICULUM_SHARED = ("config/variant/lr",)


def baseline_epochs_of(sweep: SweepConfig, df: pd.DataFrame) -> dict[float, set[float]]:
    """The baseline epochs each curriculum epochs value of ``sweep.epochs`` is compared with: the one the
    sweep derived for it (its epochs × the stages of the longest ordering in ``df``), or the
    ``sweep.baseline_epochs`` value at the same position; a list of another length is crossed with all."""
    if sweep.baseline_epochs is None:
        schedules = df.get("config/variant/schedule", pd.Series(dtype=object))
        is_baseline = df.get("config/variant/is_baseline", pd.Series(False, index=df.index)).fillna(False).astype(bool)
        stages = max((len(_stages(s)) for s in schedules[~is_baseline]), default=1) or 1
        return {float(e): {float(e) * stages} for e in sweep.epochs}
    given = [float(b) for b in sweep.baseline_epochs]
    if len(given) == len(sweep.epochs):
        return {float(e): {b} for e, b in zip(sweep.epochs, given)}
    return {float(e): set(given) for e in sweep.epochs}


def _stages(schedule: Any) -> list[Any]:
    """A results row's schedule (JSON text in the results table, a list in a trial's config)."""
    if isinstance(schedule, str):
        try:
            schedule = json.loads(schedule)
        except ValueError:
            return []
    return list(schedule) if isinstance(schedule, (list, tuple, np.ndarray)) else []


def matched_pairs(df: pd.DataFrame, factor: str, all_factors: list[str],
                  baseline_epochs: Mapping[float, set[float]] | None = None) -> list[tuple[int, int]]:
    """(index of the "on" row, index of the "off" row) of every pair of decode rows that differ only in
    ``factor``: same arms of the other factors, same trial config otherwise (seed included) and, unless
    ``factor`` is ``decoding_controls``, the same penalties. Rows outside every arm are left out, and so
    are the untrained base's (it trains on no arm's data and follows no schedule).

    For ``curriculum``, a curriculum and a baseline pair at the same learning rate and, with
    ``baseline_epochs`` (:func:`baseline_epochs_of`), only with the baseline epochs of its own epochs."""
    arm_cols = [ablation_column(f) for f in all_factors]
    missing = [c for c in arm_cols if c not in df]
    if missing:
        raise ResultsError(f"the results have no arm column(s) {missing}: not a sweep with sweep.ablations")
    rows = df[(df["phase"] == "decode") & df[arm_cols].isin(ARMS).all(axis=1)]
    if "is_untrained" in rows:
        rows = rows[~rows["is_untrained"].fillna(False).astype(bool)]
    own = ablation_column(factor)
    key_cols = [c for c in rows.columns if str(c).startswith("config/") and c != f"config/{own}"
                and not (factor == "curriculum" and str(c).startswith("config/variant")
                         and c not in _CURRICULUM_SHARED)]
    key_cols += [c for c in arm_cols if c != own]
    if factor != "decoding_controls":
        key_cols += ["toxic_penalty", "copy_penalty"]
    # str() per cell: a missing value is "nan" (pandas 3's astype(str) keeps it missing, and join fails)
    keys = rows[key_cols].map(str).agg("\x1f".join, axis=1) if key_cols else pd.Series("", index=rows.index)
    pairs: list[tuple[int, int]] = []
    for _, group in rows.groupby(keys, sort=True):
        on, off = group.index[group[own] == "on"], group.index[group[own] == "off"]
        pairs += [(int(i), int(j)) for i in on for j in off]
    if factor == "curriculum" and baseline_epochs is not None and "config/variant/epochs" in rows:
        epochs = rows["config/variant/epochs"]
        pairs = [(i, j) for i, j in pairs if float(epochs[j]) in baseline_epochs.get(float(epochs[i]), set())]
    return pairs


def _seed(row: pd.Series) -> str:
    """The training seed of a row's trial (every trial row carries ``seed``; older rows: the config's)."""
    seed = row.get("seed")
    return str(int(seed)) if isinstance(seed, (int, float, np.integer, np.floating)) and not pd.isna(seed) else str(
        seed_of(row))


def _sentence_values(results_dir: Path, row: pd.Series, column: str) -> pd.Series | None:
    """A row's per-sentence values of ``column`` by sentence id, or ``None`` when not stored."""
    path = row.get("predictions")
    if not isinstance(path, str) or not (results_dir / path).is_file():
        return None
    frame = read_predictions(results_dir / path)
    return frame.set_index("id")[column].astype(float)


def _sentence_interval(results_dir: Path, df: pd.DataFrame, pairs: list[tuple[int, int]], column: str,
                       where: str, **options: Any) -> Interval | None:
    """Paired bootstrap over sentences of the mean over pairs of on − off (None without stored
    predictions or with fewer than two sentences scored in every pair)."""
    on_cols, off_cols = [], []
    for i, j in pairs:
        on, off = _sentence_values(results_dir, df.loc[i], column), _sentence_values(results_dir, df.loc[j], column)
        if on is None or off is None:
            return None
        if set(on.index) != set(off.index):
            raise ResultsError(f"{where}: the predictions of trials {df.loc[i, 'trial_id']} and "
                               f"{df.loc[j, 'trial_id']} hold different sentences: the arms are not paired")
        on_cols.append(on)
        off_cols.append(off.reindex(on.index))
    ids = on_cols[0].index
    on_matrix = np.column_stack([c.reindex(ids).to_numpy() for c in on_cols])
    off_matrix = np.column_stack([c.reindex(ids).to_numpy() for c in off_cols])
    finite = np.isfinite(on_matrix).all(axis=1) & np.isfinite(off_matrix).all(axis=1)
    if finite.sum() < 2:
        return None
    return paired_bootstrap(on_matrix[finite].mean(axis=1), off_matrix[finite].mean(axis=1), **options)


def ablation_effects(
    df: pd.DataFrame, sweep: SweepConfig, results_dir: str | Path, confidence: float = 0.95,
    n_resamples: int = 9999, seed: int = 0,
) -> pd.DataFrame:
    """Each ablated factor's effect (on − off) on copy rate, J and BERTScore: one row per factor and metric.

    ``effect`` is the mean over matched pairs of the rows' difference; ``sentence_low|high`` the paired
    bootstrap interval over validation sentences of the pairs' mean difference (NaN without stored
    predictions); ``seed_low|high`` the t-interval across seeds of each seed's mean difference (NaN below
    two seeds); ``verdict`` one
    sentence from the sentence interval (:func:`raydetox.stats.verdict`).
    """
    results_dir = Path(results_dir)
    all_factors = factors(sweep)
    records: list[dict[str, Any]] = []
    for factor in all_factors:
        pairs = matched_pairs(df, factor, all_factors, baseline_epochs_of(sweep, df) if factor == "curriculum" else None)
        for metric, column in EFFECT_METRICS.items():
            if metric not in df:
                continue
            if not pairs:  # a sweep still running, or one whose trials of an arm failed
                records.append({"factor": factor, "metric": metric.removeprefix("eval_"), "pairs": 0, "seeds": 0,
                                "sentences": 0, "verdict": f"No pair of rows differs only in {factor} (yet): "
                                "no effect to estimate."})
                continue
            diffs = pd.DataFrame({"seed": [_seed(df.loc[i]) for i, _ in pairs],
                                  "diff": [float(df.at[i, metric]) - float(df.at[j, metric]) for i, j in pairs]})
            # Across seeds: each seed's mean difference over its pairs is one run of the experiment.
            per_seed = diffs.groupby("seed", sort=True)["diff"].mean().to_frame().assign(group=0)
            across = seed_summary(per_seed, "group", ["diff"], confidence=confidence).iloc[0]
            effect, name = float(diffs["diff"].mean()), metric.removeprefix("eval_")
            interval = _sentence_interval(results_dir, df, pairs, column, str(results_dir),
                                          confidence=confidence, n_resamples=n_resamples, seed=seed)
            if interval is None:
                interval = Interval(effect, math.nan, math.nan, confidence, 0)
            low, high, n = interval.low, interval.high, interval.n
            said = verdict(interval, name, f"{factor} on", f"{factor} off",
                           higher_is_better=metric not in LOWER_IS_BETTER, max_width=DECISION_WIDTH.get(column))
            records.append({
                "factor": factor, "metric": name, "pairs": len(pairs),
                "on_mean": float(np.mean([df.at[i, metric] for i, _ in pairs])),
                "off_mean": float(np.mean([df.at[j, metric] for _, j in pairs])),
                "effect": effect, "seeds": int(across["n"]), "sentences": n, "sentence_low": low, "sentence_high": high,
                "seed_low": float(across["low"]), "seed_high": float(across["high"]), "verdict": said.text,
            })
    return pd.DataFrame.from_records(records, columns=list(EFFECT_COLUMNS))


def ablation_markdown(effects: pd.DataFrame, plot: Path | None) -> list[str]:
    """The report's ablation section: the table, each verdict, the plot."""
    table = effects.drop(columns="verdict")
    return [
        "## Ablations (effect = on − off, matched on the other factors, the variant and the seed)",
        "",
        "Decode rows (final weights). `sentence_low|high`: 95% paired bootstrap over the validation sentences; "
        "`seed_low|high`: 95% t-interval across seeds (none below two). `pairs`: matched row pairs. Lower copy rate is "
        "better; higher J and BERTScore are.",
        "",
        table.to_markdown(index=False, floatfmt=".4f"),
        "",
        *[f"- {factor} / {metric}: {text}" for factor, metric, text in
          effects[["factor", "metric", "verdict"]].itertuples(index=False)],
        "",
        *([f"![ablations]({plot.name})", ""] if plot is not None else []),
    ]

