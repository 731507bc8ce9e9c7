"""The offline embedded base: a small T5 with a SentencePiece unigram tokenizer trained on the corpus
itself and pretrained to copy (target = input), built once and cached in a directory keyed by a hash of
its config and texts. It stands in for mT5 where no hub is reachable (this machine, CI).

Copy recipe (``EmbeddedBaseConfig`` defaults): 2.2M-parameter T5 with tied embeddings, a few heads
initialised to attend to the previous tokens (the half of the content-based copy circuit a tiny T5 is
slow to find on its own), copy targets drawn at random from all languages with a length curriculum
(<= 32 tokens for the first half of the budget, then <= 64), AdamW with warm restarts.
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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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

from raydetox.cache import building, content_hash
from raydetox.compat import t5_relative_position_bucket
from raydetox.config import ConfigError, EmbeddedBaseConfig
from raydetox.data.io import DataError
from raydetox.errors import ModelError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
BUILD_REPORT = "build_report.json"
EMBEDDED_META = "raydetox_embedded.json"
# Bump when the build recipe changes in a way the config does not capture: old caches are not reused.
_BUILD_VERSION = 6
# T5 convention: the decoder starts from <pad>; SentencePiece is trained with these ids.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MIN_VOCAB = 100  # a tokenizer smaller than this was loaded the wrong way (transformers 5 trap)


# ----------------------------------------------------------------------------------------------- corpus


def corpus_texts(pairs: pd.DataFrame) -> list[str]:
    """Every distinct text of a pairs table (toxic, neutral and ``refs`` sides), in first-seen order."""
    missing = [c for c in ("toxic", "neutral") if c not in pairs.columns]
    if missing:
        raise KeyError(f"pairs table lacks column(s) {missing}; has {list(pairs.columns)}")
    texts: dict[str, None] = {}

    def add(value: Any, row: Any, column: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"pairs row {row!r}, column {column!r}: expected str, got {type(value).__name__}")
        if value.strip():
            texts.setdefault(value, None)

    has_refs = "refs" in pairs.columns
    for row, toxic, neutral, refs in zip(
        pairs.index, pairs["toxic"], pairs["neutral"], pairs["refs"] if has_refs else [None] * len(pairs)
    ):
        add(toxic, row, "toxic")
        add(neutral, row, "neutral")
        if refs is not None and not (isinstance(refs, float) and math.isnan(refs)):
            for ref in refs:
                add(ref, row, "refs")
    return list(texts)


# ------------------------------------------------------------------------------------------- cache keys


def _config_hash(cfg: EmbeddedBaseConfig) -> str:
    return content_hash({"version": _BUILD_VERSION, "config": dataclasses.asdict(cfg)})[:12]


def _data_hash(texts: Sequence[str], eval_texts: Sequence[str] | None) -> str:
    # Order-free: the same corpus read in another order reuses the cache.
    return content_hash({"texts": sorted(set(texts)), "eval": None if eval_texts is None else sorted(set(eval_texts))})[:12]


def cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / EMBEDDED
    return Path.home() / ".cache" / "raydetox" / EMBEDDED


def embedded_cache_path(
    texts: Sequence[str],
    cfg: EmbeddedBaseConfig,
    cache_dir: str | Path | None = None,
    eval_texts: Sequence[str] | None = None,
) -> Path:
    """Directory where :func:`build_embedded_base` keeps (or will keep) the base for these inputs."""
    return cache_root(cache_dir) / f"{_config_hash(cfg)}-{_data_hash(texts, eval_texts)}"


def find_cached_base(cfg: EmbeddedBaseConfig, cache_dir: str | Path | None = None) -> Path | None:
    """Newest complete embedded base built with this config (any texts), or ``None``."""
    root = cache_root(cache_dir)
    if not root.is_dir():
        return None
    found = [p for p in root.glob(f"{_config_hash(cfg)}-*") if (p / BUILD_REPORT).is_file()]
    return max(found, key=lambda p: (p / BUILD_REPORT).stat().st_mtime) if found else None


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


def _batches(
    seqs: list[list[int]],
    batch_size: int,
    length_cap: Callable[[], int],
    concat_prob: float,
    rng: random.Random,
    pool_batches: int = 8,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of copy targets (each ending in ``</s>``).

    Examples are drawn at random (so every batch mixes languages), then a pool of ``pool_batches``
    batches is sorted by length and cut into batches to avoid padding waste.
    """
    seqs = [s for s in seqs if s]
    while True:
        body = length_cap() - 1  # room for </s>
        pool = sorted((_example(seqs, body, concat_prob, rng) for _ in range(batch_size * pool_batches)), key=len)
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            rows = [row + [EOS_ID] for row in chunk]
            ids = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
            yield ids, ids != PAD_ID


def copy_fidelity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 64
) -> dict[str, float]:
    """Greedy-decode ``texts`` and compare with the inputs: exact-copy rate and corpus chrF(output, input)."""
    model.eval()
    outputs: dict[int, str] = {}
    enc = tokenizer(list(texts))["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            gen = model.generate(
                **batch,
                max_new_tokens=batch["input_ids"].shape[1] + 8,
                num_beams=1,
                do_sample=False,
            )
            for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
                outputs[i] = text
    outs = [outputs[i] for i in range(len(texts))]
    exact = sum(o == t for o, t in zip(outs, texts)) / max(1, len(texts))
    chrf = sacrebleu.corpus_chrf(outs, [list(texts)]).score
    return {"exact_copy_rate": exact, "chrf": chrf}


