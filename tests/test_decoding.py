"""Decoding controls and batched generation, on hand-built tensors and on a tiny T5 trained to copy real sentences."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import sentencepiece as spm
import torch
from transformers import LogitsProcessorList, T5Config, T5ForConditionalGeneration, T5TokenizerFast

from raydetox.config import DecodingConfig
from raydetox.data.lexicon import Lexicon
from raydetox.decoding import (
    CopyPenalty,
    PieceTable,
    SourceTermBan,
    SourceWordsOnly,
    ToxicTokenPenalty,
    build_logits_processors,
    generate,
    generation_kwargs,
    kept_source_text,
    naive_generate,
    source_positions,
    source_term_ban,
)

VOCAB = 300
MAX_TOKENS = 20


# --------------------------------------------------------------------------- processors on hand-built tensors


def test_toxic_penalty_exact_scores() -> None:
    scores = torch.arange(24, dtype=torch.float).reshape(3, 8)
    ids = torch.zeros(3, 1, dtype=torch.long)
    out = ToxicTokenPenalty([2, 5, 5], 1.5)(ids, scores)
    expected = scores.clone()
    expected[:, [2, 5]] -= 1.5
    assert torch.equal(out, expected)
    assert torch.equal(scores, torch.arange(24, dtype=torch.float).reshape(3, 8)), "input modified in place"

    banned = ToxicTokenPenalty([7], math.inf)(ids, scores)
    assert torch.isneginf(banned[:, 7]).all() and torch.equal(banned[:, :7], scores[:, :7])
    assert torch.equal(ToxicTokenPenalty([2], 0.0)(ids, scores), scores)
    assert torch.equal(ToxicTokenPenalty([], 3.0)(ids, scores), scores)


def test_toxic_penalty_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        ToxicTokenPenalty([8], 1.0)(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 8))
    with pytest.raises(ValueError, match=">= 0"):
        ToxicTokenPenalty([1], -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        ToxicTokenPenalty([1], math.nan)
    with pytest.raises(ValueError, match="negative token id"):
        ToxicTokenPenalty([-1], 1.0)


def test_copy_penalty_maps_beams_to_source_rows_and_ignores_pad() -> None:
    # Row 0: windows (5,6)->7, (6,7)->5, (7,5)->6, (5,6)->8, (6,8)->EOS(1, ignored).
    # Row 1 is left- and right-padded: only (9,4)->3 is a valid window ((4,3)->EOS is ignored).
    source = torch.tensor([[5, 6, 7, 5, 6, 8, 1], [0, 0, 9, 4, 3, 1, 0]])
    proc = CopyPenalty(source, 2.0, ngram=3, pad_token_id=0, num_beams=2, ignore_token_ids=[1])
    # hypotheses 0,1 -> row 0; 2,3 -> row 1 (beams adjacent).
    decoder = torch.tensor([[0, 5, 6], [0, 6, 8], [0, 9, 4], [0, 5, 6]])
    out = proc(decoder, torch.zeros(4, 12))
    expected = torch.zeros(4, 12)
    expected[0, [7, 8]] = -2.0  # both continuations of the repeated bigram (5,6)
    expected[2, 3] = -2.0
    # hypothesis 1 would only continue with EOS (ignored); hypothesis 3 shares row 1, which lacks (5,6).
    assert torch.equal(out, expected)

    # The decoder start token is the pad id: (start, 9) must not match row 1's padded window (0, 9) -> 4.
    start = proc(torch.tensor([[0, 5], [0, 6], [0, 9], [0, 7]]), torch.zeros(4, 12))
    assert torch.equal(start, torch.zeros(4, 12))

    banned = CopyPenalty(source, math.inf, ngram=3, num_beams=2)(decoder, torch.zeros(4, 12))
    assert torch.isneginf(banned[0, [7, 8]]).all() and torch.isneginf(banned[2, 3])
    # Without ignore_token_ids the copied EOS is penalised too.
    assert torch.isneginf(banned[1, 1]) and torch.isfinite(banned[1, 2:]).all() and torch.isfinite(banned[3]).all()
    assert torch.equal(CopyPenalty(source, 0.0, num_beams=2)(decoder, torch.ones(4, 12)), torch.ones(4, 12))


def test_copy_penalty_other_ngram_sizes() -> None:
    source = torch.tensor([[4, 5, 4, 1, 0]])
    # ngram=1: every source token except pad and the ignored EOS, whatever was generated.
    out = CopyPenalty(source, 1.0, ngram=1, ignore_token_ids=[1])(torch.tensor([[0]]), torch.zeros(1, 7))
    assert torch.equal(out, torch.tensor([[0.0, 0, 0, 0, -1, -1, 0]]))
    # ngram=2: after 4 the copy continues with 5 (position 1) or EOS (position 3; not ignored here).
    out = CopyPenalty(source, 1.0, ngram=2)(torch.tensor([[0, 4]]), torch.zeros(1, 7))
    assert torch.equal(out, torch.tensor([[0.0, -1, 0, 0, 0, -1, 0]]))
    # ngram=3 with a single decoder token: not enough context yet, no-op.
    assert torch.equal(CopyPenalty(source, 1.0)(torch.tensor([[0]]), torch.zeros(1, 7)), torch.zeros(1, 7))
    # A source shorter than the n-gram has nothing to copy.
    short = CopyPenalty(torch.tensor([[4, 5]]), 1.0, ngram=4)
    assert torch.equal(short(torch.tensor([[0, 4, 5, 6]]), torch.zeros(1, 7)), torch.zeros(1, 7))


def test_copy_penalty_rejects_bad_input() -> None:
    proc = CopyPenalty(torch.tensor([[4, 5, 6]]), 1.0, ngram=2, num_beams=2)
    with pytest.raises(ValueError, match="3 hypotheses but was built for 1 source rows x 2 beams"):
        proc(torch.tensor([[0, 4]] * 3), torch.zeros(3, 7))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        CopyPenalty(torch.tensor([[4, 9]]), 1.0, ngram=2)(torch.tensor([[0, 4]]), torch.zeros(1, 7))
    with pytest.raises(ValueError, match="ngram must be >= 1"):
        CopyPenalty(torch.tensor([[4, 5]]), 1.0, ngram=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        CopyPenalty(torch.tensor([[4, 5]]), -0.5)


def test_generation_kwargs_and_processor_list_follow_config() -> None:
    cfg = DecodingConfig(num_beams=3, max_new_tokens=9, repetition_penalty=1.2, no_repeat_ngram_size=2)
    assert generation_kwargs(cfg) == {
        "num_beams": 3,
        "max_new_tokens": 9,
        "do_sample": False,
        "repetition_penalty": 1.2,
        "no_repeat_ngram_size": 2,
    }
    src = torch.tensor([[4, 5, 6, 1]])
    assert len(build_logits_processors(cfg, src, [4], pad_token_id=0)) == 0  # strengths 0: nothing added
    cfg = DecodingConfig(num_beams=3, toxic_penalty=math.inf, copy_penalty=2.0, copy_ngram=2)
    procs = build_logits_processors(cfg, src, [4], pad_token_id=0, eos_token_id=1)
    assert [type(p) for p in procs] == [ToxicTokenPenalty, CopyPenalty]
    assert procs[1].num_beams == 3 and procs[1].ngram == 2
    with pytest.raises(ValueError, match="no toxic token ids"):
        build_logits_processors(cfg, src, None, pad_token_id=0)
    with pytest.raises(ValueError, match="no source ids"):
        build_logits_processors(cfg, None, [4], pad_token_id=0)
    # Refused by the config itself, when it is loaded, before any model is built.
    with pytest.raises(ValueError, match=r"num_beams[\s\S]*greater than or equal to 1"):
        DecodingConfig(num_beams=0)
    with pytest.raises(ValueError, match=r"copy_penalty[\s\S]*must be >= 0"):
        DecodingConfig(copy_penalty=-1.0)
    with pytest.raises(ValueError, match=r"repetition_penalty[\s\S]*greater than 0"):
        DecodingConfig(repetition_penalty=0.0)


# --------------------------------------------------------------------------- a tiny T5 that copies real sentences


@pytest.fixture(scope="module")
def tokenizer(mpd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> T5TokenizerFast:
    """SentencePiece (unigram, 300 pieces) trained on the real English pairs, loaded as a T5 tokenizer."""
    df = pd.read_parquet(mpd_dir / "en-00000-of-00001.parquet", columns=["toxic_sentence", "neutral_sentence"])
    out = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(pd.concat([df.toxic_sentence, df.neutral_sentence]).tolist()),
        model_prefix=str(out / "spiece"),
        vocab_size=VOCAB,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    tok = T5TokenizerFast.from_pretrained(out, extra_ids=0)
    assert len(tok) == VOCAB and (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    return tok


@pytest.fixture(scope="module")
def texts(mpd_dir: Path, tokenizer: T5TokenizerFast) -> list[str]:
    """96 real toxic sentences of at most MAX_TOKENS pieces (normalised by a tokenizer round trip)."""
    df = pd.read_parquet(mpd_dir / "en-00000-of-00001.parquet", columns=["toxic_sentence"])
    ids = [i for i in tokenizer(df.toxic_sentence.tolist())["input_ids"] if len(i) <= MAX_TOKENS][:96]
    assert len(ids) == 96
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


@pytest.fixture(scope="module")
def model(tokenizer: T5TokenizerFast, texts: list[str]) -> T5ForConditionalGeneration:
    """A 1+1-layer T5 (d_model 32) trained ~3 s to copy ``texts`` (target = input): it reproduces most of them."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=128, num_layers=1, num_decoder_layers=1, num_heads=4,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    m = T5ForConditionalGeneration(config)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(len(texts), (32,), generator=g)
        m(input_ids=enc.input_ids[idx], attention_mask=enc.attention_mask[idx], labels=labels[idx]).loss.backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    return m


