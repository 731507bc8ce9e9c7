"""Decoding controls (logits processors against toxic tokens and input copying) and batched generation.

``decoding.toxic_ban`` picks the toxic-term processor: ``first_token`` (:class:`ToxicTokenPenalty`, the
first piece of every lexicon term) or ``every_piece`` (:class:`SourceTermBan`, every spelling of the
terms in each source, plus a bonus on the source word after the term). ``decoding.source_words_only``
adds :class:`SourceWordsOnly` (the rewrite may only drop whole source words). The processors are
ordinary :class:`transformers.LogitsProcessor` subclasses, so they go into
``model.generate(logits_processor=LogitsProcessorList([...]))`` or a trainer's ``gen_kwargs`` unchanged.
Hugging Face's own controls (repetition penalties, n-gram blocking) are passed as ``generate()`` keyword
arguments built by :func:`generation_kwargs`; HF appends custom processors after its own, so ours act
last. In greedy search the processors see raw logits, in beam search log-probabilities: both are log
scales, so subtracting ``strength`` divides the token's (unnormalised) probability by ``e**strength``.
"""

from __future__ import annotations

import bisect
import math
import unicodedata
from collections.abc import Container, Iterable, Sequence
from typing import Any

import regex
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from raydetox.config import DecodingConfig
from raydetox.data.lexicon import BYTE_PIECE, UNSPACED, Lexicon, join_around_deletion
from raydetox.errors import ModelError

__all__ = [
    "CopyPenalty",
    "PieceTable",
    "SourceTermBan",
    "SourceWordsOnly",
    "kept_source_text",
    "source_positions",
    "ToxicTokenPenalty",
    "build_logits_processors",
    "generate",
    "generation_kwargs",
    "naive_generate",
]


def _check_strength(strength: float, name: str) -> float:
    strength = float(strength)
    if math.isnan(strength) or strength < 0:
        raise ValueError(f"{name} must be >= 0 (inf bans), got {strength}")
    return strength


def _check_num_beams(num_beams: int, name: str) -> int:
    if int(num_beams) < 1:
        raise ValueError(f"{name} num_beams must be >= 1, got {num_beams}")
    return int(num_beams)


def _check_hypotheses(name: str, hypos: int, rows: int, num_beams: int) -> None:
    """A processor built for ``rows`` sources sees ``rows * num_beams`` hypotheses (a row's beams adjacent)."""
    if hypos != rows * num_beams:
        raise ValueError(
            f"{name}: got {hypos} hypotheses but was built for {rows} source rows x "
            f"{num_beams} beams; pass num_beams equal to generate()'s num_beams"
        )


def _apply(scores: torch.Tensor, hit: torch.Tensor, strength: float) -> torch.Tensor:
    """Subtract ``strength`` where ``hit`` is True (a new tensor); ``inf`` sets those scores to -inf."""
    if math.isinf(strength):
        # masked_fill rather than subtraction: inf - inf would be nan for a score already at +inf.
        return scores.masked_fill(hit, -math.inf)
    return scores - hit.to(scores.dtype) * strength


