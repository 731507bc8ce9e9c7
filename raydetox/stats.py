"""Uncertainty of scores: bootstrap over sentences, paired differences, spread across seeds, verdicts.

- :func:`bootstrap_interval`: interval of one system's score from resampling its sentences.
- :func:`paired_bootstrap`: interval of the difference between two systems scored on the same
  sentences; both are resampled with the same row indices, so sentence difficulty cancels out.
- :func:`seed_summary`: mean, std and t-interval of runs that differ only by their seed.
- :func:`verdict`: one plain sentence from the interval of a difference.

A score is either the mean of per-sentence values (1-D input, the default) or any statistic of rows
of per-sentence sufficient statistics (2-D input and ``statistic``), e.g. corpus chrF from
sacrebleu's per-sentence n-gram counts: ``statistic=lambda rows: chrf._compute_score_from_stats(
rows.sum(axis=0)).score``. Intervals come from :func:`scipy.stats.bootstrap` (BCa by default) and are
deterministic for a given ``seed``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

if TYPE_CHECKING:
    from typing_extensions import Unpack

Statistic = Callable[[np.ndarray], float]
Method = Literal["BCa", "percentile", "basic"]
Outcome = Literal["better", "worse", "no difference", "undecided"]

# An interval of a difference that contains 0 is called "no difference" only when it is narrower than
# this (in the metric's units, by per-sentence column name); wider, it cannot rule out a difference worth
# having. J differences of 0.05 separate the systems of issue 12 (copy 0.144, delete 0.285, a trained
# checkpoint 0.087).
DECISION_WIDTH: dict[str, float] = {"j": 0.10, "copy": 0.20, "sta": 0.20, "bertscore_f1": 0.10}

# Two per-sentence scores closer than this are the same score: identical outputs scored in other
# batches differ by ~1e-9 (float32 kernels), which must not count as a difference.
SAME_SCORE = 1e-6

# Resamples per vectorised batch: 1,000 × 3,600 test rows of int64 indices is about 29 MB.
_BATCH = 1000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval over ``n`` sentences (or seeds)."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    # Paired differences of per-sentence values only: the sentences whose two values differ, and the
    # exact-or-Monte-Carlo sign-flip test's p-value on them (see :func:`paired_bootstrap`).
    differing: int | None = None
    sign_flip_p: float | None = None

    @property
    def width(self) -> float:
        """high − low."""
        return self.high - self.low

    def contains(self, value: float) -> bool:
        """Whether low ≤ value ≤ high."""
        return bool(self.low <= value <= self.high)


@dataclass(frozen=True)
class Verdict:
    """What an interval of a difference says: an outcome and the sentence that explains it."""

    outcome: Outcome
    text: str
    interval: Interval

    def __str__(self) -> str:
        return self.text


def _rows(values: ArrayLike, name: str, statistic: Statistic | None) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim == 0 or len(rows) == 0:
        raise ValueError(f"{name}: no rows to resample")
    if statistic is None:
        if rows.ndim != 1:
            raise ValueError(f"{name}: rows of shape {rows.shape} need a statistic (the default averages 1-D values)")
        bad = np.flatnonzero(~np.isfinite(rows))
        if len(bad):
            raise ValueError(f"{name}: non-finite values at rows {bad[:10].tolist()}")
    return rows


def _on_indices(rows: np.ndarray, statistic: Statistic | None) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic as a function of resampled row indices of shape (..., n) → values of shape (...)."""
    if statistic is None:
        return lambda idx: rows[idx].mean(axis=-1)

    def apply(idx: np.ndarray) -> np.ndarray:
        flat = idx.reshape(-1, idx.shape[-1])
        return np.array([statistic(rows[i]) for i in flat], dtype=np.float64).reshape(idx.shape[:-1])

    return apply


class BootstrapOptions(TypedDict, total=False):
    """Keyword options shared by :func:`bootstrap_interval` and :func:`paired_bootstrap`."""

    confidence: float  # default 0.95
    n_resamples: int  # default 9999
    seed: int  # default 0; the same seed gives the same interval
    method: Method  # default "BCa" (scipy.stats.bootstrap's method)


def _bootstrap(
    on_indices: Callable[[np.ndarray], np.ndarray],
    n: int,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    method: Method = "BCa",
) -> Interval:
    estimate = float(on_indices(np.arange(n)))
    if n < 2:
        return Interval(estimate, math.nan, math.nan, confidence, n)
    # Constant resamples (every sentence scores 0, or two systems agree everywhere) make BCa
    # undefined; that case is answered below with a zero-width interval.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (np.arange(n),),
            lambda idx, axis=-1: on_indices(np.moveaxis(idx, axis, -1)),
            n_resamples=n_resamples,
            batch=_BATCH,
            vectorized=True,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    if np.ptp(res.bootstrap_distribution) == 0:
        return Interval(estimate, estimate, estimate, confidence, n)
    low, high = res.confidence_interval
    return Interval(estimate, float(low), float(high), confidence, n)


def bootstrap_interval(
    values: ArrayLike, statistic: Statistic | None = None, **options: Unpack[BootstrapOptions]
) -> Interval:
    """Estimate and bootstrap interval of a score over sentences.

    ``values`` holds one row per sentence: a value (the score is their mean) or, with ``statistic``,
    a vector of sufficient statistics that ``statistic`` turns into the score of any set of rows.
    ``options``: :class:`BootstrapOptions`.
    """
    rows = _rows(values, "bootstrap_interval", statistic)
    return _bootstrap(_on_indices(rows, statistic), len(rows), **options)