@pytest.fixture(scope="module")
def toxic_ids(shared_data: Path, tokenizer: T5TokenizerFast, texts: list[str]) -> list[int]:
    """Ids of LDNOOBW English terms (3+ characters) that are one word piece of the tokenizer and occur in ``texts``."""
    terms = (shared_data / "lexicons" / "ldnoobw_v2" / "en.txt").read_text(encoding="utf-8").split("\n")
    vocab = tokenizer.get_vocab()
    # The list also holds stray 1-2 letter entries ("b", "us"); those pieces are not toxic words.
    ids = sorted({vocab["▁" + t] for t in terms if len(t) >= 3 and "▁" + t in vocab})
    present = {i for row in tokenizer(texts)["input_ids"] for i in row}
    ids = [i for i in ids if i in present]
    assert ids, "no lexicon term is a piece of the test tokenizer"
    return ids


def _generate_ids(model, tokenizer, texts, cfg: DecodingConfig, toxic_ids=None, processors=None) -> torch.Tensor:
    """All texts in one batch through model.generate with our processors (ids, not strings: exact checks)."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    if processors is None:
        processors = build_logits_processors(
            cfg, enc.input_ids, toxic_ids, tokenizer.pad_token_id, tokenizer.eos_token_id
        )
    with torch.inference_mode():
        return model.generate(**enc, logits_processor=processors, **generation_kwargs(cfg))


def _count(ids: torch.Tensor, wanted: list[int]) -> int:
    return int(torch.isin(ids, torch.tensor(wanted)).sum())


def _copy_rate(outputs: list[str], inputs: list[str]) -> float:
    return sum(o.strip() == i.strip() for o, i in zip(outputs, inputs)) / len(inputs)


def test_toxic_ban_and_finite_penalty_on_real_model(model, tokenizer, texts, toxic_ids) -> None:
    def count(strength: float) -> int:
        cfg = DecodingConfig(max_new_tokens=MAX_TOKENS + 4, toxic_penalty=strength)
        return _count(_generate_ids(model, tokenizer, texts, cfg, toxic_ids), toxic_ids)

    baseline, soft, banned = count(0.0), count(5.0), count(math.inf)
    assert baseline >= 10, "the copying model should reproduce the toxic words"
    assert banned == 0
    assert soft < baseline


@pytest.mark.parametrize("num_beams", [1, 2])
def test_zero_strength_processors_change_nothing(model, tokenizer, texts, toxic_ids, num_beams) -> None:
    cfg = DecodingConfig(num_beams=num_beams, max_new_tokens=MAX_TOKENS + 4)
    src = tokenizer(texts, padding=True, return_tensors="pt").input_ids
    zero = LogitsProcessorList([ToxicTokenPenalty(toxic_ids, 0.0), CopyPenalty(src, 0.0, num_beams=num_beams)])
    assert torch.equal(
        _generate_ids(model, tokenizer, texts, cfg, processors=zero),
        _generate_ids(model, tokenizer, texts, cfg, processors=LogitsProcessorList()),
    )


def test_copy_penalty_lowers_copy_rate(model, tokenizer, texts) -> None:
    base = _copy_rate(generate(model, tokenizer, texts, DecodingConfig(max_new_tokens=MAX_TOKENS + 4)), texts)
    cfg = DecodingConfig(max_new_tokens=MAX_TOKENS + 4, copy_penalty=5.0, copy_ngram=3)
    penalised = _copy_rate(generate(model, tokenizer, texts, cfg), texts)
    assert base >= 0.6, f"fixture model should mostly copy (copy rate {base:.2f})"
    assert penalised <= base - 0.3, (base, penalised)


@pytest.mark.parametrize("num_beams", [2, 3])
def test_beam_search_composes_with_hf_processors(model, tokenizer, texts, toxic_ids, num_beams) -> None:
    cfg = DecodingConfig(
        num_beams=num_beams, max_new_tokens=MAX_TOKENS + 4, toxic_penalty=math.inf, copy_penalty=1.0,
        repetition_penalty=1.2, encoder_repetition_penalty=1.1, no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=4,
    )
    out = _generate_ids(model, tokenizer, texts[:24], cfg, toxic_ids)
    assert out.shape[0] == 24 and _count(out, toxic_ids) == 0
    src = tokenizer(texts[:24])["input_ids"]
    for row, source in zip(out.tolist(), src):
        row = [t for t in row if t not in (0, 1)]
        bigrams = list(zip(row, row[1:]))
        assert len(bigrams) == len(set(bigrams)), "no_repeat_ngram_size=2 was not applied"
        source_4grams = set(zip(source, source[1:], source[2:], source[3:]))
        assert not source_4grams & set(zip(row, row[1:], row[2:], row[3:])), "encoder_no_repeat_ngram_size ignored"


def test_sorted_batches_match_naive_order(model, tokenizer, texts, toxic_ids) -> None:
    cfg = DecodingConfig(max_new_tokens=MAX_TOKENS + 4, batch_size=8, toxic_penalty=2.0, copy_penalty=1.0)
    model.train()
    sorted_out = generate(model, tokenizer, texts, cfg, toxic_ids, progress=True)
    assert model.training, "generate must restore the model's previous mode"
    model.eval()
    naive_out = naive_generate(model, tokenizer, texts, cfg, toxic_ids)
    assert len(sorted_out) == len(texts) and sorted_out == naive_out
    lengths = [len(i) for i in tokenizer(texts)["input_ids"]]
    assert lengths != sorted(lengths, reverse=True), "input order must differ from length order for this check"
    # Order restored: plain copying outputs land on their own inputs.
    plain = generate(model, tokenizer, texts, DecodingConfig(max_new_tokens=MAX_TOKENS + 4, batch_size=8))
    assert _copy_rate(plain, texts) >= 0.6
    assert generate(model, tokenizer, [], cfg) == []
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        generate(model, tokenizer, ["ok", 3], cfg)  # type: ignore[list-item]


# --------------------------------------------------------------------------- toxic_ban: every_piece


def _piece_texts(tokenizer) -> list[tuple[bool, str]]:
    """(starts a word, lower-cased text) of every vocabulary piece, read straight from the tokenizer."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        out.append((False, "") if i in special else (piece.startswith("▁"), piece.lstrip("▁").lower()))
    return out


