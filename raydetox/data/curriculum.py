"""Curriculum: train/validation/test splits, difficulty scores, easy/medium/hard buckets, stage subsets.

Difficulty direction. EASY pairs are small, local edits of explicit toxicity: the neutral side keeps
most of the toxic side's words (high token overlap, few word edits), the sentence is short, and the
toxicity is explicit (many lexicon hits per token, or a high ``toxicity_score``), so deleting or
swapping a word or two fixes it. HARD pairs are heavy rewrites of long sentences whose toxicity is
implicit (few or no lexicon hits). Concretely, per language::

    rewrite    = (1 - overlap + edit_distance) / 2            # 0 = unchanged, 1 = fully rewritten
    difficulty = (overlap_weight  * rank(rewrite)
                + toxicity_weight * (1 - rank(toxicity))
                + length_weight   * rank(length)) / (sum of the weights used)

where ``rank`` is the mid-rank percentile (in (0, 1)) of a value among the language's reference rows:
the train rows when a ``split`` column exists (so evaluation rows never shift training difficulty),
else all rows. Ranking per language makes the buckets comparable across languages whose raw
overlaps and lengths differ a lot (e.g. Amharic rewrites vs German deletions; Chinese characters).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from raydetox.config import ConfigError, CurriculumConfig, SplitConfig
from raydetox.data.clean import check_pairs, token_overlap, tokenize
from raydetox.data.io import DataError, read_table

if TYPE_CHECKING:
    from raydetox.data.lexicon import Lexicon

BUCKETS: tuple[str, ...] = ("easy", "medium", "hard")

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "validation": "validation",
    "dev": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
"""Accepted split names (after strip + casefold) → canonical name."""


# --------------------------------------------------------------------------------------------- splits


def _normalise_splits(
    values: pd.Series, ids: pd.Series, origin: str, rows: Sequence[str] | None = None
) -> pd.Series:
    """Map split names through :data:`SPLIT_ALIASES`; the first bad value raises naming its row."""
    canon = values.map(lambda v: SPLIT_ALIASES.get(v.strip().casefold()) if isinstance(v, str) else None)
    bad = canon.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = rows[i] if rows is not None else f"row id {ids.iloc[i]!r}"
        raise DataError(
            f"{origin}, {where}: split {values.iloc[i]!r} is not one of {sorted(SPLIT_ALIASES)}"
        )
    return canon.astype(str)


def _read_split_file(path: Path, ids: pd.Series) -> pd.Series:
    """Split per row of the pairs table from a CSV/TSV with columns ``id`` and ``split``."""
    if not path.is_file():
        raise DataError(f"split file {path}: not found")
    assignment = read_table(path)  # the strict reader: a malformed line is an error naming it
    missing = [c for c in ("id", "split") if c not in assignment.columns]
    if missing:
        raise DataError(f"split file {path}: missing column(s) {missing}; has {list(assignment.columns)}")
    # File row numbers as a spreadsheet shows them: line 1 is the header.
    rows = [f"row {i + 2}" for i in range(len(assignment))]
    assignment["split"] = _normalise_splits(assignment["split"], assignment["id"], f"split file {path}", rows)
    repeated = assignment["id"].duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise DataError(f"split file {path}, {rows[i]}: id {assignment['id'].iloc[i]!r} is listed twice")
    known = set(ids.astype(str))
    unknown = ~assignment["id"].isin(known).to_numpy()
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise DataError(
            f"split file {path}, {rows[i]}: id {assignment['id'].iloc[i]!r} is not in the pairs table "
            f"({int(unknown.sum())} unknown id(s) in all)"
        )
    split = ids.astype(str).map(assignment.set_index("id")["split"])
    absent = split.isna().to_numpy()
    if absent.any():
        example = ids[absent].astype(str).tolist()[:5]
        raise DataError(
            f"split file {path}: {int(absent.sum())} id(s) of the pairs table are missing, e.g. {example}"
        )
    return split.astype(str)


def _random_splits(pairs: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """Seeded split per language; rows sharing a toxic text stay together (no train/test leak)."""
    split = np.empty(len(pairs), dtype=object)
    ids = pairs["id"].astype(str).to_numpy()
    toxic = pairs["toxic"].to_numpy()
    langs = pairs["lang"].astype(str).to_numpy()
    for lang in np.unique(langs):
        # Rows of this language sorted by id: the result does not depend on the table's row order.
        rows = np.flatnonzero(langs == lang)
        rows = rows[np.argsort(ids[rows], kind="stable")]
        n = len(rows)
        # Empty toxic texts (dropped later by cleaning) must not form one big group.
        keys = [t if isinstance(t, str) and t.strip() else f"\0{i}" for t, i in zip(toxic[rows], ids[rows])]
        codes, uniques = pd.factorize(pd.Series(keys, dtype=object))
        # Per-language stream: adding or removing a language does not reshuffle the others.
        rng = np.random.default_rng([cfg.seed, zlib.crc32(lang.encode("utf-8"))])
        group_rank = np.empty(len(uniques), dtype=np.int64)
        group_rank[rng.permutation(len(uniques))] = np.arange(len(uniques))
        position = np.empty(n, dtype=np.int64)
        position[np.argsort(group_rank[codes], kind="stable")] = np.arange(n)
        # A group goes where its first row lands, so splits are exact (±1 row) for unique toxic texts.
        group_start = pd.Series(position).groupby(codes).transform("min").to_numpy()
        cut_train = round(cfg.train * n)
        cut_val = round((cfg.train + cfg.validation) * n)
        split[rows] = np.where(
            group_start < cut_train, "train", np.where(group_start < cut_val, "validation", "test")
        )
    return split


def split_pairs(pairs: pd.DataFrame, cfg: SplitConfig, split_column: str | None = None) -> pd.DataFrame:
    """Return ``pairs`` with a ``split`` column (train/validation/test); row order is unchanged.

    Source of the split, first that applies: ``cfg.split_file`` (CSV/TSV with columns id,split; every
    table id must appear once, unknown ids are an error naming the file row), then ``split_column``,
    then an existing ``split`` column (values validated, dev/val/valid → validation), else a seeded
    random split stratified by language with fractions ``cfg.train/validation/test`` where rows
    sharing the same toxic text are kept in one split.
    """
    check_pairs(pairs)
    out = pairs.copy()
    if cfg.split_file and split_column:
        raise ConfigError(
            f"split_pairs: both split.split_file ({cfg.split_file!r}) and split column {split_column!r} "
            "are given; use one"
        )
    if cfg.split_file:
        out["split"] = _read_split_file(Path(cfg.split_file), out["id"]).to_numpy()
    elif split_column or "split" in out.columns:
        column = split_column or "split"
        if column not in out.columns:
            raise DataError(f"pairs table: split column {column!r} not found; has {list(out.columns)}")
        out["split"] = _normalise_splits(out[column], out["id"], f"pairs table column {column!r}").to_numpy()
    else:
        out["split"] = _random_splits(out, cfg)
    out["split"] = out["split"].astype(str)
    return out


# ------------------------------------------------------------------------------------------ difficulty


def word_edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (insert, delete, substitute cost 1)."""
    # Detox edits are local: trimming the shared prefix and suffix leaves a tiny DP table.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _pct_rank(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each value within ``reference``: (#below + #at-or-below) / (2 n)."""
    ref = np.sort(reference)
    below = np.searchsorted(ref, values, side="left")
    at_or_below = np.searchsorted(ref, values, side="right")
    return (below + at_or_below) / (2 * len(ref))


