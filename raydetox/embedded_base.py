"""The offline embedded base: a small T5 with a SentencePiece unigram tokenizer trained on the corpus
itself, pretrained to copy and to edit, built once and cached in a directory keyed by a hash of its
config and data. It stands in for mT5 where no hub is reachable (this machine, CI).

Recipe (``EmbeddedBaseConfig`` defaults): 2.2M-parameter T5 with tied embeddings, a few heads
initialised to attend to the previous tokens (the half of the content-based copy circuit a tiny T5 is
slow to find on its own), a length curriculum (<= 32 tokens for the first half of the steps, then
<= 64), AdamW with warm restarts, a fixed number of steps. Each example is drawn, language-balanced,
from one objective of ``model.embedded.mix``: copy (text → text), denoise (words dropped / swapped /
masked → text), deletion (lexicon terms of the text's language inserted into a clean neutral side →
the neutral side) and real toxic → neutral pairs (the train split, ``model.embedded.sources``).

Never on evaluation text: every validation/test/holdout text of the corpus (``forbidden``) is dropped
from all objectives (listed in ``pretraining_dropped.csv``) and :func:`assert_no_evaluation_text`
checks the assembled set before a step is taken. Training-split pairs held out of pretraining give
the zero-shot edit figures of ``build_report.json``; held-out training texts its copy fidelity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import random
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import sacrebleu
import torch
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from raydetox.cache import building
from raydetox.compat import t5_relative_position_bucket
from raydetox.config import ConfigError, EmbeddedBaseConfig
from raydetox.data.io import DataError
from raydetox.data.lexicon import Lexicon
from raydetox.errors import ModelError
from raydetox.pretraining_corpus import (
    BUILD_REPORT,
    TRAIN,
    PretrainingCorpus,
    as_corpus,
    assert_no_evaluation_text,
    config_hash,
    embedded_cache_path,
    exclude_texts,
    library_versions,
    normalize_text,
)

log = logging.getLogger(__name__)

EMBEDDED_META = "raydetox_embedded.json"
PRETRAINING_DROPPED = "pretraining_dropped.csv"
OBJECTIVES: tuple[str, ...] = ("copy", "denoise", "deletion", "pairs")
# T5 convention: the decoder starts from <pad>; SentencePiece is trained with these ids.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MIN_VOCAB = 100  # a tokenizer smaller than this was loaded the wrong way (transformers 5 trap)


def _held_out_pairs(pairs: pd.DataFrame, cfg: EmbeddedBaseConfig) -> pd.DataFrame:
    """Up to ``cfg.edit_eval_pairs`` (10 %) train-split pairs with distinct toxic sides, picked by seed."""
    train = pairs[pairs["source"] == TRAIN].drop_duplicates("toxic")
    order = sorted(range(len(train)), key=lambda i: (train["toxic"].iloc[i], train["neutral"].iloc[i]))
    random.Random(cfg.seed).shuffle(order)
    return train.iloc[order[: min(cfg.edit_eval_pairs, len(train) // 10)]].reset_index(drop=True)


def _held_out_texts(texts: pd.DataFrame, banned: dict[str, str], cfg: EmbeddedBaseConfig) -> list[str]:
    """Up to 200 (10 %) train-split texts for the copy-fidelity report, picked by seed from the set."""
    pool = sorted(
        {t for t, s in zip(texts["text"], texts["source"]) if s == TRAIN and normalize_text(t) not in banned}
    )
    random.Random(cfg.seed).shuffle(pool)
    return pool[: min(200, len(pool) // 10)]


# -------------------------------------------------------------------------------------------- tokenizer


def _train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerBase:
    """Train a SentencePiece unigram model on ``texts`` and save it as a transformers tokenizer."""
    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers.utils.import_utils import is_protobuf_available

    if not is_protobuf_available():
        raise ImportError("the embedded base needs protobuf to read the SentencePiece model")
    from transformers.convert_slow_tokenizer import import_protobuf

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="unigram",
            # identity + keep whitespace: a token-level copy must decode to the exact input text
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            # rare characters (Amharic, Chinese) fall back to bytes instead of <unk>
            byte_fallback=True,
            character_coverage=_char_coverage(texts, vocab_size),
            pad_id=PAD_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            hard_vocab_limit=False,  # tiny corpora (tests) cannot always fill the requested vocab
            num_threads=_cores(),
            minloglevel=2,
        )
    except RuntimeError as err:
        raise ConfigError(f"key 'model.embedded.vocab_size': {vocab_size} is too small for this corpus: {err}") from err
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model.getvalue())
    backend = Tokenizer(
        Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=UNK_ID, byte_fallback=True)
    )
    # Mirror SentencePiece's own pipeline (identity rule, dummy prefix, extra whitespace kept) so that the
    # fast tokenizer encodes like SentencePiece and decodes every text back exactly.
    backend.normalizer = normalizers.Sequence(
        # SentencePiece adds the dummy "▁" even before a leading space; Metaspace alone would not
        [normalizers.Replace(" ", "▁"), normalizers.Replace(Regex(r"\A▁"), "▁▁")]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", EOS_ID)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )  # extra_ids=0 is saved so T5Tokenizer.from_pretrained adds no sentinels either
    tok.save_pretrained(out_dir)
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    return load_tokenizer(out_dir, expected_vocab=len(proto.pieces))


def _char_coverage(texts: Sequence[str], vocab_size: int, default: float = 0.9995) -> float:
    """SentencePiece character coverage leaving >= 1/4 of a small vocab to multi-character pieces.

    SentencePiece refuses to train when the covered characters do not fit the vocab; with byte fallback
    the uncovered (rarest) characters are still encoded exactly, as bytes.
    """
    counts = Counter(ch for t in texts for ch in t)
    budget = vocab_size - 3 - 256 - vocab_size // 4  # specials, byte pieces, room for subwords
    if len(counts) <= budget:
        return default
    total = sum(counts.values())
    covered = sum(n for _, n in counts.most_common(max(1, budget)))
    return max(0.98, min(default, covered / total))  # SentencePiece accepts no less than 0.98


def load_tokenizer(path: str | Path, expected_vocab: int | None = None) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(path)`` with a vocabulary-size check (catches the 4-token trap)."""
    tok = AutoTokenizer.from_pretrained(str(path))
    n = len(tok)
    if expected_vocab is not None and n != expected_vocab:
        raise ModelError(f"tokenizer at {path}: vocab size {n}, expected {expected_vocab}")
    if n < MIN_VOCAB:
        raise ModelError(f"tokenizer at {path}: vocab size {n} < {MIN_VOCAB}; it was not loaded correctly")
    return tok