def _starts_term(text: str, term: str) -> bool:
    return bool(text) and (term.startswith(text) or text.startswith(term))


def test_source_term_ban_bans_every_piece_that_starts_a_source_term(tokenizer) -> None:
    source = "you are a fucking idiot and stupid"
    lexicon = Lexicon.from_terms({"en": ["fucking", "idiot", "moron"]})
    enc = tokenizer([source], return_tensors="pt")
    proc = source_term_ban(PieceTable.of(tokenizer), lexicon, [source], enc.input_ids, math.inf, 3.0, num_beams=1)
    assert proc.terms == [["fucking", "idiot"]], "only the terms the source holds"
    pieces = _piece_texts(tokenizer)
    # At the start, and after a bare word-start marker: every piece, marked or not, that begins a term.
    start = {i for i, (_, text) in enumerate(pieces) if any(_starts_term(text, t) for t in ("fucking", "idiot"))}
    assert proc.banned(0, [0]) == start
    bare = tokenizer.convert_tokens_to_ids("▁")
    assert proc.banned(0, [0, bare]) == start
    # Inside a word that began a term ("▁fu…" cannot be emitted, but "▁f" + "u" spelt by the model can):
    # the rest of the term may not continue, on top of the word-start pieces.
    f_id = tokenizer.convert_tokens_to_ids("▁f")
    marked = {i for i, (m, text) in enumerate(pieces) if m and any(_starts_term(text, t) for t in ("fucking", "idiot"))}
    rest = {i for i, (m, text) in enumerate(pieces) if not m and _starts_term(text, "ucking")}
    assert rest and proc.banned(0, [0, f_id]) == marked | rest
    # After a finished word that is no prefix of a term, only the word-start pieces stay banned.
    you = tokenizer.convert_tokens_to_ids("▁you")
    assert proc.banned(0, [0, you]) == marked
    # Scores: banned pieces at -inf, everything else unchanged.
    out = proc(torch.tensor([[0, you]]), torch.zeros(1, VOCAB))
    assert torch.isneginf(out[0, sorted(marked)]).all()
    assert int(torch.isneginf(out).sum()) == len(marked)