def _reference_mask(table: pd.DataFrame) -> np.ndarray:
    """Rows that define ranks and quantiles: the train split when there is one, else every row."""
    if "split" in table.columns:
        return (table["split"] == "train").to_numpy()
    return np.ones(len(table), dtype=bool)


def _toxicity(pairs: pd.DataFrame, lengths: np.ndarray, lexicon: Lexicon | None) -> np.ndarray | None:
    """``toxicity_score`` when the column is filled, else lexicon hits per toxic token, else None."""
    if "toxicity_score" in pairs.columns and pairs["toxicity_score"].notna().any():
        score = pd.to_numeric(pairs["toxicity_score"], errors="coerce")
        bad = score.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"pairs table: row id {pairs['id'].iloc[i]!r}, column 'toxicity_score': "
                f"{pairs['toxicity_score'].iloc[i]!r} is not a number (fill every row or none)"
            )
        return score.to_numpy(dtype=float)
    if lexicon is not None:
        langs = pairs["lang"].astype(str)
        hits = np.array([lexicon.count(t, lang) for t, lang in zip(pairs["toxic"], langs)], dtype=float)
        return hits / np.maximum(lengths, 1)
    return None


def score_difficulty(
    pairs: pd.DataFrame, cfg: CurriculumConfig, lexicon: Lexicon | None = None
) -> pd.DataFrame:
    """Add ``overlap``, ``edit_distance``, ``toxicity``, ``length`` and ``difficulty`` (see module doc).

    ``overlap``: token overlap of toxic and neutral (0..1); ``edit_distance``: word-level Levenshtein
    divided by the longer token count (0..1); ``toxicity``: the ``toxicity_score`` column when filled,
    else lexicon hits per toxic token, else NaN and the toxicity term is left out (with a warning);
    ``length``: toxic tokens. Run it on cleaned pairs (no empty texts).
    """
    check_pairs(pairs)
    weights = {"rewrite": cfg.overlap_weight, "toxicity": cfg.toxicity_weight, "length": cfg.length_weight}
    negative = {k: w for k, w in weights.items() if w < 0}
    if negative:
        raise ValueError(f"curriculum weights must be >= 0, got {negative}")
    out = pairs.copy()
    toxic_tokens = [tokenize(t) for t in out["toxic"].astype(str)]
    neutral_tokens = [tokenize(t) for t in out["neutral"].astype(str)]
    lengths = np.array([len(t) for t in toxic_tokens], dtype=np.int64)
    out["overlap"] = [token_overlap(a, b) for a, b in zip(toxic_tokens, neutral_tokens)]
    out["edit_distance"] = [
        word_edit_distance(a, b) / max(len(a), len(b), 1) for a, b in zip(toxic_tokens, neutral_tokens)
    ]
    toxicity = _toxicity(out, lengths, lexicon)
    wanted_toxicity = weights["toxicity"] > 0
    if toxicity is None:
        weights["toxicity"] = 0.0
        toxicity = np.full(len(out), np.nan)
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"curriculum weights sum to 0 ({weights}); difficulty is undefined")
    if wanted_toxicity and not weights["toxicity"]:
        warnings.warn(
            "score_difficulty: no lexicon and no toxicity_score column; toxicity left out of difficulty",
            stacklevel=2,
        )
    out["toxicity"] = toxicity
    out["length"] = lengths

    components = {
        "rewrite": ((1.0 - out["overlap"] + out["edit_distance"]) / 2).to_numpy(dtype=float),
        "toxicity": out["toxicity"].to_numpy(dtype=float),
        "length": lengths.astype(float),
    }
    difficulty = np.zeros(len(out))
    reference = _reference_mask(out)
    langs = out["lang"].astype(str).to_numpy()
    for lang in np.unique(langs):
        rows = langs == lang
        # A language with no train rows (evaluation-only) is ranked against itself.
        ref = rows & reference if (rows & reference).any() else rows
        for name, weight in weights.items():
            if not weight:
                continue
            rank = _pct_rank(components[name][rows], components[name][ref])
            if name == "toxicity":
                rank = 1.0 - rank  # explicit (high) toxicity is easy
            difficulty[rows] += weight * rank
    out["difficulty"] = difficulty / total
    return out


