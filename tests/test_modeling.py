"""Embedded base (raydetox.embedded_base: tokenizer, cache, build report), base loading, LoRA wrapping, save/load round trips.

One tiny build (20 steps, d_model 32) on ~300 real multilingual sentences serves every test: the build
is plumbing only here; its copy fidelity is measured by the full build (see the module docstring).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration, T5Tokenizer

from raydetox.config import (
    ConfigError, DataConfig, EmbeddedBaseConfig, LexiconConfig, LoraConfig, ModelConfig, PretrainMixConfig,
)
from raydetox.data.lexicon import Lexicon
from raydetox.embedded_base import (
    EOS_ID,
    PAD_ID,
    PRETRAINING_DROPPED,
    PretrainingExamples,
    _batches,
    _init_previous_token_head,
    _length_cap,
    _t5_config,
    build_embedded_base,
)
from raydetox.pretraining_corpus import (
    BUILD_REPORT,
    TRAIN,
    PretrainingCorpus,
    assert_no_evaluation_text,
    cached_base,
    corpus_texts,
    embedded_cache_path,
    exclude_texts,
    find_cached_base,
    normalize_text,
    read_pretraining_sources,
)
from raydetox.errors import ModelError, PretrainingLeakError
from raydetox.modeling import apply_lora, load_base, load_trained, save_trained

LANGS = ("am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh")
TINY = EmbeddedBaseConfig(
    vocab_size=1200,  # 300 sentences in 9 scripts need ~730 single-character pieces
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    max_length=32,
    batch_size=16,
    max_steps=20,
    rounds=1,
)


@pytest.fixture(scope="module")
def lang_frames(mpd_dir: Path) -> dict[str, pd.DataFrame]:
    return {lang: pd.read_parquet(mpd_dir / f"{lang}-00000-of-00001.parquet") for lang in LANGS}


@pytest.fixture(scope="module")
def texts(lang_frames: dict[str, pd.DataFrame]) -> list[str]:
    """~300 real texts: 17 pairs (toxic + neutral) per language."""
    out: list[str] = []
    for frame in lang_frames.values():
        sample = frame.sample(17, random_state=0)
        out += list(sample["toxic_sentence"]) + list(sample["neutral_sentence"])
    return out


@pytest.fixture(scope="module")
def built(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("cache")
    return build_embedded_base(texts, TINY, cache_dir=cache, progress=False), cache


def test_tokenizer_round_trips_every_language(built, lang_frames) -> None:
    path, _ = built
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == TINY.vocab_size
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    # T5's own class loads the same vocabulary (no sentinel tokens appended)
    assert len(T5Tokenizer.from_pretrained(path)) == TINY.vocab_size
    for lang, frame in lang_frames.items():
        # unseen texts too: byte fallback must cover characters the tokenizer never saw
        sample = list(frame["toxic_sentence"].iloc[-20:]) + list(frame["neutral_sentence"].iloc[-20:])
        for text in sample + ["  two  spaces, tab\tand newline\n🙂 "]:
            ids = tok(text)["input_ids"]
            assert ids[-1] == tok.eos_token_id
            assert tok.unk_token_id not in ids, (lang, text)
            assert tok.decode(ids, skip_special_tokens=True) == text, (lang, text)


def test_build_report_fields(built, texts) -> None:
    path, _ = built
    report = json.loads((path / BUILD_REPORT).read_text())
    assert report["steps"] == TINY.max_steps
    assert 0.0 <= report["exact_copy_rate"] <= 1.0 and 0.0 <= report["chrf"] <= 100.0
    assert report["n_eval"] == len(set(texts)) // 10
    assert report["n_train_texts"] + report["n_eval"] == len(set(texts))
    assert report["params"] > 0 and report["train_seconds"] > 0
    for key in ("final_loss", "eval_seconds", "steps_per_second", "vocab_size", "eval_longer_than_max_length"):
        assert key in report
    for name in ("config.json", "model.safetensors", "tokenizer.json", "spiece.model"):
        assert (path / name).is_file()


COPY_ONLY = EmbeddedBaseConfig(
    max_length=48, curriculum_length=12, curriculum_fraction=0.5, concat_prob=0.5,
    mix=PretrainMixConfig(copy=1.0, denoise=0.0, deletion=0.0, pairs=0.0),
)


def test_copy_batches_follow_the_length_curriculum(built, texts) -> None:
    tok = AutoTokenizer.from_pretrained(built[0])
    cfg = COPY_ONLY
    examples = PretrainingExamples(PretrainingCorpus.of_texts(texts).texts, PretrainingCorpus.of_texts([]).pairs, None, tok, cfg)
    seqs = [ids[:-1] for ids in tok(texts)["input_ids"]]
    assert [_length_cap(p, cfg) for p in (0.0, 0.49, 0.5, 0.99)] == [12, 12, 48, 48]
    progress = [0.0]
    mix = {"copy": 1.0}
    batches = _batches(examples, lambda: mix, 16, lambda: _length_cap(progress[0], cfg), random.Random(0))
    known = {tuple(s) for s in seqs}
    for phase, cap in ((0.0, 12), (0.7, 48)):
        progress[0] = phase
        for _ in range(8):  # a full pool drawn at the previous cap is used up first
            next(batches)
        widths, whole = [], 0
        for _ in range(16):
            ids, mask, labels = next(batches)
            assert ids.shape[0] == 16 and torch.equal(mask, ids != PAD_ID)
            assert torch.equal(labels.masked_fill(labels == -100, PAD_ID), ids)  # copying: target = input
            for row in ids.tolist():
                body = row[: row.index(EOS_ID)]
                assert 1 <= len(body) < cap and all(t != PAD_ID for t in body)
                whole += tuple(body) in known
            widths.append(ids.shape[1])
        assert max(widths) <= cap and max(widths) > cap // 2
        assert 0 < whole < 16 * 16  # whole texts and random spans of joined texts


def test_previous_token_heads_init() -> None:
    torch.manual_seed(0)
    config = _t5_config(EmbeddedBaseConfig(d_model=32, d_kv=8, d_ff=64, num_heads=4), 300)
    config._attn_implementation = "eager"  # only eager attention returns its weights
    model = T5ForConditionalGeneration(config)
    ids = torch.randint(3, 300, (2, 12))
    _init_previous_token_head(model, 8.0)
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=ids, output_attentions=True)
    # (batch, head, query, key); T5 shares layer 0's position bias with every layer of a stack
    checks = ((out.encoder_attentions, 0, 1), (out.encoder_attentions, 1, 2), (out.decoder_attentions, 0, 1))
    for layers, head, back in checks:
        for layer in layers:
            weights = layer[:, head, back:, :]
            assert torch.equal(weights.argmax(-1), torch.arange(12 - back).expand(2, -1)), (head, back)
            assert weights.max(-1).values.min() > 0.5
    plain = out.encoder_attentions[0][:, 2, 1:, :].argmax(-1)  # other heads keep their plain init
    assert not torch.equal(plain, torch.arange(11).expand(2, -1))


def test_cache_hit_does_not_rebuild(built, texts) -> None:
    path, cache = built
    mtime = (path / BUILD_REPORT).stat().st_mtime_ns
    shuffled = random.Random(1).sample(texts, len(texts))  # order does not matter for the key
    assert build_embedded_base(shuffled, TINY, cache_dir=cache, progress=False) == path
    assert (path / BUILD_REPORT).stat().st_mtime_ns == mtime
    assert find_cached_base(TINY, cache) == path
    # what a sweep's driver asks without importing the builder: found for these texts, not for others
    assert cached_base(shuffled, TINY, cache) == path
    assert cached_base(texts[1:], TINY, cache) is None
    # load_base without texts reuses the cached build of this config
    model, tok = load_base(ModelConfig(cache_dir=str(cache), embedded=TINY))
    assert model.config.d_model == TINY.d_model and len(tok) == TINY.vocab_size
    assert not [p for p in (cache / "embedded").iterdir() if p.name.startswith(".tmp")]


def test_cache_key_depends_on_config_and_texts(texts, tmp_path, monkeypatch) -> None:
    key = embedded_cache_path(texts, TINY, tmp_path)
    assert embedded_cache_path(list(reversed(texts)), TINY, tmp_path) == key
    assert embedded_cache_path(texts[1:], TINY, tmp_path) != key
    assert embedded_cache_path(texts + ["another sentence"], TINY, tmp_path) != key
    other = EmbeddedBaseConfig(**{**TINY.__dict__, "seed": 1})
    assert embedded_cache_path(texts, other, tmp_path) != key
    assert embedded_cache_path(texts, TINY, tmp_path, eval_texts=texts[:5]) != key
    on_gpu = EmbeddedBaseConfig(**{**TINY.__dict__, "device": "cuda"})
    assert embedded_cache_path(texts, on_gpu, tmp_path) != key  # a GPU build's weights differ
    # Other library versions may build other weights: another key (the versions are read, not imported).
    import raydetox.pretraining_corpus as corpus

    installed = corpus.library_versions()
    assert set(installed) == {"torch", "transformers", "tokenizers", "sentencepiece"}
    upgraded = lambda: {**installed, "tokenizers": installed["tokenizers"] + ".post1"}  # noqa: E731
    monkeypatch.setattr(corpus, "library_versions", upgraded)
    assert embedded_cache_path(texts, TINY, tmp_path) != key


def test_a_gpu_build_without_a_gpu_is_refused_before_anything_is_built(texts, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot happen here")
    on_gpu = EmbeddedBaseConfig(**{**TINY.__dict__, "device": "cuda"})
    with pytest.raises(ConfigError, match=r"key 'model.embedded.device': is 'cuda' but no CUDA GPU"):
        build_embedded_base(texts, on_gpu, tmp_path, progress=False)
    assert not [p for p in (tmp_path / "embedded").glob("*") if not p.name.startswith(".")]


def test_embedded_without_texts_or_cache_is_an_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="no cached base"):
        load_base(ModelConfig(cache_dir=str(tmp_path), embedded=TINY))


def test_load_base_from_local_dir_and_missing_path(built, tmp_path) -> None:
    path, _ = built
    model, tok = load_base(ModelConfig(name_or_path=str(path)))
    assert type(model).__name__ == "T5ForConditionalGeneration" and len(tok) == TINY.vocab_size
    with pytest.raises(ModelError, match="does-not-exist"):
        load_base(ModelConfig(name_or_path=str(tmp_path / "does-not-exist")))


def test_apply_lora_trains_only_adapter_on_q_v(built) -> None:
    model, _ = load_base(ModelConfig(name_or_path=str(built[0])))
    assert apply_lora(model, None) is model
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # peft's deprecation noise is silenced, nothing else
        peft_model = apply_lora(model, LoraConfig(r=4, alpha=8))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert targets == {"q", "v"}
    with pytest.raises(ValueError, match="nope"):
        apply_lora(load_base(ModelConfig(name_or_path=str(built[0])))[0], LoraConfig(target_modules=["nope"]))


def _logits(model, tok, texts: list[str]) -> torch.Tensor:
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch, decoder_input_ids=batch["input_ids"][:, :8]).logits


def test_lora_save_is_adapter_only_and_round_trips(built, texts, tmp_path) -> None:
    model, tok = load_base(ModelConfig(name_or_path=str(built[0])))
    base_logits = _logits(model, tok, texts[:4])
    peft_model = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero: perturb it so the adapter really changes the output
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    peft_model.eval()
    trained_logits = _logits(peft_model, tok, texts[:4])
    assert not torch.allclose(trained_logits, base_logits)

    out = save_trained(peft_model, tok, tmp_path / "adapter")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert not names & {"model.safetensors", "pytorch_model.bin"}
    assert (out / "adapter_model.safetensors").stat().st_size < (built[0] / "model.safetensors").stat().st_size / 4

    loaded, loaded_tok = load_trained(out)
    assert torch.equal(_logits(loaded, loaded_tok, texts[:4]), trained_logits)
    merged, _ = load_trained(out, merge=True)
    assert torch.allclose(_logits(merged, loaded_tok, texts[:4]), trained_logits, atol=1e-5)


def test_full_model_save_round_trips(built, texts, tmp_path) -> None:
    model, tok = load_base(ModelConfig(name_or_path=str(built[0])))
    with torch.no_grad():
        model.shared.weight.mul_(1.5)  # a "fine-tuned" full model differs from its base
    out = save_trained(model, tok, tmp_path / "full")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    loaded, loaded_tok = load_trained(out)
    assert torch.equal(_logits(loaded, loaded_tok, texts[:4]), _logits(model, tok, texts[:4]))


def test_corpus_texts_dedups_all_sides_in_order() -> None:
    pairs = pd.DataFrame(
        {
            "toxic": ["a b", "c d", "a b"],
            "neutral": ["a", "c", "a"],
            "refs": [["a", "a x"], ["c"], None],
            "lang": ["en", "de", "en"],
        }
    )
    frame = corpus_texts(pairs)
    assert list(frame["text"]) == ["a b", "a", "a x", "c d", "c"]
    assert list(frame["lang"]) == ["en", "en", "en", "de", "de"] and set(frame["source"]) == {TRAIN}
    with pytest.raises(KeyError, match="neutral"):
        corpus_texts(pairs.drop(columns="neutral"))
    with pytest.raises(TypeError, match="row 1, column 'toxic'"):
        corpus_texts(pairs.assign(toxic=["x", None, "y"]))


def test_embedded_base_is_a_function_of_seed_and_data_not_of_time(built, texts, tmp_path: Path) -> None:
    """Built to a fixed number of steps: a second build elsewhere gives the same weights, bit for bit."""
    from safetensors.torch import load_file

    path, _ = built
    again = build_embedded_base(texts, TINY, cache_dir=tmp_path, progress=False)
    assert again != path
    first, second = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((again / BUILD_REPORT).read_text())["steps"] == TINY.max_steps


# ------------------------------------------------------------------ pretraining mix (copy + edit objectives)

# The edit mix (the default is copy only until the mix is shown to help).
MIXED = EmbeddedBaseConfig(**{**TINY.__dict__, "edit_eval_pairs": 20, "max_steps": 12,
                              "mix": PretrainMixConfig(copy=0.5, denoise=0.15, deletion=0.2, pairs=0.15)})


@pytest.fixture(scope="module")
def mixed_corpus(lang_frames: dict[str, pd.DataFrame], shared_data: Path) -> PretrainingCorpus:
    """Real data: 30 train pairs per language, 4 evaluation pairs per language (forbidden), the first 60
    English ParaDetox rows as an extra source, and a lexicon learned from the train pairs + ldnoobw lists."""
    train, evaluation = [], []
    for lang, frame in lang_frames.items():
        sample = frame.sample(34, random_state=1)
        rows = pd.DataFrame({"lang": lang, "toxic": sample["toxic_sentence"], "neutral": sample["neutral_sentence"]})
        train.append(rows.iloc[:30])
        evaluation.append(rows.iloc[30:])
    train_pairs = pd.concat(train, ignore_index=True).assign(refs=lambda f: [[n] for n in f["neutral"]])
    forbidden = [t for f in evaluation for t in (*f["toxic"], *f["neutral"])]
    source = read_pretraining_sources(
        [DataConfig(source=str(shared_data / "paradetox" / "paradetox.tsv"), toxic_column="toxic",
                    neutral_columns=["neutral1", "neutral2", "neutral3"], default_lang="en", max_rows_per_lang=60)]
    )
    forbidden.append(source["toxic"].iloc[0])  # an evaluation text that the source also holds
    lexicon = Lexicon.learn(
        train_pairs, LexiconConfig(wordlists=[str(shared_data / "lexicons" / "ldnoobw_v2" / "{lang}.txt")])
    )
    corpus = PretrainingCorpus(
        corpus_texts(train_pairs),
        train_pairs[["toxic", "neutral", "lang"]].assign(source=TRAIN),
        lexicon,
        forbidden,
    )
    return corpus.with_sources(source)


@pytest.fixture(scope="module")
def mixed_built(mixed_corpus: PretrainingCorpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_embedded_base(mixed_corpus, MIXED, cache_dir=tmp_path_factory.mktemp("mixed"), progress=False)


def test_pretraining_examples_are_what_they_claim(mixed_built: Path, mixed_corpus: PretrainingCorpus) -> None:
    tok = AutoTokenizer.from_pretrained(mixed_built)
    texts, pairs, _ = exclude_texts(mixed_corpus, {})
    examples = PretrainingExamples(texts, pairs, mixed_corpus.lexicon, tok, MIXED)
    assert examples.available() == dict.fromkeys(("copy", "denoise", "deletion", "pairs"), True)
    lexicon = mixed_corpus.lexicon
    text_seqs = {tuple(ids[:-1]) for ids in tok(list(texts["text"]))["input_ids"]}
    real_pairs = set(zip(pairs["toxic"], pairs["neutral"]))
    lang_of_neutral = dict(zip(pairs["neutral"], pairs["lang"]))
    rng = random.Random(0)
    body = 40
    for _ in range(60):
        src, tgt = examples.draw("copy", body, rng)
        assert src == tgt and 1 <= len(src) <= body

        src, tgt = examples.draw("denoise", body, rng)
        assert src != tgt and tuple(tgt) in text_seqs and len(src) <= len(tgt) <= body

        src, tgt = examples.draw("pairs", body, rng)
        assert (tok.decode(src), tok.decode(tgt)) in real_pairs and max(len(src), len(tgt)) <= body

        src, tgt = examples.draw("deletion", body, rng)
        neutral, noisy = tok.decode(tgt), tok.decode(src)
        lang = lang_of_neutral[neutral]  # the target is a real neutral side, unchanged
        assert lexicon.find(neutral, lang) == [], (lang, neutral)
        assert lexicon.find(noisy, lang), (lang, noisy)
        it = iter(src)
        assert all(t in it for t in tgt) and len(src) > len(tgt)  # the neutral side, with terms inserted
        assert len(src) <= body


def test_mixed_build_reports_copy_and_edit_and_never_trains_on_evaluation_text(
    mixed_built: Path, mixed_corpus: PretrainingCorpus
) -> None:
    report = json.loads((mixed_built / BUILD_REPORT).read_text())
    assert report["steps"] == MIXED.max_steps
    assert all(report["examples_per_objective"][k] > 0 for k in ("copy", "denoise", "deletion", "pairs"))
    assert report["mix"] == {"copy": 0.5, "denoise": 0.15, "deletion": 0.2, "pairs": 0.15}
    assert report["n_edit_eval"] == 20  # 9 × 30 train pairs: min(edit_eval_pairs, 10 %)
    for key in ("edit_copy_rate", "edit_exact_match", "edit_terms_removed", "edit_inputs_with_terms"):
        assert 0.0 <= report[key] <= 1.0, key
    for key in ("edit_chrf", "edit_chrf_of_copying", "edit_chrf_of_deleting", "chrf"):
        assert 0.0 <= report[key] <= 100.0, key
    dropped = pd.read_csv(mixed_built / PRETRAINING_DROPPED)
    leaked = dropped[dropped["reason"] == "evaluation_text"]
    # the evaluation text the English source also holds is dropped there, with its reason
    assert (leaked["source"] == mixed_corpus.pairs["source"].iloc[-1]).any()
    assert {"held_out_edit_pair", "held_out_copy_text"} <= set(dropped["reason"])


def test_no_evaluation_text_assertion_fires(mixed_corpus: PretrainingCorpus) -> None:
    texts, pairs, _ = exclude_texts(mixed_corpus, {})
    leaked = next(t for t in mixed_corpus.forbidden if t != t.upper())  # case-folding is tested too
    with pytest.raises(PretrainingLeakError):  # the corpus as given holds the source's evaluation text
        assert_no_evaluation_text(texts, pairs, mixed_corpus.forbidden)
    clean_texts, clean_pairs, _ = exclude_texts(
        mixed_corpus, {normalize_text(t): "evaluation_text" for t in mixed_corpus.forbidden}
    )
    assert_no_evaluation_text(clean_texts, clean_pairs, mixed_corpus.forbidden)  # what a build checks: passes
    with_leak = pd.concat([clean_texts, pd.DataFrame({"text": [f"  {leaked.upper()} "], "lang": ["xx"], "source": ["s"]})])
    with pytest.raises(PretrainingLeakError, match=r"text row \d+ \(text, source 's'\) is an evaluation text"):
        assert_no_evaluation_text(with_leak, clean_pairs, mixed_corpus.forbidden)
    leak_pair = pd.DataFrame({"toxic": ["x y"], "neutral": [leaked], "lang": ["xx"], "source": ["s"]})
    with pytest.raises(PretrainingLeakError, match=r"pair row 0 \(neutral"):
        assert_no_evaluation_text(clean_texts, leak_pair, mixed_corpus.forbidden)
    assert len(texts) > len(clean_texts)


def test_mixed_build_is_deterministic_and_keyed_by_mix_and_data(
    mixed_built: Path, mixed_corpus: PretrainingCorpus, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    again = build_embedded_base(mixed_corpus, MIXED, cache_dir=tmp_path, progress=False)
    first, second = load_file(mixed_built / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((again / BUILD_REPORT).read_text())["examples_per_objective"] == json.loads(
        (mixed_built / BUILD_REPORT).read_text()
    )["examples_per_objective"]
    key = embedded_cache_path(mixed_corpus, MIXED, tmp_path)
    copy_only = EmbeddedBaseConfig(**{**MIXED.__dict__, "mix": PretrainMixConfig(1.0, 0.0, 0.0, 0.0)})
    assert embedded_cache_path(mixed_corpus, copy_only, tmp_path) != key
    import dataclasses as dc

    assert embedded_cache_path(dc.replace(mixed_corpus, lexicon=None), MIXED, tmp_path) != key
    assert embedded_cache_path(dc.replace(mixed_corpus, pairs=mixed_corpus.pairs.iloc[1:]), MIXED, tmp_path) != key


def test_copy_first_trains_on_copy_only_before_the_mix(
    mixed_built: Path, mixed_corpus: PretrainingCorpus, tmp_path: Path
) -> None:
    """``copy_first``: the first share of the steps draws copy examples only, then ``mix`` applies; the
    option is part of the cache key when set."""
    first_half = EmbeddedBaseConfig(**{**MIXED.__dict__, "copy_first": 0.5})
    path = build_embedded_base(mixed_corpus, first_half, cache_dir=tmp_path, progress=False)
    kinds = json.loads((path / BUILD_REPORT).read_text())["examples_per_objective"]
    mixed = json.loads((mixed_built / BUILD_REPORT).read_text())["examples_per_objective"]
    pool = MIXED.batch_size * 8  # examples are drawn a pool of 8 batches at a time: steps 0-7, then 8-15
    assert sum(kinds.values()) == sum(mixed.values()) == 2 * pool
    # The first pool (drawn at step 0, before half of the 12 steps) is all copy; the second is mixed.
    assert kinds["copy"] >= pool and 0 < sum(v for k, v in kinds.items() if k != "copy") <= pool
    assert sum(v for k, v in mixed.items() if k != "copy") > pool // 2
    assert embedded_cache_path(mixed_corpus, first_half, tmp_path) != embedded_cache_path(mixed_corpus, MIXED, tmp_path)


def test_the_untrained_base_is_the_one_trials_start_from(mpd_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """With ``model.embedded.sources`` set, the untrained reference row loads the very base a trial's trainer
    starts from (it once left the sources out of the corpus, and so built and scored a base of its own)."""
    from raydetox.data.prepare import prepare
    from raydetox.experiment import build_trainer, load_untrained
    from raydetox.modeling import resolve_base
    from raydetox.pretraining_corpus import base_corpus, record_base, recorded_base
    from tests.tiny import tiny_config

    cache = tmp_path / "cache"
    source = {"source": str(shared_data / "paradetox" / "paradetox.tsv"), "toxic_column": "toxic",
              "neutral_columns": ["neutral1"], "default_lang": "en", "max_rows_per_lang": 40}
    cfg = tiny_config(mpd_dir, tmp_path / "runs", cache, **{"model.embedded.max_steps": 10,
                                                           "model.embedded.sources": [source]})
    prepared = prepare(cfg, tmp_path / "data")
    trained_from = build_trainer(cfg, prepared, tmp_path / "run").model.get_base_model()
    untrained, _ = load_untrained(cfg, prepared)
    assert torch.equal(untrained.shared.weight, trained_from.shared.weight)
    assert len([p for p in (cache / "embedded").iterdir() if not p.name.startswith(".")]) == 1  # built once
    # the sweep's driver records that base beside the prepared data; the confirmation loads it from there
    assert recorded_base(prepared.out_dir) is None
    record_base(prepared.out_dir, resolve_base(cfg.model, texts=base_corpus(prepared, cfg.model.embedded.sources)))
    recorded, _ = load_untrained(cfg, base_dir=recorded_base(prepared.out_dir))
    assert torch.equal(recorded.shared.weight, trained_from.shared.weight)


def test_a_node_adopts_the_drivers_embedded_base_and_refuses_another(mpd_dir: Path, tmp_path: Path) -> None:
    """A trial on a node other than the sweep driver's prepares its own data and finds or builds its own
    embedded base: adopted when its weights and tokenizer are the driver's, refused (naming both) when not,
    as another CPU's build of the same seed is."""
    from raydetox.data.prepare import prepare
    from raydetox.errors import ModelError
    from raydetox.modeling import adopt_node_base, resolve_base
    from raydetox.pretraining_corpus import (
        base_digest,
        base_texts,
        record_base,
        recorded_base,
        recorded_base_info,
    )
    from tests.tiny import tiny_config

    cfg = tiny_config(mpd_dir, tmp_path / "runs", tmp_path / "cache", **{"model.embedded.max_steps": 10})
    driver = prepare(cfg, tmp_path / "driver-data")
    base = resolve_base(cfg.model, texts=base_texts(cfg, driver))
    record_base(driver.out_dir, base)
    info = recorded_base_info(driver.out_dir)
    assert info == {"path": str(base), "sha256": base_digest(base)} and recorded_base(driver.out_dir) == str(base)

    same = prepare(cfg, tmp_path / "node-data")  # a node that builds the same weights
    adopt_node_base(cfg, same, info)
    assert recorded_base(same.out_dir) == str(base)

    # a driver whose base came out otherwise (here: another seed, so really other weights)
    reseeded = tiny_config(mpd_dir, tmp_path / "runs", tmp_path / "cache2",
                           **{"model.embedded.max_steps": 10, "model.embedded.seed": 1})
    other = resolve_base(reseeded.model, texts=base_texts(reseeded, driver))
    assert base_digest(other) != info["sha256"]
    elsewhere = prepare(cfg, tmp_path / "node2-data")
    with pytest.raises(ModelError, match=rf"{re.escape(str(base))}: this node's embedded base .* not the sweep driver's "
                                         rf"{re.escape(str(other))}"):
        adopt_node_base(cfg, elsewhere, {"path": str(other), "sha256": base_digest(other)})
    assert recorded_base(elsewhere.out_dir) is None  # nothing recorded: the trial stops here
    adopt_node_base(cfg, elsewhere, {"path": str(other)})  # a pointer from before the digest: not checked