def _train_copy(
    model: T5ForConditionalGeneration,
    seqs: list[list[int]],
    cfg: EmbeddedBaseConfig,
    progress: bool,
) -> dict[str, float]:
    from tqdm.auto import tqdm

    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    frac = 0.0
    batches = _batches(seqs, cfg.batch_size, lambda: _length_cap(frac, cfg), cfg.concat_prob, rng)
    model.train()
    losses: list[float] = []
    step, start = 0, time.monotonic()
    # A bar only on a terminal; in a log (CI, a Ray job, `make quickstart > log`) one line per 10 %,
    # not a fragment per step.
    on_tty = sys.stderr.isatty()
    bar = tqdm(total=100, unit="%", desc="embedded base (copy)", disable=not (progress and on_tty), leave=True)
    logged = 0
    # A fixed number of steps, never a wall-clock budget: the same seed, data, torch version and thread
    # count give the same weights on any machine, so seeded benchmarks are reproducible.
    while step < cfg.max_steps:
        frac = step / cfg.max_steps
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(frac, cfg.rounds)
        ids, mask = next(batches)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(~mask, -100)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        percent, mean_loss = min(100, int(step / cfg.max_steps * 100)), sum(losses[-50:]) / len(losses[-50:])
        if progress and not on_tty and percent >= logged + 10:
            logged = percent - percent % 10
            print(f"embedded base (copy): {logged}% step {step}/{cfg.max_steps} loss {mean_loss:.3f} "
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
    }


def build_embedded_base(
    texts: Sequence[str],
    cfg: EmbeddedBaseConfig,
    cache_dir: str | Path | None = None,
    eval_texts: Sequence[str] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """Build (or reuse) the embedded copy-pretrained T5 base; returns its directory.

    The directory holds the model, the tokenizer and ``build_report.json`` (copy fidelity on held-out
    texts). Without ``eval_texts``, up to 200 texts (10 %) are held out of training for that evaluation.
    Built in a temporary directory and renamed, so a crash never leaves a half-built cache.
    """
    texts = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    if len(texts) < 10:
        raise DataError(f"model.name_or_path=embedded: the base needs at least 10 distinct non-empty training texts, got {len(texts)}")
    final = embedded_cache_path(texts, cfg, cache_dir, eval_texts)
    if (final / BUILD_REPORT).is_file():
        return final
    with building(final, BUILD_REPORT) as tmp:
        report = _build(texts, cfg, eval_texts, tmp, progress, threads or cfg.threads)
        (tmp / EMBEDDED_META).write_text(
            json.dumps(
                {"config": dataclasses.asdict(cfg), "config_hash": _config_hash(cfg), "n_texts": len(texts)},
                indent=2,
            )
        )
        (tmp / BUILD_REPORT).write_text(json.dumps(report, indent=2))
    if progress:
        print(f"embedded base → {final}\n{json.dumps(report)}")
    return final


def _build(
    texts: list[str],
    cfg: EmbeddedBaseConfig,
    eval_texts: Sequence[str] | None,
    out: Path,
    progress: bool,
    threads: int,
) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    if eval_texts is None:
        pool = sorted(texts)  # selection depends on the set of texts, not on their order
        random.Random(cfg.seed).shuffle(pool)
        held = pool[: min(200, len(pool) // 10)]
        held_set = set(held)
        train_texts = [t for t in texts if t not in held_set]
    else:
        held, train_texts = list(eval_texts), texts
    with _torch_threads(threads):
        # the tokenizer sees the held-out texts too: they are part of the corpus the base will serve
        tok = _train_tokenizer(texts, cfg.vocab_size, out)
        model = T5ForConditionalGeneration(_t5_config(cfg, len(tok)))
        _init_previous_token_head(model, cfg.prev_token_bias)
        seqs = [ids[:-1] for ids in tok(train_texts)["input_ids"]]  # drop </s>: windows re-add it
        stats = _train_copy(model, seqs, cfg, progress)
        t0 = time.monotonic()
        fidelity = copy_fidelity(model, tok, held)
        # texts longer than max_length (with </s>) were never seen whole in training: report both rates
        fitting = [t for t, ids in zip(held, tok(held)["input_ids"]) if len(ids) <= cfg.max_length]
        fidelity_fit = copy_fidelity(model, tok, fitting) if fitting else {"exact_copy_rate": float("nan")}
        eval_seconds = time.monotonic() - t0
    model.generation_config.max_length = None
    model.save_pretrained(out)
    return {
        "exact_copy_rate": round(fidelity["exact_copy_rate"], 4),
        "chrf": round(fidelity["chrf"], 2),
        "n_eval": len(held),
        "eval_longer_than_max_length": round(1.0 - len(fitting) / max(1, len(held)), 4),
        "exact_copy_rate_fitting": round(fidelity_fit["exact_copy_rate"], 4),
        "eval_seconds": round(eval_seconds, 2),
        **stats,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "n_train_texts": len(train_texts),
        "threads": threads,
    }