class ToxicTokenPenalty(LogitsProcessor):
    """Subtract ``strength`` from the scores of the given token ids at every step.

    ``token_ids`` are the vocabulary ids that spell toxic lexicon terms (typically every sub-word piece
    that starts a term, computed by the lexicon). ``strength=inf`` bans them (score -inf); ``0`` is a
    no-op. Duplicate ids count once.
    """

    def __init__(self, token_ids: Sequence[int], strength: float) -> None:
        self.strength = _check_strength(strength, "ToxicTokenPenalty strength")
        ids = sorted({int(i) for i in token_ids})
        if ids and ids[0] < 0:
            raise ValueError(f"ToxicTokenPenalty: negative token id {ids[0]}")
        self.token_ids = torch.tensor(ids, dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.strength == 0 or self.token_ids.numel() == 0:
            return scores
        vocab = scores.shape[-1]
        if int(self.token_ids[-1]) >= vocab:
            raise ValueError(
                f"ToxicTokenPenalty: token id {int(self.token_ids[-1])} is outside the model's "
                f"vocabulary of {vocab} scores"
            )
        hit = torch.zeros(vocab, dtype=torch.bool, device=scores.device)
        hit[self.token_ids.to(scores.device)] = True
        return _apply(scores, hit.expand_as(scores), self.strength)


class CopyPenalty(LogitsProcessor):
    """Push down the token that would extend a verbatim copy of the source.

    Rule (with ``k = ngram - 1``): for each hypothesis, take its last ``k`` tokens; at every source
    position ``j`` where ``source[j-k:j]`` equals them, the token ``source[j]`` gets ``strength``
    subtracted from its score (once, however many positions match). So no ``ngram``-gram of the source
    can be reproduced without paying the penalty on its last token. ``ngram=1`` penalises every source
    token at every step (an additive cousin of HF's ``encoder_repetition_penalty``). A source window that
    contains ``pad_token_id`` never matches (padding, left or right, is ignored; so is the decoder start
    token of T5/mT5, which is the pad id), and tokens in ``ignore_token_ids`` (e.g. EOS, so that a
    copied sentence ending can still stop) are never penalised.

    ``source_ids`` is the encoder input ``(batch, src_len)``. During beam search the hypotheses are laid
    out ``batch * num_beams`` with the beams of one example adjacent (HF's ``repeat_interleave``), so
    hypothesis ``h`` belongs to source row ``h // num_beams``. All of it is tensor ops: no loop over the
    vocabulary, the batch or the source.
    """

    def __init__(
        self,
        source_ids: torch.LongTensor,
        strength: float,
        ngram: int = 3,
        pad_token_id: int = 0,
        num_beams: int = 1,
        ignore_token_ids: Iterable[int] = (),
    ) -> None:
        self.strength = _check_strength(strength, "CopyPenalty strength")
        if int(ngram) < 1:
            raise ValueError(f"CopyPenalty ngram must be >= 1, got {ngram}")
        self.num_beams = _check_num_beams(num_beams, "CopyPenalty")
        source_ids = torch.as_tensor(source_ids, dtype=torch.long)
        if source_ids.dim() == 1:
            source_ids = source_ids.unsqueeze(0)
        if source_ids.dim() != 2:
            raise ValueError(f"CopyPenalty source_ids must be (batch, length), got shape {tuple(source_ids.shape)}")
        self.ngram = int(ngram)
        self.batch_size = source_ids.shape[0]
        k = self.ngram - 1
        valid = source_ids != pad_token_id
        ignored = torch.tensor(sorted({int(i) for i in ignore_token_ids}), dtype=torch.long)
        penalisable = valid & ~torch.isin(source_ids, ignored)
        # Window w covers source[w : w+k] and is followed by source[w+k].
        self._next = source_ids[:, k:]
        self._ok = penalisable[:, k:]
        if k > 0 and self._next.shape[1] > 0:
            self._windows = source_ids[:, :-1].unfold(1, k, 1)  # (batch, n_windows, k)
            self._ok = self._ok & valid[:, :-1].unfold(1, k, 1).all(-1)
        else:
            self._windows = source_ids.new_empty((self.batch_size, self._next.shape[1], 0))

    def _to(self, device: torch.device) -> None:
        if self._next.device != device:
            self._next, self._ok, self._windows = (t.to(device) for t in (self._next, self._ok, self._windows))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        k = self.ngram - 1
        if self.strength == 0 or self._next.shape[1] == 0 or input_ids.shape[-1] < k:
            return scores
        hypos, vocab = scores.shape
        _check_hypotheses("CopyPenalty", hypos, self.batch_size, self.num_beams)
        self._to(scores.device)
        rows = torch.arange(hypos, device=scores.device) // self.num_beams
        nxt, ok = self._next[rows], self._ok[rows]
        if k > 0:
            tail = input_ids[:, -k:].to(scores.device)
            ok = ok & (self._windows[rows] == tail[:, None, :]).all(-1)
        if bool((nxt[ok] >= vocab).any()):
            raise ValueError(f"CopyPenalty: a source token id is outside the model's vocabulary of {vocab} scores")
        # Non-matching positions write into a sink column `vocab` that is dropped afterwards, so every
        # real write is True and duplicate indices cannot race.
        hit = torch.zeros(hypos, vocab + 1, dtype=torch.bool, device=scores.device)
        hit.scatter_(1, torch.where(ok, nxt, vocab), True)
        return _apply(scores, hit[:, :vocab], self.strength)


# Word-start markers of SentencePiece ("▁") and byte-level BPE ("Ġ") pieces.
_WORD_START = "\u2581\u0120"
# Scripts written without spaces: a term may start at any character of a run of them.
_UNSPACED = regex.compile(rf"[{UNSPACED}]")
# How many tokens back a hypothesis's current word is looked for (a longer word cannot be a term's prefix).
_MAX_WORD_PIECES = 24


class PieceTable:
    """A tokenizer's vocabulary as lower-cased piece texts, split into word-start and inner pieces.

    Built once per tokenizer (:meth:`of`); answers "which pieces would spell the start of this text" by
    prefix lookups, cached per text, so a processor never scans the vocabulary at a decoding step.
    """

    _cache: dict[int, PieceTable] = {}

    def __init__(self, tokenizer: Any) -> None:
        special = set(tokenizer.all_special_ids)
        self.size = len(tokenizer)
        self.text: list[str | None] = []  # None: a special or byte-fallback piece (a word boundary)
        self.starts_word: list[bool] = []
        for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(self.size)))):
            piece = str(piece)
            if i in special or BYTE_PIECE.fullmatch(piece):
                self.text.append(None)
                self.starts_word.append(True)
                continue
            self.starts_word.append(piece[:1] in _WORD_START or piece[:1].isspace())
            self.text.append(piece.lstrip(_WORD_START).lower())
        self._sorted: dict[bool, list[tuple[str, int]]] = {True: [], False: []}
        for i, text in enumerate(self.text):
            if text:
                self._sorted[self.starts_word[i]].append((text, i))
        for entries in self._sorted.values():
            entries.sort()
        self._keys = {k: [t for t, _ in v] for k, v in self._sorted.items()}
        self._spelling: dict[tuple[bool, str], list[int]] = {}

    @classmethod
    def of(cls, tokenizer: Any) -> PieceTable:
        """The table of ``tokenizer`` (built on first use; a tokenizer's vocabulary does not change)."""
        key = id(tokenizer)
        table = cls._cache.get(key)
        if table is None or table.size != len(tokenizer):
            table = cls._cache[key] = cls(tokenizer)
        return table

    def spelling(self, text: str, starts_word: bool) -> list[int]:
        """Ids of the (word-start or inner) pieces that begin spelling ``text``: a piece that is a prefix
        of it, or one that begins with all of it."""
        key = (starts_word, text)
        found = self._spelling.get(key)
        if found is None:
            entries, keys = self._sorted[starts_word], self._keys[starts_word]
            found = []
            for k in range(1, len(text)):  # proper prefixes, by exact lookup
                j = bisect.bisect_left(keys, text[:k])
                while j < len(keys) and keys[j] == text[:k]:
                    found.append(entries[j][1])
                    j += 1
            j = bisect.bisect_left(keys, text)  # the text itself and every longer piece beginning with it
            while j < len(keys) and keys[j].startswith(text):
                found.append(entries[j][1])
                j += 1
            self._spelling[key] = found
        return found

    def current_word(self, ids: Sequence[int]) -> str:
        """The text of the word a hypothesis is in the middle of ("" right after a word start marker
        alone, a special token or nothing)."""
        parts: list[str] = []
        for i in reversed(ids[-_MAX_WORD_PIECES:]):
            text = self.text[i] if 0 <= i < self.size else None
            if text is None:
                break
            parts.append(text)
            if self.starts_word[i]:
                break
        return "".join(reversed(parts))