def test_source_term_ban_gives_the_next_source_word_a_bonus(tokenizer) -> None:
    source = "you are a fucking idiot and stupid"
    lexicon = Lexicon.from_terms({"en": ["fucking", "idiot"]})
    enc = tokenizer([source], return_tensors="pt")
    ids = enc.input_ids[0].tolist()
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[:5] == ["▁you", "▁are", "▁a", "▁fucking", "▁idiot"], pieces
    nxt = ids[5]  # the piece after the run of two terms (the start of "and")
    proc = source_term_ban(PieceTable.of(tokenizer), lexicon, [source], enc.input_ids, math.inf, 2.5, num_beams=2)
    assert proc.continuations == [[(tuple(ids[1:3]), nxt)]]
    # Two beams of one source: the one that copied up to the terms gets the bonus, the other does not.
    hyps = torch.tensor([[0] + ids[:3], [0] + ids[:2] + [ids[0]]])
    out = proc(hyps, torch.zeros(2, VOCAB))
    assert out[0, nxt] == 2.5 and out[1, nxt] == 0.0
    unbanned = torch.isfinite(out[0])
    assert int((out[0][unbanned] != 0).sum()) == 1, "the bonus goes to one token only"
    with pytest.raises(ValueError, match="hypotheses"):
        proc(torch.tensor([[0]]), torch.zeros(1, VOCAB))
    with pytest.raises(ValueError, match="bonus"):
        SourceTermBan(PieceTable.of(tokenizer), [["x"]], 1.0, bonus=math.inf)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_every_piece_ban_keeps_source_terms_out_of_generation(model, tokenizer, texts, num_beams, shared_data) -> None:
    terms = (shared_data / "lexicons" / "ldnoobw_v2" / "en.txt").read_text(encoding="utf-8").split("\n")
    lexicon = Lexicon.from_terms({"en": [t for t in terms if len(t) >= 3]})
    toxic = [t for t in texts if lexicon.find(t)]
    assert len(toxic) >= 10, "the fixture texts should hold lexicon terms"
    plain = DecodingConfig(num_beams=num_beams, max_new_tokens=MAX_TOKENS + 4)
    copied = generate(model, tokenizer, toxic, plain)
    assert sum(bool(lexicon.find(o)) for o in copied) >= len(toxic) // 2, "the copying model reproduces the terms"
    cfg = dataclasses.replace(plain, toxic_penalty=math.inf, toxic_ban="every_piece", toxic_continuation_bonus=2.0)
    enc = tokenizer(toxic, padding=True, return_tensors="pt")
    procs = build_logits_processors(cfg, enc.input_ids, None, 0, 1, lexicon=lexicon, texts=toxic,
                                    pieces=PieceTable.of(tokenizer))
    assert [type(p) for p in procs] == [SourceTermBan]
    out = _generate_ids(model, tokenizer, toxic, cfg, processors=procs)
    pieces = _piece_texts(tokenizer)
    for source, row in zip(toxic, out.tolist()):
        found = [t for t in lexicon.find(source) if " " not in t]
        for token in row:
            starts_word, text = pieces[token]
            assert not (starts_word and any(_starts_term(text, t) for t in found)), (source, text)
        said = tokenizer.decode(row, skip_special_tokens=True)
        assert not set(found) & set(lexicon.find(said)), (source, said)
    # generate() builds the same processor per batch from the lexicon.
    assert generate(model, tokenizer, toxic, cfg, lexicon=lexicon) == tokenizer.batch_decode(out, skip_special_tokens=True)


