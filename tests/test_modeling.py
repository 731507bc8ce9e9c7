"""Embedded base (raydetox.embedded_base: tokenizer, cache, build report), base loading, LoRA wrapping, save/load round trips.

One tiny build (20 steps, d_model 32) on ~300 real multilingual sentences serves every test: the build
is plumbing only here; its copy fidelity is measured by the full build (see the module docstring).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration, T5Tokenizer

from raydetox.config import EmbeddedBaseConfig, LoraConfig, ModelConfig
from raydetox.embedded_base import (
    BUILD_REPORT,
    EOS_ID,
    PAD_ID,
    _batches,
    _init_previous_token_head,
    _length_cap,
    _t5_config,
    build_embedded_base,
    corpus_texts,
    embedded_cache_path,
    find_cached_base,
)
from raydetox.errors import ModelError
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


def test_copy_batches_follow_the_length_curriculum(built, texts) -> None:
    tok = AutoTokenizer.from_pretrained(built[0])
    seqs = [ids[:-1] for ids in tok(texts)["input_ids"]]
    cfg = EmbeddedBaseConfig(max_length=48, curriculum_length=12, curriculum_fraction=0.5, concat_prob=0.5)
    assert [_length_cap(p, cfg) for p in (0.0, 0.49, 0.5, 0.99)] == [12, 12, 48, 48]
    progress = [0.0]
    batches = _batches(seqs, 16, lambda: _length_cap(progress[0], cfg), cfg.concat_prob, random.Random(0))
    known = {tuple(s) for s in seqs}
    for phase, cap in ((0.0, 12), (0.7, 48)):
        progress[0] = phase
        for _ in range(8):  # a full pool drawn at the previous cap is used up first
            next(batches)
        widths, whole = [], 0
        for _ in range(16):
            ids, mask = next(batches)
            assert ids.shape[0] == 16 and torch.equal(mask, ids != PAD_ID)
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
    # load_base without texts reuses the cached build of this config
    model, tok = load_base(ModelConfig(cache_dir=str(cache), embedded=TINY))
    assert model.config.d_model == TINY.d_model and len(tok) == TINY.vocab_size
    assert not [p for p in (cache / "embedded").iterdir() if p.name.startswith(".tmp")]


def test_cache_key_depends_on_config_and_texts(texts, tmp_path) -> None:
    key = embedded_cache_path(texts, TINY, tmp_path)
    assert embedded_cache_path(list(reversed(texts)), TINY, tmp_path) == key
    assert embedded_cache_path(texts[1:], TINY, tmp_path) != key
    assert embedded_cache_path(texts + ["another sentence"], TINY, tmp_path) != key
    other = EmbeddedBaseConfig(**{**TINY.__dict__, "seed": 1})
    assert embedded_cache_path(texts, other, tmp_path) != key
    assert embedded_cache_path(texts, TINY, tmp_path, eval_texts=texts[:5]) != key


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
        }
    )
    assert corpus_texts(pairs) == ["a b", "a", "a x", "c d", "c"]
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
