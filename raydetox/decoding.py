"""Decoding controls (logits processors against toxic tokens and input copying) and batched generation.

The two processors are ordinary :class:`transformers.LogitsProcessor` subclasses, so they go into
``model.generate(logits_processor=LogitsProcessorList([...]))`` or a trainer's ``gen_kwargs`` unchanged.
Hugging Face's own controls (repetition penalties, n-gram blocking) are passed as ``generate()`` keyword
arguments built by :func:`generation_kwargs`; HF appends custom processors after its own, so ours act
last. In greedy search the processors see raw logits, in beam search log-probabilities: both are log
scales, so subtracting ``strength`` divides the token's (unnormalised) probability by ``e**strength``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from raydetox.config import DecodingConfig
from raydetox.errors import ModelError

__all__ = [
    "CopyPenalty",
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
        if int(num_beams) < 1:
            raise ValueError(f"CopyPenalty num_beams must be >= 1, got {num_beams}")
        source_ids = torch.as_tensor(source_ids, dtype=torch.long)
        if source_ids.dim() == 1:
            source_ids = source_ids.unsqueeze(0)
        if source_ids.dim() != 2:
            raise ValueError(f"CopyPenalty source_ids must be (batch, length), got shape {tuple(source_ids.shape)}")
        self.ngram = int(ngram)
        self.num_beams = int(num_beams)
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
        if hypos != self.batch_size * self.num_beams:
            raise ValueError(
                f"CopyPenalty: got {hypos} hypotheses but was built for {self.batch_size} source rows x "
                f"{self.num_beams} beams; pass num_beams equal to generate()'s num_beams"
            )
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


def _validate(cfg: DecodingConfig) -> None:
    """Range checks the config dataclass does not do; messages name the ``decoding.`` key."""
    for key in ("num_beams", "max_new_tokens", "batch_size", "copy_ngram"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"decoding.{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("toxic_penalty", "copy_penalty"):
        _check_strength(getattr(cfg, key), f"decoding.{key}")
    for key in ("repetition_penalty", "encoder_repetition_penalty"):
        value = getattr(cfg, key)
        if value is not None and not value > 0:
            raise ValueError(f"decoding.{key} must be > 0 (1.0 = off), got {value}")
    for key in ("encoder_no_repeat_ngram_size", "no_repeat_ngram_size"):
        value = getattr(cfg, key)
        if value is not None and value < 0:
            raise ValueError(f"decoding.{key} must be >= 0 (0 = off), got {value}")


_HF_KEYS = ("repetition_penalty", "encoder_repetition_penalty", "encoder_no_repeat_ngram_size", "no_repeat_ngram_size")


def generation_kwargs(cfg: DecodingConfig) -> dict[str, Any]:
    """``generate()`` keyword arguments for HF's own controls (deterministic search; unset ones omitted)."""
    _validate(cfg)
    kwargs: dict[str, Any] = {"num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens, "do_sample": False}
    for key in _HF_KEYS:
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
) -> LogitsProcessorList:
    """Our processors for one batch of encoder inputs, per ``cfg`` (a strength of 0 leaves it out).

    ``source_ids`` (the batch's encoder ``input_ids``) is needed when ``cfg.copy_penalty > 0``;
    ``toxic_token_ids`` when ``cfg.toxic_penalty > 0``. ``eos_token_id`` is never copy-penalised.
    """
    _validate(cfg)
    processors = LogitsProcessorList()
    if cfg.toxic_penalty > 0:
        if toxic_token_ids is None:
            raise ValueError(f"decoding.toxic_penalty={cfg.toxic_penalty} but no toxic token ids were given")
        processors.append(ToxicTokenPenalty(toxic_token_ids, cfg.toxic_penalty))
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


def _encode(tokenizer: Any, texts: Sequence[str], max_source_length: int) -> list[list[int]]:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"generate: texts[{i}] is {type(text).__name__}, expected str")
    if not texts:
        return []
    return tokenizer(list(texts), truncation=True, max_length=max_source_length)["input_ids"]


def _run(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: DecodingConfig,
    toxic_token_ids: Sequence[int] | None,
    max_source_length: int,
    progress: bool,
    sort_by_length: bool,
) -> list[str]:
    if not getattr(model.config, "is_encoder_decoder", False):
        raise ModelError(f"generate: {type(model).__name__} is not an encoder-decoder (seq2seq) model")
    kwargs = generation_kwargs(cfg)
    encoded = _encode(tokenizer, texts, max_source_length)
    order = list(range(len(encoded)))
    if sort_by_length:
        # Longest first: an out-of-memory batch shows up at once, and batches hold similar lengths.
        order.sort(key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    outputs: list[str | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(order), unit="text", disable=not progress) as bar:
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
                processors = build_logits_processors(
                    cfg, batch["input_ids"], toxic_token_ids, tokenizer.pad_token_id, tokenizer.eos_token_id
                )
                generated = model.generate(**batch, logits_processor=processors, **kwargs)
                for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                    outputs[i] = text
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
) -> list[str]:
    """Rewrite ``texts`` with a seq2seq ``model`` under ``cfg``; outputs in input order.

    Batches of ``cfg.batch_size`` are formed from the texts sorted by token length, longest first (fail
    fast on out-of-memory, little padding); greedy or beam search per ``cfg.num_beams``; the model is
    put in eval mode (its previous mode is restored) and run under ``torch.inference_mode``.
    """
    return _run(model, tokenizer, texts, cfg, toxic_token_ids, max_source_length, progress, sort_by_length=True)


def naive_generate(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: DecodingConfig,
    toxic_token_ids: Sequence[int] | None = None,
    max_source_length: int = 64,
    progress: bool = False,
) -> list[str]:
    """Same as :func:`generate` but batches in input order without sorting (the benchmark's reference)."""
    return _run(model, tokenizer, texts, cfg, toxic_token_ids, max_source_length, progress, sort_by_length=False)