def _is_subsequence(row: list[int], source: list[int]) -> bool:
    it = iter(source)
    return all(token in it for token in row)


def test_source_words_only_allows_the_next_token_a_later_word_start_or_eos(tokenizer) -> None:
    source = "you are a bureaucratic idiot"
    ids = tokenizer([source])["input_ids"][0]  # ends with EOS (1)
    pieces = PieceTable.of(tokenizer)
    words = [k for k, i in enumerate(ids[:-1]) if pieces.starts_word[i]]
    inner = [k for k, i in enumerate(ids[:-1]) if not pieces.starts_word[i]]
    assert inner, f"the test needs a word of several pieces: {tokenizer.convert_ids_to_tokens(ids)}"
    proc = SourceWordsOnly(torch.tensor([ids + [0, 0]]), pieces, 0, 1)
    assert sorted(proc.allowed(0, [])) == sorted({1} | {ids[k] for k in words})
    # Inside a word of several pieces: its next piece, a later word start or EOS; no later inner piece.
    k = inner[0]
    allowed = proc.allowed(0, [ids[k - 1]])
    assert ids[k] in allowed and 1 in allowed
    assert set(allowed) == {1, ids[k]} | {ids[j] for j in words if j > k - 1}
    # After skipping to the last word: only it continues, then the end.
    last = words[-1]
    assert sorted(proc.allowed(0, [ids[last]])) == sorted({1} | set(ids[last + 1:-1]))
    assert proc.allowed(0, ids[:-1]) == [1]
    out = proc(torch.tensor([[0, ids[0]]]), torch.zeros(1, VOCAB))
    assert set(torch.isfinite(out[0]).nonzero().flatten().tolist()) == set(proc.allowed(0, [ids[0]]))
    # Each skipped word costs the penalty, a banned one nothing: after the first word, the second word
    # is free, the third costs one skipped word, unless the second is banned; EOS skips every word left.
    costly = SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, skip_penalty=1.5)
    w1, w2 = ids[words[1]], ids[words[2]]
    costs = costly.costs(0, [ids[0]])
    assert (costs[w1], costs[w2], costs[1]) == (0.0, 1.5, 1.5 * (len(words) - 1))
    assert costly.costs(0, [ids[0]], banned=[w1])[w2] == 0.0
    scores = torch.zeros(1, VOCAB)
    scores[0, w1] = -math.inf  # as an earlier processor (a toxic ban) leaves it
    out = costly(torch.tensor([[0, ids[0]]]), scores)
    assert torch.isneginf(out[0, w1]) and out[0, w2] == 0.0 and out[0, 1] == -1.5 * (len(words) - 2)
    with pytest.raises(ValueError, match="skip_penalty"):
        SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, skip_penalty=-1.0)
    # A lexicon term's word may not start (toxic penalty inf) and skips free; other words are untouched.
    idiot = words[-1]
    assert tokenizer.decode(ids[idiot:-1]).strip() == "idiot"
    where = tokenizer([source], return_offsets_mapping=True)["offset_mapping"]
    banning = SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, skip_penalty=1.5,
                              lexicon=Lexicon.from_terms({"en": ["idiot", "moron"]}), toxic_penalty=math.inf,
                              texts=[source], offsets=where)
    assert banning.toxic == [{idiot}]
    # Terms are those of the row's language when it is given (the delete system's rule).
    with pytest.raises(ValueError, match="text"):
        SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, lexicon=Lexicon.from_terms({"en": ["idiot"]}),
                        toxic_penalty=math.inf)
    by_lang = {lang: SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, toxic_penalty=math.inf, langs=[lang],
                                     texts=[source], offsets=where,
                                     lexicon=Lexicon.from_terms({"en": ["idiot"], "de": ["dummkopf"]})).toxic
               for lang in ("en", "de", None)}
    assert by_lang == {"en": [{idiot}], "de": [set()], None: [{idiot}]}
    costs = banning.costs(0, ids[:idiot])  # copied up to "idiot": it may not start; ending skips it free
    assert ids[idiot] not in costs and costs[1] == 0.0, costs
    with pytest.raises(ValueError, match="hypotheses"):
        proc(torch.tensor([[0], [0]]), torch.zeros(2, VOCAB))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_source_words_only_generates_a_word_subsequence_without_the_terms(model, tokenizer, texts, num_beams,
                                                                           shared_data) -> None:
    terms = (shared_data / "lexicons" / "ldnoobw_v2" / "en.txt").read_text(encoding="utf-8").split("\n")
    lexicon = Lexicon.from_terms({"en": [t for t in terms if len(t) >= 3]})
    toxic = [t for t in texts if lexicon.find(t)]
    cfg = DecodingConfig(num_beams=num_beams, max_new_tokens=MAX_TOKENS + 4, toxic_penalty=math.inf,
                         toxic_ban="every_piece", source_words_only=True, source_skip_penalty=0.0)
    enc = tokenizer(toxic, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="offsets"):
        build_logits_processors(cfg, enc.input_ids, None, 0, 1, lexicon=lexicon, texts=toxic,
                                pieces=PieceTable.of(tokenizer))
    procs = build_logits_processors(cfg, enc.input_ids, None, 0, 1, lexicon=lexicon, texts=toxic,
                                    pieces=PieceTable.of(tokenizer),
                                    offsets=tokenizer(toxic, return_offsets_mapping=True)["offset_mapping"])
    assert [type(p) for p in procs] == [SourceWordsOnly], "it bans the source's terms itself"
    out = _generate_ids(model, tokenizer, toxic, cfg, processors=procs)
    sources = tokenizer(toxic)["input_ids"]
    unshortened = []
    for source, text, row in zip(sources, toxic, out.tolist()):
        emitted = [t for t in row if t not in (0, 1)]
        assert _is_subsequence(emitted, source), (text, tokenizer.decode(row))
        said = tokenizer.decode(row, skip_special_tokens=True)
        banned = set(lexicon.find(text))  # phrases too
        assert not banned & set(lexicon.find(said)), (text, said)
        if banned and len(emitted) == len(source) - 1:
            unshortened.append((text, said))
    assert not unshortened, "a source holding a banned term must lose at least that word"
    # generate() gives what was kept in the source's own characters (not the tokenizer's decoding).
    enc = tokenizer(toxic, return_offsets_mapping=True)
    kept = [kept_source_text(text, offsets[:-1], source_positions(ids[:-1], [t for t in row if t not in (0, 1)], never))
            for text, ids, offsets, row, never in zip(toxic, enc["input_ids"], enc["offset_mapping"], out.tolist(),
                                                      procs[0].never)]
    assert generate(model, tokenizer, toxic, cfg, lexicon=lexicon) == kept
    assert generate(model, tokenizer, toxic, cfg, lexicon=lexicon, langs=["en"] * len(toxic)) == kept
    with pytest.raises(ValueError, match="languages"):
        generate(model, tokenizer, toxic, cfg, lexicon=lexicon, langs=["en"])
    for text, said in zip(toxic, kept):
        rest = iter(text)
        assert all(ch in rest for ch in said), (text, said)