def test_a_local_base_dir_never_reads_the_embedded_sources(mpd_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """``model.embedded.sources`` feed only the embedded base's build: a run from a base dir (a Ray worker,
    whose working directory need not hold the sources' relative paths) does not read them."""
    from raydetox.data.prepare import prepare
    from raydetox.experiment import build_trainer, load_untrained
    from raydetox.modeling import resolve_base
    from raydetox.pretraining_corpus import base_corpus
    from tests.tiny import tiny_config

    source = tmp_path / "extra.tsv"
    source.write_text("toxic\tneutral\nyou stupid idiot\tyou\n", encoding="utf-8")
    cfg = tiny_config(mpd_dir, tmp_path / "runs", tmp_path / "cache", **{"model.embedded.max_steps": 10,
                      "model.embedded.sources": [{"source": str(source), "default_lang": "en"}]})
    built_from = prepare(cfg, tmp_path / "data-of-the-base")  # keeps a copy of the sources' rows
    base = resolve_base(cfg.model, texts=base_corpus(built_from, cfg.model.embedded.sources))
    source.unlink()
    prepared = prepare(cfg, tmp_path / "data")
    from_dir = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=base))
    assert build_trainer(from_dir, prepared, tmp_path / "run").model is not None
    assert load_untrained(from_dir, prepared)[0] is not None
