"""Degenerate outputs: n-gram loops, low diversity and length blow-ups.

A loop is a failure of decoding, not a poor rewrite, so it is detected per sentence and reported as
a rate (:class:`LoopRule` has the exact definition). Diversity is distinct-n over a set of outputs
and length is the output/input ratio in characters.

Text is split into *units* by :func:`units`: characters for scripts written without spaces (Han,
Hiragana, Katakana), words elsewhere, and runs of punctuation or symbols (emoji included) as units of
their own. The same units serve loops and distinct-n, so Chinese and Russian are measured alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import regex

# One character each: these scripts do not separate words by spaces. U+30FC (ー) is the kana
# length mark, which Unicode files under the Common script.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\u30fc"
# A word starts with a letter or digit and keeps its combining marks (Devanagari, Ethiopic, Arabic
# vowel signs); inner apostrophes and hyphens do not split it ("don't", "из-за").
_WORD = rf"[[\p{{L}}\p{{N}}]--[{_CJK}]][[\p{{L}}\p{{M}}\p{{N}}]--[{_CJK}]]*"
_UNIT = regex.compile(rf"(?V1)[{_CJK}]|{_WORD}(?:['’\-]{_WORD})*|[^\s\p{{L}}\p{{N}}]+")
_NOT_TEXT = regex.compile(r"[^\p{L}\p{N}]+")

def units(text: str) -> list[str]:
    """Case-folded units of ``text``: CJK characters, words, and punctuation/symbol runs.

    >>> units("No, no... 不要哈哈!")
    ['no', ',', 'no', '...', '不', '要', '哈', '哈', '!']
    """
    return _UNIT.findall(text.casefold())


@dataclass(frozen=True)
class LoopRule:
    """What counts as an n-gram loop: one span of units repeated back to back.

    A span of 1..``short_span`` units (default 1–2) is a loop from ``short_repeats`` copies on
    (default 4): "very very good", "ha ha ha", "no no no", "谢谢", "哈哈哈" are normal, "fuck fuck fuck
    fuck" is not. A longer span (3 units up to ``max_span``, default half the text) is a loop from
    ``long_repeats`` copies (default 2): a phrase of three or more words (characters in CJK)
    immediately said again, as in "чтобы её расплавить к хthingт чтобы её расплавить к хthingт".
    Punctuation is a unit, so "no, no." and "小仙女，小仙女没有" are not loops, and spans made of
    punctuation or symbols only never are. On 44,000 human sentences (ParaDetox, multilingual
    ParaDetox, TextDetox 2024 inputs) the defaults flag 0.08%, and 0.05% of the references: those
    that keep a repetition of their toxic input.
    """

    short_span: int = 2
    short_repeats: int = 4
    long_repeats: int = 2
    max_span: int | None = None


DEFAULT_LOOP_RULE = LoopRule()


def find_loop(text: str | Sequence[str], rule: LoopRule = DEFAULT_LOOP_RULE) -> tuple[int, float] | None:
    """(span length in units, number of back-to-back copies) of the shortest-span loop, else ``None``.

    The copy count may be fractional when the last copy is cut off (``a b c a b c a`` is span 3 ×
    2.33). ``text`` is a string or its :func:`units`.
    """
    toks = units(text) if isinstance(text, str) else list(text)
    n = len(toks)
    if n < 2:
        return None
    ids = np.unique(np.array(toks, dtype=object), return_inverse=True)[1].reshape(-1)
    is_text = np.array([_NOT_TEXT.fullmatch(t) is None for t in toks])
    longest = n // 2 if rule.max_span is None else min(rule.max_span, n // 2)
    for span in range(1, longest + 1):
        repeats = rule.short_repeats if span <= rule.short_span else rule.long_repeats
        # A region of c copies of a span of length L has c·L − L positions where u[i] == u[i + L].
        need = (repeats - 1) * span
        if need <= 0:
            continue
        same = np.concatenate(([0], (ids[:-span] == ids[span:]).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(same))
        for start, stop in zip(edges[::2], edges[1::2]):
            # Punctuation-only spans ("! ! ! !", tokenised tweets) are emphasis, not a text loop.
            if stop - start >= need and is_text[start : start + span].any():
                return span, float(stop - start + span) / span
    return None


def is_loop(text: str | Sequence[str], rule: LoopRule = DEFAULT_LOOP_RULE) -> bool:
    """Whether ``text`` contains an n-gram loop as :class:`LoopRule` defines it."""
    return find_loop(text, rule) is not None


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams of units over all n-grams in ``texts`` (Li et al., 2016); NaN if there are none.

    N-grams do not cross sentence boundaries. The value falls as the set grows, so compare only sets
    of the same size (e.g. the same split).
    """
    if n < 1:
        raise ValueError(f"distinct_n: n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        toks = units(text)
        grams = list(zip(*(toks[i:] for i in range(n))))
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else math.nan


def length_ratio(output: str, source: str) -> float:
    """Characters of ``output`` over characters of ``source``, whitespace-normalised; NaN for an empty source."""
    out, src = " ".join(output.split()), " ".join(source.split())
    return len(out) / len(src) if src else math.nan