def paired_bootstrap(
    a: ArrayLike, b: ArrayLike, statistic: Statistic | None = None, **options: Unpack[BootstrapOptions]
) -> Interval:
    """Estimate and interval of score(a) − score(b) for two systems scored on the same sentences.

    Row i of ``a`` and of ``b`` must be the same sentence; each resample draws the same rows from both.
    ``statistic`` is as in :func:`bootstrap_interval`; ``options``: :class:`BootstrapOptions`.
    """
    rows_a = _rows(a, "paired_bootstrap", statistic)
    rows_b = _rows(b, "paired_bootstrap", statistic)
    if rows_a.shape != rows_b.shape:
        raise ValueError(f"paired_bootstrap: a and b differ in shape: {rows_a.shape} vs {rows_b.shape}")
    stat_a, stat_b = _on_indices(rows_a, statistic), _on_indices(rows_b, statistic)
    interval = _bootstrap(lambda idx: stat_a(idx) - stat_b(idx), len(rows_a), **options)
    if statistic is not None:
        return interval
    differences = rows_a - rows_b
    differing = differences[np.abs(differences) > SAME_SCORE]
    return dataclasses.replace(interval, differing=len(differing),
                               sign_flip_p=sign_flip_test(differing, seed=options.get("seed", 0)))


def sign_flip_test(differences: ArrayLike, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided p-value of "the mean paired difference is 0" by flipping the signs of ``differences``
    (scipy's paired permutation test; exact up to 13 differences, else ``n_resamples`` random flips).

    It needs no large-sample approximation, so it stays honest where a bootstrap of a mean does not:
    when only a handful of sentences differ between two systems. 1.0 when there is no difference.
    """
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2 or not np.any(d):  # one difference: both of its signs are as extreme, p = 1
        return 1.0
    res = stats.permutation_test(
        (d,), lambda x, axis=-1: np.mean(x, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=math.inf if len(d) <= 13 else n_resamples, alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def seed_summary(
    frame: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str], confidence: float = 0.95
) -> pd.DataFrame:
    """Per group of ``by`` and metric: mean, std, n (seeds with a value), low and high of the t-interval.

    One row per run (seed) in ``frame``. With a single seed, std, low and high are NaN.
    """
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*keys, *metrics] if c not in frame.columns]
    if missing:
        raise KeyError(f"seed_summary: columns {missing} not in frame (columns: {list(frame.columns)})")
    # dropna=False keeps groups whose key is missing (e.g. no schedule for the baseline).
    grouped = frame.groupby(keys, dropna=False, sort=True)[list(metrics)]
    long = grouped.agg(["mean", "std", "count"]).stack(level=0, future_stack=True)
    long.index = long.index.set_names([*keys, "metric"])
    long = long.rename(columns={"count": "n"}).reset_index()
    long["n"] = long["n"].astype(int)
    # t quantile with n − 1 degrees of freedom; NaN below two seeds, as std.
    dof = (long["n"] - 1).where(long["n"] > 1)
    half = stats.t.ppf((1 + confidence) / 2, dof) * long["std"] / np.sqrt(long["n"])
    long["low"], long["high"] = long["mean"] - half, long["mean"] + half
    return long[[*keys, "metric", "mean", "std", "n", "low", "high"]]


def verdict(
    diff: Interval,
    metric: str = "the metric",
    a: str = "A",
    b: str = "B",
    higher_is_better: bool = True,
    max_width: float | None = None,
    min_n: int = 30,
) -> Verdict:
    """One sentence on whether ``a`` beats ``b``, from the interval of score(a) − score(b).

    Undecided when there are fewer than ``min_n`` sentences (bootstrap intervals undercover there),
    when the interval is NaN, or when it contains 0 and is wider than ``max_width`` (in the metric's
    units; ``None`` skips that test): "no significant difference" is kept for narrow intervals. When
    fewer than ``min_n`` sentences differ at all (``diff.differing``, paired per-sentence values), a
    difference is significant only if the sign-flip test agrees (p < 1 − confidence).
    """
    said = (
        f"({a} − {b} = {diff.estimate:+.4g}, {diff.confidence:.0%} CI {diff.low:+.4g} to {diff.high:+.4g}, "
        f"{diff.n} sentences)"
    )
    undecided = f"Cannot tell whether {a} or {b} is better on {metric}"
    if diff.n < min_n:
        return Verdict("undecided", f"{undecided}: fewer than {min_n} sentences {said}.", diff)
    if math.isnan(diff.low) or math.isnan(diff.high):
        return Verdict("undecided", f"{undecided}: no interval {said}.", diff)
    excludes_zero = diff.low > 0 or diff.high < 0
    few = diff.differing is not None and diff.sign_flip_p is not None and diff.differing < min_n
    if few:
        # The bootstrap of a mean undercovers when few sentences carry the whole difference (3 of 330
        # differ: BCa excludes 0 where an exact test gives p = 0.25): the sign-flip test decides.
        tested = f"only {diff.differing} of {diff.n} sentences differ, sign-flip test p = {diff.sign_flip_p:.2g}"
        said = f"{said[:-1]}; {tested})"
        if diff.sign_flip_p >= 1 - diff.confidence:
            excludes_zero = False
    if excludes_zero:
        outcome: Outcome = "better" if (diff.low > 0) == higher_is_better else "worse"
        return Verdict(outcome, f"{a} is significantly {outcome} than {b} on {metric} {said}.", diff)
    if max_width is not None and diff.width > max_width:
        return Verdict("undecided", f"{undecided}: the interval is wider than {max_width:.4g} {said}.", diff)
    return Verdict("no difference", f"No significant difference between {a} and {b} on {metric} {said}.", diff)