class SourceTermBan(LogitsProcessor):
    """Keep each lexicon term of a source out of its rewrite, however the model would spell it.

    ``terms[b]`` are the (lower-case) lexicon terms found in source row ``b``. At every step a hypothesis
    of row ``b`` pays ``strength`` (``inf``: may not emit) on every token that would begin or continue one
    of them: word-start pieces that are a prefix of a term or begin with it, and inner pieces that are a
    prefix of (or begin with) the rest of a term the current word has started — after a bare word-start
    marker, inside a word, and anywhere in a run of unspaced script (zh, ja, th). Matching ignores case.
    Banning only a term's first piece lets a copy-prone model spell it another way or invent a word
    around it (``хthingт``); here no piece of it may start.

    ``continuations[b]`` are ``(context, token)`` pairs from the source: ``context`` the (up to 2) source
    tokens before a term, ``token`` the source token right after it. When a hypothesis ends with
    ``context`` (or is empty, for a term at the start), ``token`` gets ``bonus`` added: having copied up
    to the term, the model is steered to skip it and go on with the source. Hypotheses are laid out
    ``batch * num_beams`` with a row's beams adjacent, as in :class:`CopyPenalty`.
    """

    def __init__(
        self,
        pieces: PieceTable,
        terms: Sequence[Sequence[str]],
        strength: float,
        continuations: Sequence[Sequence[tuple[tuple[int, ...], int]]] = (),
        bonus: float = 0.0,
        num_beams: int = 1,
    ) -> None:
        self.strength = _check_strength(strength, "SourceTermBan strength")
        self.bonus = float(bonus)
        if not math.isfinite(self.bonus) or self.bonus < 0:
            raise ValueError(f"SourceTermBan bonus must be finite and >= 0, got {bonus}")
        self.num_beams = _check_num_beams(num_beams, "SourceTermBan")
        self.pieces = pieces
        self.terms = [sorted({t.lower() for t in row if t and t.strip()}) for row in terms]
        self.continuations = [list(row) for row in continuations] or [[] for _ in self.terms]
        if len(self.continuations) != len(self.terms):
            raise ValueError(f"SourceTermBan: {len(self.terms)} rows of terms but {len(self.continuations)} of continuations")
        # Word-start pieces are banned whatever came before: one id list per row.
        self._word_start = [sorted({i for t in row for i in pieces.spelling(t, True)}) for row in self.terms]
        self._banned: dict[tuple[int, str], frozenset[int]] = {}  # (row, current word) → banned ids

    def banned(self, row: int, hypothesis: Sequence[int]) -> frozenset[int]:
        """Token ids hypothesis ``hypothesis`` (its ids so far) of source row ``row`` may not emit next."""
        word = self.pieces.current_word(hypothesis)
        key = (row, word)
        if key not in self._banned:
            self._banned[key] = frozenset(self._banned_after(row, word))
        return self._banned[key]

    def _banned_after(self, row: int, word: str) -> set[int]:
        out = set(self._word_start[row])
        # Where in the current word a term may have begun: its start, and any unspaced character.
        starts = [0] + [k for k in range(1, len(word)) if _UNSPACED.match(word[k])]
        for term in self.terms[row]:
            if not word or _UNSPACED.match(term[0]):
                out.update(self.pieces.spelling(term, False))
            for k in starts:
                begun = word[k:]
                if begun and len(begun) < len(term) and term.startswith(begun):
                    out.update(self.pieces.spelling(term[len(begun):], False))
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        hypos, vocab = scores.shape
        _check_hypotheses("SourceTermBan", hypos, len(self.terms), self.num_beams)
        if self.pieces.size > vocab:
            raise ValueError(f"SourceTermBan: the tokenizer has {self.pieces.size} pieces, the model {vocab} scores")
        history = input_ids.tolist()
        hit = torch.zeros(hypos, vocab, dtype=torch.bool)
        boost = torch.zeros(hypos, vocab, dtype=scores.dtype)
        for h, ids in enumerate(history):
            row = h // self.num_beams
            if not self.terms[row]:
                continue
            banned = self.banned(row, ids)
            if banned:
                hit[h, list(banned)] = True
            if self.bonus:
                # The decoder start token (T5: the pad id) comes first; the rest is what was generated.
                generated = ids[1:]
                for context, token in self.continuations[row]:
                    fits = (not context and not generated) or (
                        context and len(generated) >= len(context) and tuple(generated[-len(context):]) == context)
                    if fits and token < vocab and token not in banned:
                        boost[h, token] = self.bonus
        out = scores
        if self.strength > 0 and bool(hit.any()):
            out = _apply(out, hit.to(scores.device), self.strength)
        if bool(boost.any()):
            out = out + boost.to(scores.device)
        return out