# --------------------------------------------------------------------------------------------- buckets


def _tie_break(ids: pd.Series, seed: int) -> np.ndarray:
    """Seeded, order-independent hash of each id: breaks difficulty ties deterministically."""
    key = f"{seed % 10**16:016d}"  # hash_array takes a 16-character key
    return pd.util.hash_array(ids.astype(str).to_numpy(dtype=object), hash_key=key)


def assign_buckets(scored: pd.DataFrame, cfg: CurriculumConfig) -> pd.DataFrame:
    """Add ``bucket`` (easy/medium/hard) from ``difficulty``.

    With ``cfg.cut_points = [a, b]``: easy if difficulty < a, medium if < b, else hard. Otherwise per
    language: the train rows (all rows without a ``split`` column) are ordered by (difficulty, seeded
    hash of id) and cut at ``cfg.quantiles``; every row of that language is bucketed against the same
    thresholds in that order, so evaluation rows fall where a train row of equal difficulty would.
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
    reference = _reference_mask(out)
    langs = out["lang"].astype(str).to_numpy()
    bucket = np.empty(len(out), dtype=object)
    for lang in np.unique(langs):
        rows = np.flatnonzero(langs == lang)
        ref = rows[reference[rows]]
        if len(ref) == 0:
            raise DataError(f"assign_buckets: language {lang!r} has no train rows to take quantiles from")
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


def difficulty_cdf(frame: pd.DataFrame) -> np.ndarray:
    """Each row's difficulty CDF value within its language: the share of the language's rows in ``frame``
    that are at most as difficult, in (0, 1] (the hardest rows of a language have 1).

    Competence pacing samples the pairs with a value <= c(t); taking the CDF per language (as the
    difficulty ranks are) gives every language the same share of its pairs at every competence.
    """
    missing = [c for c in ("lang", "difficulty") if c not in frame.columns]
    if missing:
        raise ValueError(f"difficulty_cdf: missing column(s) {missing}; run score_difficulty first")
    difficulty = frame["difficulty"].to_numpy(dtype=float)
    langs = frame["lang"].astype(str).to_numpy()
    cdf = np.empty(len(frame), dtype=float)
    for lang in np.unique(langs):
        rows = np.flatnonzero(langs == lang)
        values = difficulty[rows]
        cdf[rows] = np.searchsorted(np.sort(values), values, side="right") / len(rows)
    return cdf


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