def test_kept_source_text_keeps_the_source_spelling(tokenizer) -> None:
    text = "You  are a Bureaucratic IDIOT !"
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][:-1], enc["offset_mapping"][:-1]  # without EOS
    everything = list(range(len(ids)))
    assert kept_source_text(text, offsets, everything) == text
    assert tokenizer.decode(ids) != text, "the tokenizer's decoding normalises what the source text keeps"
    idiot = [k for k, (a, b) in enumerate(offsets) if text[a:b].strip() and text[a:b].strip() in "IDIOT"]
    # Where words are dropped the whitespace is tidied as delete tidies it (none before closing punctuation).
    assert kept_source_text(text, offsets, [k for k in everything if k not in idiot]) == "You  are a Bureaucratic!"
    assert Lexicon.from_terms({"en": ["idiot"]}).remove(text) == "You  are a Bureaucratic!"
    are = next(k for k, (a, b) in enumerate(offsets) if text[a:b].strip() == "are")
    assert kept_source_text(text, offsets, [k for k in everything if k != are]) == "You a Bureaucratic IDIOT !"
    assert source_positions(ids, [ids[0], ids[2]]) == [0, 2] and source_positions(ids, [ids[2], ids[0]]) is None


@pytest.mark.parametrize("text", ["you idiot 123 people", "you idiot 😀 friend", "you idiot Łukasz here"])
def test_kept_source_text_keeps_the_space_of_a_bare_word_start_piece_after_a_deletion(text) -> None:
    # How the embedded base's tokenizer spells digits, emoji and rare words: a bare "▁" piece holding the
    # word's space alone, then the word's pieces (its offsets, as it returns them, for "you idiot 123 people":
    # ▁you (0,3) ▁idiot (3,9) ▁ (9,10) 1 (10,11) 2 (11,12) 3 (12,13) ▁people (13,20)).
    word = text.split()[2]
    offsets = [(0, 3), (3, 9), (9, 10)] + [(10 + i, 11 + i) for i in range(len(word))]
    offsets.append((offsets[-1][1], len(text)))
    kept = kept_source_text(text, offsets, [0] + list(range(2, len(offsets))))  # without ▁idiot
    assert kept == Lexicon.from_terms({"en": ["idiot"]}).remove(text) == text.replace("idiot ", "")
    assert kept_source_text(text, offsets, [0, 2, len(offsets) - 1]) == "you " + text.split()[3], \
        "a bare piece kept without its word is no word"


