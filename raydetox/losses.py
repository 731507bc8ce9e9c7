"""Extra loss terms added to the seq2seq cross-entropy (``training.extra_loss``), in a registry.

The registry holds *factories*: ``factory(LossContext) -> term``, called once per trainer with what a
term may need beyond the batch (the tokenizer, the lexicon); the term is then
``term(model, inputs, outputs) -> scalar tensor`` on every training step. Register a new factory in
:data:`EXTRA_LOSSES` and name it in the config (validated at load) — the training loop never changes.

- ``copy_unlikelihood``: unlikelihood on every source token the reference removed.
- ``toxic_unlikelihood``: unlikelihood on the pieces of the source's lexicon terms that the reference
  removed — the same penalty, kept to what is toxic, so rephrasing (a removed harmless word) is not punished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import regex
import torch

from raydetox.errors import RaydetoxError

ExtraLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor], Any], torch.Tensor]


class TermFinder(Protocol):
    """What a term needs of a lexicon (:class:`raydetox.data.lexicon.Lexicon` is one)."""

    def word_terms(self, text: str, lang: str | None = None) -> list[str]: ...

    def __len__(self) -> int: ...


class LossSetupError(RaydetoxError, ValueError):
    """A ``training.extra_loss`` term cannot be built from what the run has (e.g. no lexicon terms)."""


@dataclass(frozen=True)
class LossContext:
    """What a term's factory may use, known once per trainer."""

    tokenizer: Any = None
    lexicon: TermFinder | None = None


LossFactory = Callable[[LossContext], ExtraLoss]


def _special_ids(model: torch.nn.Module) -> set[int]:
    config = getattr(model, "config", None)
    # Copying pad/eos/start tokens is never the problem; T5 uses 0 (pad = decoder start) and 1 (eos).
    return {
        getattr(config, name, None) for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id")
    } - {None} or {0, 1}


def unlikelihood(logits: torch.Tensor, labels: torch.Tensor, candidates: Sequence[Sequence[int]]) -> torch.Tensor:
    """``-log(1 - p(c))`` summed over each example's ``candidates`` and averaged over its target positions
    (``labels >= 0``; Welleck et al., 2019); zero when no example has a candidate."""
    batch = labels.size(0)
    width = max((len(c) for c in candidates), default=0)
    if width == 0:
        return logits.new_zeros(())
    cand = torch.zeros(batch, width, dtype=torch.long, device=labels.device)
    cand_mask = torch.zeros(batch, width, dtype=torch.bool, device=labels.device)
    for b, c in enumerate(candidates):
        cand[b, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        cand_mask[b, : len(c)] = True
    log_probs = logits.float().log_softmax(-1)  # (B, T, V)
    steps = log_probs.size(1)
    p = log_probs.gather(2, cand[:, None, :].expand(batch, steps, width)).exp()  # (B, T, C)
    ul = -torch.log1p(-p.clamp(max=1 - 1e-6))
    ul = (ul * cand_mask[:, None, :]).sum(-1)  # (B, T)
    positions = labels >= 0
    return (ul * positions).sum() / positions.sum().clamp(min=1)


def copy_unlikelihood_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
    """Unlikelihood penalty on copying input tokens that the reference removed.

    For each example the candidates are the source tokens absent from its target (for detoxification
    pairs these are, overwhelmingly, the toxic words), pushing probability mass away from verbatim
    copies of what had to go (:func:`unlikelihood`).
    """
    labels, source = inputs["labels"], inputs["input_ids"]
    special = _special_ids(model)
    candidates = [
        sorted(set(source[b].tolist()) - set(labels[b][labels[b] >= 0].tolist()) - special)
        for b in range(labels.size(0))
    ]
    return unlikelihood(outputs.logits, labels, candidates)


# A piece worth penalising carries a letter or digit: not a bare word-start marker, punctuation, or a
# byte-fallback piece (<0xF0>, shared by every emoji).
_WORD_CHAR = regex.compile(r"[\p{L}\p{N}]")
# raydetox.data.lexicon.BYTE_PIECE; not imported: config imports this module, and lexicon imports config.
_BYTE_PIECE = regex.compile(r"<0x[0-9A-Fa-f]{2}>")


class ToxicUnlikelihood:
    """Unlikelihood on the pieces of the lexicon terms found in each source, where the reference removed them.

    The source ids are decoded and matched with the lexicon (single-word terms of every language, as
    the every-piece decoding ban does); each term's pieces are those of its spellings (as found, lower,
    Capitalised, UPPER; with and without a leading space), kept to the ids present in that source and
    absent from its target. Term spellings are encoded once and cached.
    """

    def __init__(self, context: LossContext) -> None:
        if context.tokenizer is None or context.lexicon is None or len(context.lexicon) == 0:
            raise LossSetupError(
                "training.extra_loss: toxic_unlikelihood needs the tokenizer and a lexicon with terms "
                "(lexicon.learn or lexicon.wordlists); this run's lexicon is empty"
            )
        self.tokenizer = context.tokenizer
        self.lexicon = context.lexicon
        self._special = set(self.tokenizer.all_special_ids)
        self._pieces: dict[str, frozenset[int]] = {}

    def term_pieces(self, term: str) -> frozenset[int]:
        """Vocabulary ids of the word pieces that spell ``term`` (cached)."""
        if term not in self._pieces:
            spellings = {term, term.lower(), term[:1].upper() + term[1:], term.upper()}
            spellings |= {" " + s for s in spellings}
            encoded = self.tokenizer(sorted(spellings), add_special_tokens=False)["input_ids"]
            ids = {int(i) for seq in encoded for i in seq} - self._special
            self._pieces[term] = frozenset(i for i in ids if self._is_word_piece(i))
        return self._pieces[term]

    def _is_word_piece(self, token_id: int) -> bool:
        piece = str(self.tokenizer.convert_ids_to_tokens(token_id))
        return bool(_WORD_CHAR.search(piece)) and not _BYTE_PIECE.fullmatch(piece)

    def candidates(self, source: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
        """Per example: the ids of its source's term pieces that its target does not hold."""
        texts = self.tokenizer.batch_decode(source.tolist(), skip_special_tokens=True)
        out = []
        for b, text in enumerate(texts):
            pieces: set[int] = set()
            for term in self.lexicon.word_terms(text):
                pieces |= self.term_pieces(term)
            present = set(source[b].tolist()) - set(labels[b][labels[b] >= 0].tolist())
            out.append(sorted(pieces & present))
        return out

    def __call__(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
        return unlikelihood(outputs.logits, inputs["labels"], self.candidates(inputs["input_ids"], inputs["labels"]))


EXTRA_LOSSES: dict[str, LossFactory] = {
    "copy_unlikelihood": lambda context: copy_unlikelihood_loss,
    "toxic_unlikelihood": ToxicUnlikelihood,
}


def build_extra_loss(name: str, context: LossContext) -> ExtraLoss:
    """The term registered as ``name``, built for this run's ``context``."""
    if name not in EXTRA_LOSSES:
        raise LossSetupError(f"training.extra_loss: unknown {name!r}; expected one of {sorted(EXTRA_LOSSES)}")
    return EXTRA_LOSSES[name](context)
