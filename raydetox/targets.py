"""What a model learns to write for a pair: the neutral reference, or the source's words it keeps.

``training.target: kept_source_words`` trains on :func:`kept_source_words` — the words (and punctuation)
of the toxic sentence that its neutral reference keeps, in the source's order and spelling: a deletion-only
target. A model trained on it learns *which* words a human rewrite drops (lexicon terms or not) and
nothing it could not write under ``decoding.source_words_only``, which only lets it drop source words.
Scoring always compares outputs with the references themselves.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal, get_args

import regex

from raydetox.data.lexicon import UNSPACED, WORD_CHARS

Target = Literal["neutral", "kept_source_words"]
TARGETS: tuple[str, ...] = get_args(Target)

# One token per character in unspaced scripts (their words are not delimited), a run of word characters
# elsewhere (with apostrophes), any other visible character alone.
_TOKEN = regex.compile(rf"[{UNSPACED}]|[[{WORD_CHARS}'’]--[{UNSPACED}]]+|\S", regex.V1)
# Two letters, marks or digits of spaced script: words that would run together without a space.
_WORD = regex.compile(rf"[[\p{{L}}\p{{M}}\p{{N}}]--[{UNSPACED}]]{{2}}", regex.V1)


def word_tokens(text: str) -> list[regex.Match]:
    """The word and punctuation tokens :func:`kept_source_words` aligns (a match per token, with its span)."""
    return list(_TOKEN.finditer(text))


def kept_source_words(source: str, reference: str) -> str:
    """The tokens of ``source`` that ``reference`` keeps (difflib's matching blocks of the two token
    sequences, case-folded), each in the source's spelling and with the source's own gap before it when
    its neighbour is kept too (else a space where the source has one or two words would run together)."""
    src, ref = word_tokens(source), word_tokens(reference)
    matcher = difflib.SequenceMatcher(None, [m.group().casefold() for m in src], [m.group().casefold() for m in ref],
                                      autojunk=False)
    kept = [i for block in matcher.get_matching_blocks() for i in range(block.a, block.a + block.size)]
    out: list[str] = []
    for n, i in enumerate(kept):
        start = src[i].start()
        if n and kept[n - 1] == i - 1:
            gap = source[src[i - 1].end():start]
        elif not n:
            gap = ""
        else:  # a space where the source has one, or where two words would otherwise run together
            gap = " " if source[start - 1].isspace() or _WORD.match(out[-1][-1] + source[start]) else ""
        out.append(gap + src[i].group())
    return "".join(out)


def training_targets(sources: Sequence[str], references: Sequence[str], target: Target) -> list[str]:
    """What the model is trained to write for each (source, reference) pair under ``training.target``."""
    if len(sources) != len(references):
        raise ValueError(f"training_targets: {len(sources)} sources but {len(references)} references")
    if target == "neutral":
        return list(references)
    if target == "kept_source_words":
        return [kept_source_words(s, r) for s, r in zip(sources, references)]
    raise ValueError(f"training.target must be one of {list(TARGETS)}, got {target!r}")