# ------------------------------------------------------------------------------------------ copy training


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _t5_config(cfg: EmbeddedBaseConfig, vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=True,
        dropout_rate=0.0,  # copying is memorisation-free: dropout only slows convergence
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )


def _init_previous_token_head(model: T5ForConditionalGeneration, bias: float) -> None:
    """Start a few heads attending to fixed previous positions (trainable relative-position biases).

    T5's cross-attention has no positions, so copying must be content-based: the decoder, having just
    written ``x[t-3] x[t-2] x[t-1]``, looks up the encoder position whose previous tokens match and
    emits its token (an induction circuit). Building the "previous tokens" features is the slow part to
    discover from scratch (measured: held-out loss still 5.0 after 1,300 steps; with one head looking
    1 back it is 1.4 after 200). Encoder heads 0/1/2 look 1/2/3 tokens back, decoder heads 0/1 look
    1/2 back: the longer context keeps the lookup from jumping between repeats of a token (measured at
    600 s: 2 tokens of context 82 % exact copies, 3 tokens 93 %). T5 shares
    layer 0's position bias with every layer of the stack.
    """
    if not bias:
        return
    for stack, heads in ((model.encoder, {0: -1, 1: -2, 2: -3}), (model.decoder, {0: -1, 1: -2})):
        attn = stack.block[0].layer[0].SelfAttention
        for head, offset in list(heads.items())[: attn.n_heads]:
            bucket = t5_relative_position_bucket(
                attn,
                torch.tensor(offset),
                bidirectional=attn.is_decoder is False,
                num_buckets=attn.relative_attention_num_buckets,
                max_distance=attn.relative_attention_max_distance,
            )
            with torch.no_grad():
                attn.relative_attention_bias.weight[bucket, head] = bias


def _lr_factor(progress: float, rounds: int) -> float:
    """Warm restarts: ``rounds`` equal segments, each a 10 % linear warm-up then cosine decay to 0."""
    rounds = max(1, rounds)
    pos = min(progress, 1.0 - 1e-9) * rounds
    q = pos - math.floor(pos)
    return min(1.0, q / 0.1) * 0.5 * (1.0 + math.cos(math.pi * q))


