"""Pipeline step 5, difficulty: a score per pair, ranked per language against the train rows.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from raydetox.config import ConfigError, CurriculumConfig
from raydetox.data.clean import token_overlap, tokenize
from raydetox.data.pairs import check_pairs, check_rows
from raydetox.data.split import reference_rows

if TYPE_CHECKING:
    from raydetox.data.lexicon import Lexicon


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


def _toxicity(pairs: pd.DataFrame, lengths: np.ndarray, lexicon: Lexicon | None) -> np.ndarray | None:
    """``toxicity_score`` when the column is filled, else lexicon hits per toxic token, else None."""
    if "toxicity_score" in pairs.columns and pairs["toxicity_score"].notna().any():
        score = pd.to_numeric(pairs["toxicity_score"], errors="coerce")
        check_rows(
            pairs, "toxicity_score", score.isna(), lambda v: f"{v!r} is not a number (fill every row or none)"
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
    reference = reference_rows(out)
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
