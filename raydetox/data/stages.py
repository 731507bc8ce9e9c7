"""Pipeline step 6, stages: easy/medium/hard buckets from difficulty, and the training subset per stage.

Bucket thresholds come from the train split (:func:`raydetox.data.split.reference_rows`), so
evaluation rows fall where a train row of equal difficulty would.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raydetox.config import CurriculumConfig
from raydetox.data.split import reference_rows

BUCKETS: tuple[str, ...] = ("easy", "medium", "hard")


def _tie_break(ids: pd.Series, seed: int) -> np.ndarray:
    """Seeded, order-independent hash of each id: breaks difficulty ties deterministically."""
    key = f"{seed % 10**16:016d}"  # hash_array takes a 16-character key
    return pd.util.hash_array(ids.astype(str).to_numpy(dtype=object), hash_key=key)


def assign_buckets(scored: pd.DataFrame, cfg: CurriculumConfig) -> pd.DataFrame:
    """Add ``bucket`` (easy/medium/hard) from ``difficulty``.

    With ``cfg.cut_points = [a, b]``: easy if difficulty < a, medium if < b, else hard. Otherwise per
    language: the train rows (all rows without a ``split`` column) are ordered by (difficulty, seeded
    hash of id) and cut at ``cfg.quantiles``; every row of that language is bucketed against the same
    thresholds in that order, so evaluation rows fall where a train row of equal difficulty would. A
    language without train rows (held for evaluation only) is cut at the quantiles of its own rows, as
    :func:`~raydetox.data.difficulty.score_difficulty` ranks it against itself.
    """
    missing = [c for c in ("id", "lang", "difficulty") if c not in scored.columns]
    if missing:
        raise ValueError(f"assign_buckets: missing column(s) {missing}; run score_difficulty first")
    out = scored.copy()
    difficulty = out["difficulty"].to_numpy(dtype=float)
    if np.isnan(difficulty).any():
        i = int(np.flatnonzero(np.isnan(difficulty))[0])
        raise ValueError(f"assign_buckets: row id {out['id'].iloc[i]!r} has no difficulty")
    if cfg.cut_points is not None:
        low, high = cfg.cut_points
        out["bucket"] = np.where(difficulty < low, "easy", np.where(difficulty < high, "medium", "hard"))
        out["bucket"] = out["bucket"].astype(str)
        return out

    tie = _tie_break(out["id"], cfg.seed)
    reference = reference_rows(out)
    langs = out["lang"].astype(str).to_numpy()
    bucket = np.empty(len(out), dtype=object)
    for lang in np.unique(langs):
        rows = np.flatnonzero(langs == lang)
        ref = rows[reference[rows]]
        if len(ref) == 0:
            ref = rows  # evaluation only: no train row to place it against
        ref = ref[np.lexsort((tie[ref], difficulty[ref]))]
        level = np.zeros(len(rows), dtype=int)
        for q in cfg.quantiles:
            k = int(round(q * len(ref)))
            if k >= len(ref):
                continue
            # Row is at or above the threshold row in (difficulty, tie) order → next bucket up.
            t_diff, t_tie = difficulty[ref[k]], tie[ref[k]]
            above = (difficulty[rows] > t_diff) | ((difficulty[rows] == t_diff) & (tie[rows] >= t_tie))
            level += above
        bucket[rows] = np.asarray(BUCKETS, dtype=object)[level]
    out["bucket"] = pd.Series(bucket, index=out.index).astype(str)
    return out



def paced_subsets(order: Sequence[str], pacing: str) -> list[tuple[str, ...]]:
    """The :func:`stage_subsets` each stage of ``order`` trains on under ``pacing``.

    disjoint: its own subset. cumulative ("baby steps"): its bucket and the buckets of every earlier
    stage (``full`` once a ``full`` stage came or all three buckets are in). competence: ``full``, from
    which the competence sampler draws (raydetox.pacing).
    """
    if pacing == "disjoint":
        return [(name,) for name in order]
    if pacing == "competence":
        return [("full",)] * len(order)
    if pacing != "cumulative":
        raise ValueError(f"unknown pacing {pacing!r}; expected disjoint, cumulative or competence")
    seen: set[str] = set()
    out: list[tuple[str, ...]] = []
    for name in order:
        seen.add(name)
        out.append(("full",) if "full" in seen or seen >= set(BUCKETS) else tuple(b for b in BUCKETS if b in seen))
    return out


def stage_subsets(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Training subsets per curriculum stage: ``easy``, ``medium``, ``hard`` and ``full`` (all train rows).

    Uses the train split when ``table`` has a ``split`` column. An empty stage is warned about (it can
    happen with fixed cut points), not an error: a schedule may not use it.
    """
    if "bucket" not in table.columns:
        raise ValueError("stage_subsets: no 'bucket' column; run assign_buckets first")
    train = table[table["split"] == "train"] if "split" in table.columns else table
    stages = {b: train[train["bucket"] == b].reset_index(drop=True) for b in BUCKETS}
    stages["full"] = train.reset_index(drop=True)
    empty = [name for name, frame in stages.items() if frame.empty]
    if empty:
        warnings.warn(f"stage_subsets: stage(s) {empty} have no training rows", stacklevel=2)
    return stages