def _length_cap(progress: float, cfg: EmbeddedBaseConfig) -> int:
    """Longest training sequence (with ``</s>``) at this point of the build: short first, then full length.

    A tiny T5 discovers copying quickly on short sequences (relative positions are exact up to a few
    tokens); once it copies, the same content-based mechanism extends to the full ``max_length``.
    """
    if progress < cfg.curriculum_fraction:
        return max(2, min(cfg.curriculum_length, cfg.max_length))
    return max(2, cfg.max_length)


def _example(seqs: list[list[int]], body: int, concat_prob: float, rng: random.Random) -> list[int]:
    """One copy target of at most ``body`` tokens: a text (a random window of a long one), or with
    ``concat_prob`` a random span of two random texts joined, so targets are not a fixed, memorisable set."""
    if rng.random() < concat_prob:
        joined = rng.choice(seqs) + rng.choice(seqs)
        n = rng.randint(1, min(body, len(joined)))
        start = rng.randrange(len(joined) - n + 1)
        return joined[start : start + n]
    s = rng.choice(seqs)
    if len(s) <= body:
        return s
    start = rng.randrange(len(s) - body + 1)
    return s[start : start + body]


class _ByLength:
    """Items of one language sorted by length, to draw one that fits a length cap in O(log n)."""

    def __init__(self, items: list[Any], lengths: list[int]):
        order = sorted(range(len(items)), key=lambda i: lengths[i])
        self.items = [items[i] for i in order]
        self.lengths = [lengths[i] for i in order]

    def draw(self, cap: int, rng: random.Random) -> Any | None:
        n = bisect_right(self.lengths, cap)
        return self.items[rng.randrange(n)] if n else None


def _by_lang(entries: Sequence[tuple[str, Any, int]]) -> dict[str, _ByLength]:
    """(lang, item, length) → per-language :class:`_ByLength`, languages in sorted order."""
    groups: dict[str, tuple[list[Any], list[int]]] = {}
    for lang, item, n in entries:
        groups.setdefault(lang, ([], []))
        groups[lang][0].append(item)
        groups[lang][1].append(n)
    return {lang: _ByLength(*groups[lang]) for lang in sorted(groups)}


def _draw_fitting(groups: dict[str, _ByLength], cap: int, rng: random.Random) -> Any | None:
    """An item of at most ``cap`` tokens from a language drawn uniformly among those that have one."""
    langs = [lang for lang, g in groups.items() if g.lengths and g.lengths[0] <= cap]
    return groups[rng.choice(langs)].draw(cap, rng) if langs else None


def _words(seq: list[int], word_start: frozenset[int]) -> list[list[int]]:
    """``seq`` cut before every word-start piece (``▁…``); a text without spaces (zh) is cut per piece."""
    words: list[list[int]] = []
    for t in seq:
        if t in word_start or not words:
            words.append([t])
        else:
            words[-1].append(t)
    return words if len(words) > 1 else [[t] for t in seq]


def _common_chars(texts: Iterable[str], coverage: float = 0.99) -> set[str]:
    """The most frequent letters of ``texts`` that together make ``coverage`` of their letters."""
    counts = Counter(c.lower() for t in texts for c in t if c.isalpha())
    total, kept, out = sum(counts.values()), 0, set()
    for c, n in counts.most_common():
        if kept >= coverage * total:
            break
        out.add(c)
        kept += n
    return out