def test_source_words_only_drops_a_term_but_keeps_what_is_glued_to_it(model, tokenizer) -> None:
    text = "you are an idiot! go home"
    enc = tokenizer([text], return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][0], enc["offset_mapping"][0]
    pieces = PieceTable.of(tokenizer)
    bang = next(k for k, (a, b) in enumerate(offsets) if text[a:b] == "!")
    assert not pieces.starts_word[ids[bang]], "the test needs '!' glued to the term's word"
    idiot = max(k for k in range(bang) if pieces.starts_word[ids[k]])
    lexicon = Lexicon.from_terms({"en": ["idiot"]})
    proc = SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, skip_penalty=math.inf, lexicon=lexicon,
                           toxic_penalty=math.inf, texts=[text], offsets=[offsets])
    assert proc.toxic == [{idiot}] and proc.inner_starts == [{bang}]
    # After "an": the term may not start, and "!" follows it at no cost (the term skips free).
    costs = proc.costs(0, ids[:idiot])
    assert ids[idiot] not in costs and costs[ids[bang]] == 0.0, costs
    cfg = DecodingConfig(max_new_tokens=32, toxic_penalty=math.inf, source_words_only=True,
                         source_skip_penalty=math.inf)
    assert generate(model, tokenizer, [text], cfg, lexicon=lexicon) == [lexicon.remove(text)] == ["you are an! go home"]
    # A phrase goes whole, as delete drops it; its words may not start it again after a skip.
    text = "you are a piece of crap, man"
    enc = tokenizer([text], return_offsets_mapping=True)
    ids, offsets = enc["input_ids"][0], enc["offset_mapping"][0]
    phrase = Lexicon.from_terms({"en": ["piece of crap"]})
    proc = SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, skip_penalty=math.inf, lexicon=phrase,
                           toxic_penalty=math.inf, texts=[text], offsets=[offsets])
    held = [k for k, (a, b) in enumerate(offsets) if 10 <= a < 23]  # "piece of crap"
    comma = next(k for k, (a, b) in enumerate(offsets) if text[a:b] == ",")
    assert proc.toxic == [set(held)] and comma in proc.inner_starts[0]
    costs = proc.costs(0, ids[:held[0]])
    assert {t for t, c in costs.items() if c < math.inf} == {ids[comma]}  # after "you are a": only the comma
    assert generate(model, tokenizer, [text], cfg, lexicon=phrase) == [phrase.remove(text)] == ["you are a, man"]
    # A word of the banned phrase that comes again after it: the alignment passes over the banned one.
    again = "a piece of crap of a man"
    enc = tokenizer([again], return_offsets_mapping=True)
    ids = enc["input_ids"][0]
    proc = SourceWordsOnly(torch.tensor([ids]), pieces, 0, 1, skip_penalty=math.inf, lexicon=phrase,
                           toxic_penalty=math.inf, texts=[again], offsets=enc["offset_mapping"])
    of = [k for k, t in enumerate(tokenizer.convert_ids_to_tokens(ids)) if t == "▁of"]
    assert len(of) == 2 and of[0] in proc.never[0] and proc.costs(0, ids[:1])[ids[of[1]]] == 0.0
    assert source_positions(ids, [ids[0], ids[of[1]]], proc.never[0]) == [0, of[1]]
    assert generate(model, tokenizer, [again], cfg, lexicon=phrase) == [phrase.remove(again)] == ["a of a man"]
    # An offered token is where the alignment puts it: a '!' earlier in the source is not offered for a later one.
    enc = tokenizer(["go! you idiot! go"], return_offsets_mapping=True)
    twice = enc["input_ids"][0]
    proc = SourceWordsOnly(torch.tensor([twice]), pieces, 0, 1, skip_penalty=1.0, lexicon=lexicon,
                           toxic_penalty=math.inf, texts=["go! you idiot! go"], offsets=enc["offset_mapping"])
    (later,) = proc.inner_starts[0]
    assert twice[later] == twice[1] and not proc.pieces.starts_word[twice[1]]
    assert twice[1] not in proc.costs(0, [])  # it would be aligned to the first '!', not a word start
    assert proc.costs(0, twice[:3])[twice[later]] == 0.0  # after "go! you": skip the term, keep its '!'