class SourceWordsOnly(LogitsProcessor):
    """Let a rewrite only drop whole words of its source: a learned deletion, never a word it lacks.

    A hypothesis of source row ``b`` is aligned to the source (each token it emitted at its next
    occurrence); it may then emit the source's next token, the first piece of any later source word
    (skipping the words between) or EOS (skipping the rest) — everything else gets ``-inf``. Each skipped
    word costs ``skip_penalty`` (subtracted from the log-probability), so the model drops a word only when
    it prefers a later one by more than that; with none, a copy-prone base derailed by a banned term cut
    most sentences short. The pieces that hold a ``lexicon`` term (found in the row's source ``texts``,
    through the pieces' character ``offsets``, as ``delete`` finds it in the row's ``langs`` entry; None:
    every language's terms; phrases too) cost ``toxic_penalty`` to start (``inf``: never) and skip free;
    what is glued to a term (``idiot`` | ``!``) is a word of its own. A word whose first piece an earlier
    processor banned (``-inf``) skips free too. Only a token's next occurrence is offered (where the
    alignment will put it). ``pad_token_id`` and
    ``eos_token_id`` in ``source_ids`` are padding and the end, not words. Hypotheses are laid out
    ``batch * num_beams``.
    """

    def __init__(
        self,
        source_ids: torch.LongTensor,
        pieces: PieceTable,
        pad_token_id: int,
        eos_token_id: int,
        skip_penalty: float = 0.0,
        num_beams: int = 1,
        lexicon: Lexicon | None = None,
        toxic_penalty: float = 0.0,
        langs: Sequence[str | None] | None = None,
        texts: Sequence[str] | None = None,
        offsets: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> None:
        self.num_beams = _check_num_beams(num_beams, "SourceWordsOnly")
        self.skip_penalty = _check_strength(skip_penalty, "SourceWordsOnly skip_penalty")
        self.toxic_penalty = _check_strength(toxic_penalty, "SourceWordsOnly toxic_penalty")
        self.eos = int(eos_token_id)
        self.pieces = pieces
        self.sources = [[t for t in row if t not in (pad_token_id, eos_token_id)] for row in source_ids.tolist()]
        langs = list(langs) if langs is not None else [None] * len(self.sources)
        if len(langs) != len(self.sources):
            raise ValueError(f"SourceWordsOnly: {len(self.sources)} source rows but {len(langs)} languages")
        # Per row, the positions of the pieces that hold a lexicon term (of the row's language), and the
        # positions inside a word where a term or what follows it starts (``fuck`` | ``,`` in ``fuck,``).
        self.toxic: list[set[int]] = [set() for _ in self.sources]
        self.inner_starts: list[set[int]] = [set() for _ in self.sources]
        if lexicon and self.toxic_penalty:
            if texts is None or offsets is None or len(texts) != len(self.sources) or len(offsets) != len(texts):
                raise ValueError("SourceWordsOnly: a toxic penalty needs each source row's text and the character "
                                 "offsets of its pieces")
            for b, (text, spans, lang) in enumerate(zip(texts, offsets, langs)):
                row = self.sources[b]
                self.toxic[b], inner = self._term_pieces(text, list(spans)[:len(row)], lexicon, lang)
                self.inner_starts[b] = {p for p in inner if not self._starts(row[p])}
        # The pieces no hypothesis may emit (a toxic penalty of inf): the alignment passes over them.
        self.never = self.toxic if self.toxic_penalty == math.inf else [set() for _ in self.sources]

    def _starts(self, token: int) -> bool:
        return 0 <= token < self.pieces.size and self.pieces.starts_word[token]

    @staticmethod
    def _term_pieces(text: str, offsets: list[tuple[int, int]], lexicon: Lexicon,
                     lang: str | None) -> tuple[set[int], set[int]]:
        """(positions of the pieces that hold a term, positions inside a word that start a segment).

        Terms are found in the source text as ``delete`` finds them (phrases included); a term takes
        every piece its characters overlap, and the bare word-start piece before it; where it ends or
        begins inside a word, the rest of the word is a segment of its own: punctuation glued to a term
        (``idiot!``) stays when the term goes, and in unspaced script (one "word" per clause) only the
        pieces that hold the term go, not the clause.
        """
        spans = lexicon.spans(text, lang)
        if not spans:
            return set(), set()
        nfc = unicodedata.normalize("NFC", text)
        if nfc != text:  # spans are NFC positions: map them back to the text's own
            length = [len(unicodedata.normalize("NFC", text[:i])) for i in range(len(text) + 1)]
            spans = [(bisect.bisect_left(length, s), bisect.bisect_left(length, e), t) for s, e, t in spans]
        ranges: list[list[int]] = []  # [first, last] piece of each term, overlapping ones merged
        for s, e, _ in spans:
            held = [p for p, (a, b) in enumerate(offsets) if a < e and b > s]
            if not held:
                continue
            first, last = held[0], held[-1]
            while first > 0 and not text[offsets[first - 1][0]:offsets[first - 1][1]].strip():
                first -= 1  # a bare word-start piece goes with the term it starts
            if ranges and first <= ranges[-1][1]:
                ranges[-1][1] = max(ranges[-1][1], last)
            else:
                ranges.append([first, last])
        toxic = {p for first, last in ranges for p in range(first, last + 1)}
        inner = {p for first, last in ranges for p in (first, last + 1) if p < len(offsets)}
        return toxic, inner

    def costs(self, row: int, generated: Sequence[int], banned: Iterable[int] = ()) -> dict[int, float]:
        """Each token a hypothesis of source ``row`` that has emitted ``generated`` may emit next → what
        it costs: skipped words × ``skip_penalty`` (lexicon terms and words starting with a ``banned``
        token skip free), plus ``toxic_penalty`` to start a lexicon term."""
        source, toxic, inner, never = self.sources[row], self.toxic[row], self.inner_starts[row], self.never[row]
        positions = source_positions(source, generated, never)
        if positions is None:  # not from the source (the processor was not applied from the start)
            return {self.eos: 0.0}
        at = positions[-1] + 1 if positions else 0
        banned = set(banned)
        out: dict[int, float] = {}
        skipped = 0
        seen: set[int] = set()  # a token emitted is aligned to its next occurrence: only that one may be offered
        for j in range(at, len(source)):
            token = source[j]
            if j in never:  # a banned term's piece: never emitted, skipped free, not where a token aligns
                continue
            if j == at or self._starts(token) or j in inner:
                # The penalty is for starting a term: the pieces after one already started cost nothing more.
                starts_term = j in toxic and not (j == at and positions and j - 1 in toxic)
                cost = (skipped * self.skip_penalty if skipped else 0.0) + (self.toxic_penalty if starts_term else 0.0)
                if cost < math.inf and token not in seen:
                    out[token] = cost
                skipped += j not in toxic and token not in banned
            seen.add(token)
        out[self.eos] = min(out.get(self.eos, math.inf), skipped * self.skip_penalty if skipped else 0.0)
        return out

    def allowed(self, row: int, generated: Sequence[int]) -> list[int]:
        """Token ids a hypothesis of source ``row`` that has emitted ``generated`` may emit next."""
        return list(self.costs(row, generated))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        hypos, vocab = scores.shape
        _check_hypotheses("SourceWordsOnly", hypos, len(self.sources), self.num_beams)
        cost = torch.full((hypos, vocab), math.inf, dtype=scores.dtype)
        banned = torch.isneginf(scores).cpu()
        for h, ids in enumerate(input_ids.tolist()):
            row = h // self.num_beams
            present = [t for t in set(self.sources[row]) if 0 <= t < vocab]
            already = [t for t, out in zip(present, banned[h, present].tolist()) if out]
            # The decoder start token (T5: the pad id) comes first; the rest is what was generated.
            costs = self.costs(row, ids[1:], already)
            tokens = [t for t in costs if t < vocab]
            cost[h, tokens] = torch.tensor([costs[t] for t in tokens], dtype=scores.dtype)
        return scores - cost.to(scores.device)


def source_positions(source: Sequence[int], generated: Sequence[int], never: Container[int] = ()) -> list[int] | None:
    """Where each token of ``generated`` sits in ``source``, each at its next occurrence outside the
    ``never`` positions (the alignment :class:`SourceWordsOnly` decodes under), or None if one of them
    is not there."""
    positions, at = [], 0
    for token in generated:
        try:
            at = source.index(token, at)
            while at in never:
                at = source.index(token, at + 1)
        except ValueError:
            return None
        positions.append(at)
        at += 1
    return positions


def kept_source_text(text: str, offsets: Sequence[tuple[int, int]], positions: Sequence[int]) -> str:
    """The characters of ``text`` under the source pieces at ``positions`` (``offsets``: each piece's
    character span), each with the gap before it: what a rewrite that only drops source words keeps, in
    the source's own spelling, spaces and case rather than the tokenizer's decoding of the pieces. Where
    pieces were dropped, the whitespace is tidied as the ``delete`` system tidies it."""
    out, end, prev = "", 0, -1
    # After a deletion, (what was kept before it, the kept text since): joined once the text since holds
    # more than whitespace, since a bare "▁" piece (before digits, emoji, rare words) carries no word.
    pending: tuple[str, str] | None = None
    for p in positions:
        # From the previous source piece's end: the piece's leading space, whether or not its span holds it.
        start, stop = (offsets[p - 1][1] if p > 0 else 0), offsets[p][1]
        start = max(start, end)  # byte pieces of one character share its span
        if stop > start:
            if p > prev + 1 and pending is None:  # pieces dropped since the last kept one
                after = len(text[end:]) - len(text[end:].lstrip()) if out else 0
                pending = (out + text[end:end + after], "")
            if pending is None:
                out += text[start:stop]
            else:
                pending = (pending[0], pending[1] + text[start:stop])
                if pending[1].strip():
                    out, pending = join_around_deletion(*pending), None
            end = stop
        prev = p
    if pending is not None:
        out = join_around_deletion(*pending)
    return out.strip()


def source_term_ban(
    pieces: PieceTable,
    lexicon: Lexicon,
    texts: Sequence[str],
    source_ids: torch.LongTensor,
    strength: float,
    bonus: float,
    num_beams: int,
) -> SourceTermBan:
    """The :class:`SourceTermBan` of one batch: each source's single-word lexicon terms (of every
    language; a phrase's first word is mostly harmless alone, as in :meth:`Lexicon.token_ids`), and
    after each term found in the source's pieces the piece that follows it."""
    terms = [lexicon.word_terms(text) for text in texts]
    continuations = [_continuations(pieces, row.tolist(), found) for row, found in zip(source_ids, terms)]
    return SourceTermBan(pieces, terms, strength, continuations, bonus, num_beams)


def _continuations(pieces: PieceTable, ids: list[int], terms: Sequence[str]) -> list[tuple[tuple[int, ...], int]]:
    """(up to 2 source tokens before a run of terms, the source token after it) for each run of
    word-initial term occurrences in a source's pieces (terms separated only by spaces form one run: the
    model skips them together; the pad and EOS ids end the text)."""
    if not terms:
        return []
    text, start_of = "", []  # lower-cased text of the pieces, and where each piece starts in it
    for i in ids:
        start_of.append(len(text))
        piece = pieces.text[i] if 0 <= i < pieces.size else None
        if piece is None:
            text += "\0"
            continue
        text += (" " if pieces.starts_word[i] else "") + piece
    spans = []
    for term in terms:
        begin = text.find(term)
        while begin >= 0:
            end = begin + len(term)
            word_start = begin == 0 or not text[begin - 1].isalnum() or _UNSPACED.match(term[0])
            word_end = end >= len(text) or not text[end].isalnum() or _UNSPACED.match(term[-1])
            if word_start and word_end:
                spans.append((begin, end))
            begin = text.find(term, begin + 1)
    runs: list[list[int]] = []
    for begin, end in sorted(spans):
        if runs and not text[runs[-1][1]:begin].strip():
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([begin, end])
    out = []
    for begin, end in runs:
        first = max(j for j in range(len(ids)) if start_of[j] <= begin)  # the piece holding the run's start
        after = next((j for j in range(first + 1, len(ids)) if start_of[j] >= end), None)
        if after is not None:
            out.append((tuple(ids[max(0, first - 2):first]), ids[after]))
    return out


def needs_pieces(cfg: DecodingConfig) -> bool:
    """Whether :func:`build_logits_processors` needs the tokenizer's :class:`PieceTable` for ``cfg``."""
    return (cfg.toxic_penalty > 0 and cfg.toxic_ban == "every_piece") or cfg.source_words_only


def bans_token_ids(cfg: DecodingConfig) -> bool:
    """Whether ``cfg`` bans toxic token ids (``toxic_ban: first_token`` with a toxic penalty): only then
    must :func:`generate` be given ``toxic_token_ids``."""
    return cfg.toxic_penalty > 0 and cfg.toxic_ban == "first_token" and not cfg.source_words_only


def needs_lexicon(cfg: DecodingConfig) -> bool:
    """Whether ``cfg``'s toxic penalty finds the terms in each source text with the lexicon
    (``every_piece``, ``source_words_only``), so the processors are built from the raw texts."""
    return cfg.toxic_penalty > 0 and (cfg.toxic_ban == "every_piece" or cfg.source_words_only)


def _validate(cfg: DecodingConfig) -> None:
    """Range checks the config dataclass does not do; messages name the ``decoding.`` key."""
    for key in ("num_beams", "max_new_tokens", "batch_size", "copy_ngram"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"decoding.{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("toxic_penalty", "copy_penalty", "source_skip_penalty"):
        _check_strength(getattr(cfg, key), f"decoding.{key}")
    for key in ("repetition_penalty", "encoder_repetition_penalty"):
        value = getattr(cfg, key)
        if value is not None and not value > 0:
            raise ValueError(f"decoding.{key} must be > 0 (1.0 = off), got {value}")
    for key in ("encoder_no_repeat_ngram_size", "no_repeat_ngram_size"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ValueError(f"decoding.{key} must be >= 0 (0 = off), got {value}")


# DecodingConfig keys passed to HF ``generate`` as they are (its own logits processors).
HF_GENERATION_KEYS = ("repetition_penalty", "encoder_repetition_penalty", "encoder_no_repeat_ngram_size",
                      "no_repeat_ngram_size")


def generation_kwargs(cfg: DecodingConfig) -> dict[str, Any]:
    """``generate()`` keyword arguments for HF's own controls (deterministic search; unset ones omitted)."""
    _validate(cfg)
    kwargs: dict[str, Any] = {"num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens, "do_sample": False}
    for key in HF_GENERATION_KEYS:
        value = getattr(cfg, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


def build_logits_processors(
    cfg: DecodingConfig,
    source_ids: torch.LongTensor | None,
    toxic_token_ids: Sequence[int] | None,
    pad_token_id: int,
    eos_token_id: int | None = None,
    lexicon: Lexicon | None = None,
    texts: Sequence[str] | None = None,
    pieces: PieceTable | None = None,
    langs: Sequence[str | None] | None = None,
    offsets: Sequence[Sequence[tuple[int, int]]] | None = None,
) -> LogitsProcessorList:
    """Our processors for one batch of encoder inputs, per ``cfg`` (a strength of 0 leaves it out).

    ``source_ids`` (the batch's encoder ``input_ids``) is needed when ``cfg.copy_penalty > 0``. With
    ``cfg.toxic_penalty > 0``, ``toxic_ban: first_token`` needs ``toxic_token_ids``; ``every_piece``
    needs the ``lexicon``, the batch's source ``texts``, their ``source_ids`` and the tokenizer's
    ``pieces``; ``source_words_only`` the ``source_ids``, ``pieces`` and ``eos_token_id``, which is
    never copy-penalised (and, with a toxic penalty, the lexicon, matched in each row's ``langs`` entry,
    the ``texts`` and their pieces' character ``offsets``).
    """
    _validate(cfg)
    processors = LogitsProcessorList()
    if cfg.source_words_only:
        pass  # the toxic penalty hits the source's term words in SourceWordsOnly, below
    elif cfg.toxic_penalty > 0 and cfg.toxic_ban == "every_piece":
        if lexicon is None or texts is None or source_ids is None or pieces is None:
            raise ValueError(f"decoding.toxic_ban=every_piece with toxic_penalty={cfg.toxic_penalty} needs the "
                             "lexicon, the source texts and ids and the tokenizer's pieces")
        processors.append(source_term_ban(pieces, lexicon, texts, source_ids, cfg.toxic_penalty,
                                          cfg.toxic_continuation_bonus, cfg.num_beams))
    elif bans_token_ids(cfg):
        if toxic_token_ids is None:
            raise ValueError(f"decoding.toxic_penalty={cfg.toxic_penalty} but no toxic token ids were given")
        processors.append(ToxicTokenPenalty(toxic_token_ids, cfg.toxic_penalty))
    if cfg.source_words_only:
        if source_ids is None or pieces is None or eos_token_id is None:
            raise ValueError("decoding.source_words_only needs the source ids, the tokenizer's pieces and its EOS id")
        if cfg.toxic_penalty > 0 and (lexicon is None or texts is None or offsets is None):
            raise ValueError(f"decoding.source_words_only with toxic_penalty={cfg.toxic_penalty} needs the lexicon, "
                             "the source texts and their pieces' character offsets")
        processors.append(SourceWordsOnly(source_ids, pieces, pad_token_id, eos_token_id, cfg.source_skip_penalty,
                                          cfg.num_beams, lexicon, cfg.toxic_penalty, langs, texts, offsets))
    if cfg.copy_penalty > 0:
        if source_ids is None:
            raise ValueError(f"decoding.copy_penalty={cfg.copy_penalty} but no source ids were given")
        processors.append(
            CopyPenalty(
                source_ids,
                cfg.copy_penalty,
                ngram=cfg.copy_ngram,
                pad_token_id=pad_token_id,
                num_beams=cfg.num_beams,
                ignore_token_ids=() if eos_token_id is None else (eos_token_id,),
            )
        )
    return processors


def _encode(
    tokenizer: Any, texts: Sequence[str], max_source_length: int, offsets: bool = False
) -> tuple[list[list[int]], list[list[tuple[int, int]]] | None]:
    """Each text's token ids, and with ``offsets`` their character spans from the same tokenisation."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"generate: texts[{i}] is {type(text).__name__}, expected str")
    if offsets and not getattr(tokenizer, "is_fast", False):
        raise ValueError("decoding.source_words_only keeps the source's own characters: it needs a fast tokenizer "
                         f"(character offsets), got {type(tokenizer).__name__}")
    if not texts:
        return [], [] if offsets else None
    enc = tokenizer(list(texts), truncation=True, max_length=max_source_length, return_offsets_mapping=offsets)
    return enc["input_ids"], enc["offset_mapping"] if offsets else None


def _kept_text(tokenizer: Any, text: str, ids: list[int], offsets: list[tuple[int, int]], generated: list[int],
               decoded: str, terms_out: Lexicon | None = None, lang: str | None = None,
               never: Container[int] = ()) -> str:
    """What ``source_words_only`` keeps of ``text``: the source characters of the ``generated`` pieces,
    then the part of ``text`` the model never saw (cut off at ``max_source_length``) as it is, less its
    ``terms_out`` lexicon terms (the toxic penalty's rule where the model had no choice)."""
    special = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    source = [(i, o) for i, o in zip(ids, offsets) if i not in special]
    positions = source_positions([i for i, _ in source], [t for t in generated if t not in special], never)
    if positions is None:  # cannot happen under SourceWordsOnly; the decoded text is then all there is
        return decoded
    offsets = [o for _, o in source]
    cut = max((b for _, b in offsets), default=0)
    unseen = text[cut:]
    spans = terms_out.spans(unseen, lang) if terms_out is not None and unseen.strip() else []
    if spans and unicodedata.normalize("NFC", unseen) != unseen:  # spans are NFC positions
        kept = kept_source_text(text, offsets, positions)
        rest = terms_out.remove(unseen, lang).strip()
        return (kept + (" " if kept and unseen[:1].isspace() else "") + rest).strip()
    # The unseen part as further pieces, its terms dropped and the stretches between them kept: the
    # spaces around every deletion are then tidied by one rule, at the cut as anywhere else.
    offsets, positions = list(offsets), list(positions)
    start = cut
    for a, b, _ in [*spans, (len(unseen), len(unseen), "")]:
        if cut + a > start:
            positions.append(len(offsets))
            offsets.append((start, cut + a))
        if b > a:
            offsets.append((cut + a, cut + b))
        start = cut + b
    return kept_source_text(text, offsets, positions)


def _run(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: DecodingConfig,
    toxic_token_ids: Sequence[int] | None,
    max_source_length: int,
    progress: bool,
    sort_by_length: bool,
    lexicon: Lexicon | None = None,
    langs: Sequence[str | None] | None = None,
) -> list[str]:
    if not getattr(model.config, "is_encoder_decoder", False):
        raise ModelError(f"generate: {type(model).__name__} is not an encoder-decoder (seq2seq) model")
    kwargs = generation_kwargs(cfg)
    encoded, offsets = _encode(tokenizer, texts, max_source_length, offsets=cfg.source_words_only)
    order = list(range(len(encoded)))
    if sort_by_length:
        # Longest first: an out-of-memory batch shows up at once, and batches hold similar lengths.
        order.sort(key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    pieces = PieceTable.of(tokenizer) if needs_pieces(cfg) else None
    outputs: list[str | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(order), unit="text", disable=not progress) as bar:
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
                processors = build_logits_processors(
                    cfg, batch["input_ids"], toxic_token_ids, tokenizer.pad_token_id, tokenizer.eos_token_id,
                    lexicon=lexicon, texts=[texts[i] for i in idx], pieces=pieces,
                    langs=None if langs is None else [langs[i] for i in idx],
                    offsets=None if offsets is None else [offsets[i] for i in idx],
                )
                generated = model.generate(**batch, logits_processor=processors, **kwargs)
                constraint = next((p for p in processors if isinstance(p, SourceWordsOnly)), None)
                for k, (i, text) in enumerate(zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True))):
                    outputs[i] = text if offsets is None else _kept_text(
                        tokenizer, texts[i], encoded[i], offsets[i], generated[k].tolist(), text,
                        terms_out=lexicon if needs_lexicon(cfg) else None, lang=None if langs is None else langs[i],
                        never=constraint.never[k] if constraint is not None else ())
                bar.update(len(idx))
    finally:
        model.train(was_training)
    return outputs  # type: ignore[return-value]


def generate(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: DecodingConfig,
    toxic_token_ids: Sequence[int] | None = None,
    max_source_length: int = 64,
    progress: bool = False,
    lexicon: Lexicon | None = None,
    langs: Sequence[str | None] | None = None,
) -> list[str]:
    """Rewrite ``texts`` with a seq2seq ``model`` under ``cfg``; outputs in input order.

    Batches of ``cfg.batch_size`` are formed from the texts sorted by token length, longest first (fail
    fast on out-of-memory, little padding); greedy or beam search per ``cfg.num_beams``; the model is
    put in eval mode (its previous mode is restored) and run under ``torch.inference_mode``.
    ``toxic_token_ids`` serve ``toxic_ban: first_token``, the ``lexicon`` serves ``every_piece`` and
    ``source_words_only``, which matches each text's terms in its ``langs`` entry (None: every language).
    """
    if langs is not None and len(langs) != len(texts):
        raise ValueError(f"generate: {len(texts)} texts but {len(langs)} languages")
    return _run(model, tokenizer, texts, cfg, toxic_token_ids, max_source_length, progress, sort_by_length=True,
                lexicon=lexicon, langs=langs)


def naive_generate(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: DecodingConfig,
    toxic_token_ids: Sequence[int] | None = None,
    max_source_length: int = 64,
    progress: bool = False,
    lexicon: Lexicon | None = None,
) -> list[str]:
    """Same as :func:`generate` but batches in input order without sorting (the benchmark's reference)."""
    return _run(model, tokenizer, texts, cfg, toxic_token_ids, max_source_length, progress, sort_by_length=False,
                lexicon=lexicon)