class PretrainingExamples:
    """Pretokenised material of the objectives and the rules that turn it into (input, target) ids.

    Every example is drawn language-balanced (a language first, then an item of it), so the English
    sources do not drown the other languages; ``draw`` returns ``None`` when a kind has nothing that
    fits the length cap (the caller falls back to copying).
    """

    def __init__(
        self,
        texts: pd.DataFrame,
        pairs: pd.DataFrame,
        lexicon: Lexicon | None,
        tok: PreTrainedTokenizerBase,
        cfg: EmbeddedBaseConfig,
    ):
        self.cfg = cfg
        # a bare "▁" starts a word too (its letters follow as the next pieces)
        self.word_start = frozenset(i for piece, i in tok.get_vocab().items() if piece.startswith("▁"))
        seqs = [ids[:-1] for ids in tok(list(texts["text"]))["input_ids"]] if len(texts) else []
        self.copy: dict[str, list[list[int]]] = {}
        for lang, s in zip(texts["lang"], seqs):
            if s:
                self.copy.setdefault(lang, []).append(s)
        self.copy = {lang: self.copy[lang] for lang in sorted(self.copy)}
        self.denoise = _by_lang([(lang, s, len(s)) for lang, s in zip(texts["lang"], seqs) if len(s) > 1])
        tox = tok(list(pairs["toxic"]))["input_ids"] if len(pairs) else []
        neu = tok(list(pairs["neutral"]))["input_ids"] if len(pairs) else []
        langs = list(pairs["lang"])
        self.pairs = _by_lang(
            [(lang, (t[:-1], n[:-1]), max(len(t), len(n)) - 1) for lang, t, n in zip(langs, tox, neu)]
        )
        self.neutrals: dict[str, _ByLength] = {}
        self.terms: dict[str, list[list[int]]] = {}
        if lexicon is not None:
            known = [lang for lang in sorted(set(langs)) if lang in lexicon.terms and lexicon.terms[lang]]
            clean = [
                (lang, n[:-1], len(n) - 1)
                for lang, text, n in zip(langs, pairs["neutral"], neu)
                if lang in known and len(n) > 2 and not lexicon.is_toxic(text, lang)
            ]
            self.neutrals = _by_lang(list(dict.fromkeys((lang, tuple(n), k) for lang, n, k in clean)))
            for lang in known:
                # one- to three-word terms of at most 8 pieces, written in the language's own characters
                # (the word lists also hold transliterations: Latin terms in the ar list)
                chars = _common_chars(t for t, g in zip(pairs["neutral"], langs) if g == lang)
                terms = sorted(
                    t for t in lexicon.terms[lang]
                    if len(t.split()) <= 3 and all(c in chars for c in t if c.isalpha())
                )
                ids = tok(terms)["input_ids"] if terms else []
                self.terms[lang] = [i[:-1] for i in ids if 1 <= len(i) - 1 <= 8]
            self.neutrals = {lang: g for lang, g in self.neutrals.items() if self.terms.get(lang)}

    def available(self) -> dict[str, bool]:
        """Whether each objective has any material."""
        return {
            "copy": bool(self.copy),
            "denoise": bool(self.denoise),
            "deletion": bool(self.neutrals),
            "pairs": bool(self.pairs),
        }

    def draw(self, kind: str, body: int, rng: random.Random) -> tuple[list[int], list[int]] | None:
        """One (input, target) of ``kind`` whose sides have at most ``body`` tokens (no ``</s>``)."""
        if kind == "copy":
            seq = _example(self.copy[rng.choice(list(self.copy))], body, self.cfg.concat_prob, rng)
            return seq, seq
        if kind == "denoise":
            seq = _draw_fitting(self.denoise, body, rng)
            return None if seq is None else (self.noised(seq, rng), seq)
        if kind == "pairs":
            return _draw_fitting(self.pairs, body, rng)
        if kind == "deletion":
            return self.deletion(body, rng)
        raise ValueError(f"unknown pretraining objective {kind!r}; expected one of {list(OBJECTIVES)}")

    def noised(self, seq: list[int], rng: random.Random) -> list[int]:
        """``seq`` with ~``cfg.noise`` of its words dropped, swapped with the next or masked (``<unk>``);
        at least one word is changed."""
        words = _words(seq, self.word_start)
        ops = [rng.choice(("drop", "swap", "mask")) if rng.random() < self.cfg.noise else None for _ in words]
        if not any(ops):
            ops[rng.randrange(len(ops))] = rng.choice(("drop", "swap", "mask"))
        out: list[list[int]] = []
        i = 0
        while i < len(words):
            op = ops[i]
            if op == "drop" and len(words) > 1:
                pass
            elif op == "swap" and i + 1 < len(words):
                out += [words[i + 1], words[i]]
                i += 1
            elif op == "mask":
                out.append([UNK_ID])
            else:
                out.append(words[i])
            i += 1
        noisy = [t for w in out for t in w]
        return noisy if noisy != seq else [UNK_ID] + seq[1:]

    def deletion(self, body: int, rng: random.Random) -> tuple[list[int], list[int]] | None:
        """A clean neutral side with 1..``cfg.max_inserted_terms`` lexicon terms of its language inserted
        at word boundaries → the neutral side."""
        langs = [lang for lang, g in self.neutrals.items() if g.lengths[0] < body]
        if not langs:
            return None
        lang = rng.choice(langs)
        terms = [rng.choice(self.terms[lang]) for _ in range(rng.randint(1, self.cfg.max_inserted_terms))]
        neutral = self.neutrals[lang].draw(body - sum(map(len, terms)), rng)
        if neutral is None:
            return None
        words = _words(list(neutral), self.word_start)
        for term in terms:
            words.insert(rng.randint(0, len(words)), term)
        return [t for w in words for t in w], list(neutral)