def test_source_words_only_keeps_the_unseen_tail_less_its_terms(model, tokenizer) -> None:
    text = "you are such a bureaucratic person and an idiot too"
    lexicon = Lexicon.from_terms({"en": ["idiot"]})
    cut = tokenizer([text], truncation=True, max_length=8, return_offsets_mapping=True)["offset_mapping"][0]
    seen = max(b for _, b in cut)
    assert "idiot" in text[seen:], "the test needs the term beyond the model's input"
    swo = DecodingConfig(max_new_tokens=32, toxic_penalty=math.inf, source_words_only=True,
                         source_skip_penalty=math.inf)
    (out,) = generate(model, tokenizer, [text], swo, lexicon=lexicon, max_source_length=8, langs=["en"])
    assert out == lexicon.remove(text) == "you are such a bureaucratic person and an too"
    # Without a toxic penalty the unseen tail is kept as it is.
    keep = dataclasses.replace(swo, toxic_penalty=0.0)
    assert generate(model, tokenizer, [text], keep, max_source_length=8) == [text]


def test_source_words_only_with_skip_inf_is_delete_wherever_the_input_is_cut(model, tokenizer) -> None:
    """Cut anywhere (after a bare "▁" piece that holds a space, just after a term, before one), the
    unseen tail joins what the model kept as the delete system joins the words around a deletion."""
    lexicon = Lexicon.from_terms({"en": ["idiot"]})
    swo = DecodingConfig(max_new_tokens=48, toxic_penalty=math.inf, source_words_only=True,
                         source_skip_penalty=math.inf)
    text = "you idiot , i lost it * years * ago , idiot ."
    pieces = tokenizer.convert_ids_to_tokens(tokenizer([text])["input_ids"][0])
    assert "\u2581" in pieces, f"the test needs a bare piece: {pieces}"
    for length in range(2, len(pieces) + 1):  # max_source_length counts </s>
        (out,) = generate(model, tokenizer, [text], swo, lexicon=lexicon, max_source_length=length, langs=["en"])
        assert out == lexicon.remove(text, "en") == "you, i lost it * years * ago ,.", (length, out)


def test_source_words_only_drops_only_the_pieces_of_a_term_in_unspaced_text(mpd_dir, tmp_path) -> None:
    # Unspaced Chinese is one "word" per clause: the term takes the pieces that hold it, not the clause.
    df = pd.read_parquet(mpd_dir / "zh-00000-of-00001.parquet", columns=["toxic_sentence", "neutral_sentence"])
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(pd.concat([df.toxic_sentence, df.neutral_sentence]).tolist()),
        model_prefix=str(tmp_path / "spiece"), vocab_size=2000, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, num_threads=1, minloglevel=2,
    )
    zh = T5TokenizerFast.from_pretrained(tmp_path, extra_ids=0)
    assert len(zh) == 2000
    enc = zh(["大部分反对同性恋的人很少"], return_offsets_mapping=True)
    ids = enc["input_ids"][0]
    tokens = zh.convert_ids_to_tokens(ids)
    assert "反对同性恋" in tokens and sum(t.startswith("▁") for t in tokens) == 1, tokens
    held = tokens.index("反对同性恋")  # the term is inside this piece, with 反对 ("oppose")
    proc = SourceWordsOnly(torch.tensor([ids]), PieceTable.of(zh), 0, 1, skip_penalty=math.inf,
                           lexicon=Lexicon.from_terms({"zh": ["同性恋"]}), toxic_penalty=math.inf, langs=["zh"],
                           texts=["大部分反对同性恋的人很少"], offsets=enc["offset_mapping"])
    assert proc.toxic == [{held}] and proc.inner_starts == [{held, held + 1}]
    costs = proc.costs(0, ids[:held])
    assert ids[held] not in costs and costs[ids[held + 1]] == 0.0 and costs[1] == math.inf, costs