def _batches(
    examples: PretrainingExamples,
    mix: Callable[[], dict[str, float]],
    batch_size: int,
    length_cap: Callable[[], int],
    rng: random.Random,
    pool_batches: int = 8,
    kinds: Counter[str] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (input_ids, attention_mask, labels) batches, each example's objective drawn by the shares
    ``mix()`` gives when its pool is drawn (counted in ``kinds``); targets end in ``</s>``, labels are
    -100 on padding.

    A pool of ``pool_batches`` batches is sorted by length and cut into batches to avoid padding waste.
    """
    while True:
        shares = mix()
        names = [k for k in OBJECTIVES if shares.get(k, 0) > 0]
        weights = [shares[k] for k in names]
        body = length_cap() - 1  # room for </s>
        pool = []
        for _ in range(batch_size * pool_batches):
            kind = rng.choices(names, weights)[0]
            example = examples.draw(kind, body, rng)
            if example is None:  # nothing of this kind fits the cap yet
                kind, example = "copy", examples.draw("copy", body, rng)
            if kinds is not None:
                kinds[kind] += 1
            pool.append(example)
        pool.sort(key=lambda e: max(len(e[0]), len(e[1])))
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield _collate([src + [EOS_ID] for src, _ in chunk], [tgt + [EOS_ID] for _, tgt in chunk])


def _collate(sources: list[list[int]], targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
        for r, row in enumerate(rows):
            out[r, : len(row)] = torch.tensor(row)
        return out

    ids = pad(sources, PAD_ID)
    return ids, ids != PAD_ID, pad(targets, -100)


def _greedy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 64
) -> list[str]:
    """Greedy outputs for ``texts`` (batched by length), in input order."""
    model.eval()
    outputs: dict[int, str] = {}
    enc = tokenizer(list(texts))["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(model.device)
            gen = model.generate(
                **batch,
                max_new_tokens=batch["input_ids"].shape[1] + 8,
                num_beams=1,
                do_sample=False,
            )
            for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
                outputs[i] = text
    return [outputs[i] for i in range(len(texts))]


def copy_fidelity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 64
) -> dict[str, float]:
    """Greedy-decode ``texts`` and compare with the inputs: exact-copy rate and corpus chrF(output, input)."""
    outs = _greedy(model, tokenizer, texts, batch_size)
    exact = sum(o == t for o, t in zip(outs, texts)) / max(1, len(texts))
    chrf = sacrebleu.corpus_chrf(outs, [list(texts)]).score
    return {"exact_copy_rate": exact, "chrf": chrf}


def edit_quality(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: pd.DataFrame,
    lexicon: Lexicon | None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Zero-shot rewriting of held-out (toxic → neutral) pairs: corpus chrF of the greedy outputs to the
    neutral sides (beside the chrF of copying and, with a lexicon, of deleting its terms), the share of
    outputs equal to the input (copy rate) or to the neutral side, and the share of the inputs' lexicon
    term occurrences that the outputs no longer contain."""
    toxic, neutral, langs = list(pairs["toxic"]), list(pairs["neutral"]), list(pairs["lang"])
    outs = _greedy(model, tokenizer, toxic, batch_size)
    n = max(1, len(toxic))
    report = {
        "edit_chrf": sacrebleu.corpus_chrf(outs, [neutral]).score,
        "edit_chrf_of_copying": sacrebleu.corpus_chrf(toxic, [neutral]).score,
        "edit_copy_rate": sum(o == t for o, t in zip(outs, toxic)) / n,
        "edit_exact_match": sum(o == r for o, r in zip(outs, neutral)) / n,
    }
    if lexicon is not None:
        def find(text: str, lang: str) -> list[str]:
            return lexicon.find(text, lang) if lang in lexicon.terms else []

        found = [find(t, lang) for t, lang in zip(toxic, langs)]
        removed = sum(len(set(f) - set(find(o, lang))) for f, o, lang in zip(found, outs, langs))
        total = sum(len(set(f)) for f in found)
        report["edit_terms_removed"] = removed / total if total else float("nan")
        report["edit_inputs_with_terms"] = sum(bool(f) for f in found) / n
        deleted = [lexicon.remove(t, lang) if lang in lexicon.terms else t for t, lang in zip(toxic, langs)]
        report["edit_chrf_of_deleting"] = sacrebleu.corpus_chrf(deleted, [neutral]).score
    return report


def effective_mix(cfg: EmbeddedBaseConfig, available: dict[str, bool]) -> dict[str, float]:
    """``cfg.mix`` normalised over the objectives that have material (copy always has)."""
    raw = {k: getattr(cfg.mix, k) if available.get(k) else 0.0 for k in OBJECTIVES}
    if sum(raw.values()) <= 0:
        raw["copy"] = 1.0  # only objectives without material were asked for: copying is what is left
    total = sum(raw.values())
    return {k: round(v / total, 4) for k, v in raw.items()}


def _pretrain(
    model: T5ForConditionalGeneration,
    examples: PretrainingExamples,
    mix: dict[str, float],
    cfg: EmbeddedBaseConfig,
    progress: bool,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    rng = random.Random(cfg.seed)
    model.to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    frac = 0.0
    kinds: Counter[str] = Counter()
    copy_only = {"copy": 1.0}
    batches = _batches(examples, lambda: copy_only if frac < cfg.copy_first else mix, cfg.batch_size,
                       lambda: _length_cap(frac, cfg), rng, kinds=kinds)
    model.train()
    losses: list[float] = []
    step, start = 0, time.monotonic()
    # A bar only on a terminal; in a log (CI, a Ray job, `make quickstart > log`) one line per 10 %,
    # not a fragment per step.
    on_tty = sys.stderr.isatty()
    bar = tqdm(total=100, unit="%", desc="embedded base", disable=not (progress and on_tty), leave=True)
    logged = 0
    # A fixed number of steps, never a wall-clock budget: the same seed, data, torch version and thread
    # count give the same weights on any machine, so seeded benchmarks are reproducible.
    while step < cfg.max_steps:
        frac = step / cfg.max_steps
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(frac, cfg.rounds)
        ids, mask, labels = (t.to(cfg.device) for t in next(batches))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        percent, mean_loss = min(100, int(step / cfg.max_steps * 100)), sum(losses[-50:]) / len(losses[-50:])
        if progress and not on_tty and percent >= logged + 10:
            logged = percent - percent % 10
            print(f"embedded base: {logged}% step {step}/{cfg.max_steps} loss {mean_loss:.3f} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
        bar.n = percent
        bar.set_postfix(step=step, loss=f"{mean_loss:.3f}", refresh=False)
        bar.refresh()
    bar.n = 100
    bar.close()
    model.eval()
    tail = losses[-50:]
    return {
        "steps": step,
        "train_seconds": round(time.monotonic() - start, 2),
        "steps_per_second": round(step / max(1e-9, time.monotonic() - start), 3),
        "final_loss": round(sum(tail) / len(tail), 4) if tail else float("nan"),
        "examples_per_objective": {k: kinds[k] for k in OBJECTIVES},
    }


def build_embedded_base(
    corpus: Sequence[str] | PretrainingCorpus,
    cfg: EmbeddedBaseConfig,
    cache_dir: str | Path | None = None,
    eval_texts: Sequence[str] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """Build (or reuse) the embedded base pretrained on ``corpus`` (or plain training texts); returns its dir.

    The directory holds the model, the tokenizer, ``build_report.json`` (copy fidelity on held-out
    training texts, zero-shot edit quality on held-out training pairs, examples per objective) and
    ``pretraining_dropped.csv``. Without ``eval_texts``, up to 200 texts (10 %) are held out of training
    for the copy figures. Built in a temporary directory and renamed, so a crash never leaves a
    half-built cache. Raises :class:`PretrainingLeakError` if an evaluation text would be trained on.
    """
    corpus = as_corpus(corpus)
    n_train = len({t for t, s in zip(corpus.texts["text"], corpus.texts["source"]) if isinstance(t, str) and t.strip() and s == TRAIN})
    if n_train < 10:
        raise DataError(f"model.name_or_path=embedded: the base needs at least 10 distinct non-empty training texts, got {n_train}")
    final = embedded_cache_path(corpus, cfg, cache_dir, eval_texts)
    if (final / BUILD_REPORT).is_file():
        return final
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("key 'model.embedded.device': is 'cuda' but no CUDA GPU is visible to torch "
                          f"({torch.__version__}); build on 'cpu' or on a machine with a GPU")
    with building(final, BUILD_REPORT) as tmp:
        if tmp is None:  # another process built it while this one waited
            return final
        report = _build(corpus, cfg, eval_texts, tmp, progress, threads or cfg.threads)
        (tmp / EMBEDDED_META).write_text(
            json.dumps(
                {"config": dataclasses.asdict(cfg), "config_hash": config_hash(cfg), "n_texts": report["n_train_texts"]},
                indent=2,
            )
        )
        (tmp / BUILD_REPORT).write_text(json.dumps(report, indent=2))
    if progress:
        print(f"embedded base → {final}\n{json.dumps(report)}")
    return final


def _build(
    corpus: PretrainingCorpus,
    cfg: EmbeddedBaseConfig,
    eval_texts: Sequence[str] | None,
    out: Path,
    progress: bool,
    threads: int,
) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    banned = {normalize_text(t): "evaluation_text" for t in corpus.forbidden if isinstance(t, str) and t.strip()}
    edit_pairs = _held_out_pairs(exclude_texts(corpus, banned)[1], cfg)
    for text in (*edit_pairs["toxic"], *edit_pairs["neutral"]):
        banned.setdefault(normalize_text(text), "held_out_edit_pair")
    held = list(eval_texts) if eval_texts is not None else _held_out_texts(corpus.texts, banned, cfg)
    for text in held if eval_texts is None else ():
        banned.setdefault(normalize_text(text), "held_out_copy_text")
    texts, pairs, dropped = exclude_texts(corpus, banned)
    assert_no_evaluation_text(texts, pairs, corpus.forbidden)
    dropped.to_csv(out / PRETRAINING_DROPPED, index=False)
    with _torch_threads(threads):
        # The tokenizer is trained on the train split only (held-out training texts included: they are
        # part of the corpus the base will serve), so extra sources do not change its pieces.
        tok_texts = list(dict.fromkeys(
            [t for t, s in zip(texts["text"], texts["source"]) if s == TRAIN]
            + (held if eval_texts is None else [])
            + list(edit_pairs["toxic"])
            + list(edit_pairs["neutral"])
        ))
        tok = _train_tokenizer(tok_texts, cfg.vocab_size, out)
        model = T5ForConditionalGeneration(_t5_config(cfg, len(tok)))
        _init_previous_token_head(model, cfg.prev_token_bias)
        examples = PretrainingExamples(texts, pairs, corpus.lexicon, tok, cfg)
        mix = effective_mix(cfg, examples.available())
        stats = _pretrain(model, examples, mix, cfg, progress)
        t0 = time.monotonic()
        fidelity = copy_fidelity(model, tok, held)
        # texts longer than max_length (with </s>) were never seen whole in training: report both rates
        fitting = [t for t, ids in zip(held, tok(held)["input_ids"]) if len(ids) <= cfg.max_length]
        fidelity_fit = copy_fidelity(model, tok, fitting) if fitting else {"exact_copy_rate": float("nan")}
        edits = edit_quality(model, tok, edit_pairs, corpus.lexicon) if len(edit_pairs) else {}
        eval_seconds = time.monotonic() - t0
    model.generation_config.max_length = None
    model.to("cpu").save_pretrained(out)
    return {
        "exact_copy_rate": round(fidelity["exact_copy_rate"], 4),
        "chrf": round(fidelity["chrf"], 2),
        "n_eval": len(held),
        "eval_longer_than_max_length": round(1.0 - len(fitting) / max(1, len(held)), 4),
        "exact_copy_rate_fitting": round(fidelity_fit["exact_copy_rate"], 4),
        **{k: round(v, 4) for k, v in edits.items()},
        "n_edit_eval": len(edit_pairs),
        "eval_seconds": round(eval_seconds, 2),
        **stats,
        "mix": mix,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "n_train_texts": len(texts),
        "n_train_pairs": len(pairs),
        "n_dropped": {str(k): int(v) for k, v in dropped["reason"].value_counts().sort_index().items()},
        "threads": threads,
        "device": cfg.device,
        "libraries": library_versions(),  # part of the cache key
    }
