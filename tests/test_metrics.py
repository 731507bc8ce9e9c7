"""Metrics on real multilingual ParaDetox / ParaDetox rows, checked against hand counts and sacrebleu/bert_score."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sacrebleu
import torch

from raydetox.config import MetricsConfig
from raydetox.data.lexicon import Lexicon, read_wordlist
from raydetox.metrics import (
    METRICS,
    Scorer,
    add_perplexity,
    default_bertscore_model,
    get_scorer,
    get_toxicity_classifier,
    load_counts,
    perplexity,
    reference_systems,
)

torch.set_num_threads(1)

TERMS = {
    "en": ["ass", "idiots", "scum", "jackass", "crap", "shit", "tits", "fuckin", "jerk"],
    "de": ["Arsch", "Dummgelaber", "geisteskrank"],
    "zh": ["狗"],
}
OTHER_LANGS = ("am", "ar", "es", "hi", "ru", "uk")


def _read_lang(mpd_dir: Path, lang: str, n: int) -> pd.DataFrame:
    frame = pd.read_parquet(mpd_dir / f"{lang}-00000-of-00001.parquet").head(n)
    return frame.assign(lang=lang)


@pytest.fixture(scope="module")
def mpd(mpd_dir: Path) -> pd.DataFrame:
    """The first 6 pairs of each of the 9 languages."""
    langs = ["am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh"]
    return pd.concat([_read_lang(mpd_dir, lang, 6) for lang in langs], ignore_index=True)


@pytest.fixture(scope="module")
def lexicon(shared_data: Path) -> Lexicon:
    """Hand-picked terms for en/de/zh (hand counts below rely on them), LDNOOBW lists for the rest."""
    wordlists = {lang: read_wordlist(shared_data / "lexicons" / "ldnoobw_v2" / f"{lang}.txt") for lang in OTHER_LANGS}
    return Lexicon.from_terms({**TERMS, **wordlists})


@pytest.fixture(scope="module")
def scorer(lexicon: Lexicon) -> Scorer:
    return get_scorer(MetricsConfig(), lexicon)


def _refs(frame: pd.DataFrame) -> list[list[str]]:
    return [[r] for r in frame["neutral_sentence"]]


def test_default_backbone_is_the_installed_minilm():
    model_dir, layers = default_bertscore_model()
    assert Path(model_dir, "model.safetensors").is_file() and layers == 6


def test_copy_system_has_copy_rate_one(mpd, scorer, lexicon):
    systems = reference_systems(mpd["toxic_sentence"], _refs(mpd), mpd["lang"], lexicon)
    assert systems["copy"] == mpd["toxic_sentence"].tolist()
    m = scorer.score(mpd["toxic_sentence"], systems["copy"], _refs(mpd), mpd["lang"])
    assert m["copy_rate"] == 1.0 and m["copy_rate_loose"] == 1.0
    assert all(m[f"copy_rate/{lang}"] == 1.0 for lang in mpd["lang"].unique())
    assert m["bertscore_src_f1"] == pytest.approx(1.0, abs=1e-5)
    # the delete system really rewrites the rows that have a lexicon hit
    d = scorer.score(mpd["toxic_sentence"], systems["delete"], _refs(mpd), mpd["lang"])
    hits = [lexicon.is_toxic(s, lang) for s, lang in zip(mpd["toxic_sentence"], mpd["lang"])]
    assert d["copy_rate"] == pytest.approx(1 - np.mean(hits)) and d["toxicity"] == 0.0
    assert m["toxicity"] == pytest.approx(np.mean(hits)) and 0 < m["toxicity"] < 1


def test_hand_made_four_sentences(mpd_dir, scorer):
    en = _read_lang(mpd_dir, "en", 4)
    src, ref = en["toxic_sentence"].tolist(), en["neutral_sentence"].tolist()
    # row 0 ("...big phony tits...") copies; row 1 is the reference; row 2 ("you ass.") copies up to
    # case and punctuation; row 3 is the reference with extra whitespace.
    outputs = [src[0], ref[1], src[2].upper().replace(".", " !"), "  " + ref[3].replace(" ", "\t ") + " "]
    frame = scorer.sentence_scores(src, outputs, [[r] for r in ref], en["lang"])
    assert frame["copy"].tolist() == [1, 0, 0, 0]
    assert frame["copy_loose"].tolist() == [1, 0, 1, 0]
    assert frame["exact"].tolist() == [0, 1, 0, 1]
    assert frame["toxicity"].tolist() == [1, 0, 1, 0]  # "tits" and "ASS" are lexicon terms
    m = scorer.score(src, outputs, [[r] for r in ref], en["lang"], prefix="eval_")
    assert (m["eval_copy_rate"], m["eval_copy_rate_loose"], m["eval_exact_match"]) == (0.25, 0.5, 0.5)
    assert (m["eval_toxicity"], m["eval_n"], m["eval_n/en"]) == (0.5, 4.0, 4.0)
    assert frame.loc[1, "chrf"] == 100.0 and frame.loc[1, "bertscore_f1"] == pytest.approx(1.0, abs=1e-5)


def test_bleu_chrf_equal_sacrebleu(mpd, scorer):
    outputs = [n if i % 3 else t for i, (t, n) in enumerate(zip(mpd["toxic_sentence"], mpd["neutral_sentence"]))]
    outputs = [o.replace(" ", "  ", 1) if i % 2 else o[: len(o) // 2] for i, o in enumerate(outputs)]
    m = scorer.score(mpd["toxic_sentence"], outputs, _refs(mpd), mpd["lang"])
    frame = scorer.sentence_scores(mpd["toxic_sentence"], outputs, _refs(mpd), mpd["lang"])
    for lang in mpd["lang"].unique():
        rows = (mpd["lang"] == lang).to_numpy()
        hyps, refs = [o for o, r in zip(outputs, rows) if r], mpd.loc[rows, "neutral_sentence"].tolist()
        tokenize = "zh" if lang == "zh" else "13a"
        assert m[f"bleu/{lang}"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score)
        assert m[f"chrf/{lang}"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [mpd["neutral_sentence"].tolist()]).score)
    sentence = [sacrebleu.sentence_chrf(o, [r]).score for o, r in zip(outputs, mpd["neutral_sentence"])]
    np.testing.assert_allclose(frame["chrf"], sentence)


@pytest.fixture(scope="module")
def paradetox(shared_data: Path) -> pd.DataFrame:
    """English ParaDetox rows with 1–3 references each (missing ones are NaN)."""
    frame = pd.read_csv(shared_data / "paradetox" / "paradetox.tsv", sep="\t", nrows=30)
    n_refs = frame[["neutral1", "neutral2", "neutral3"]].notna().sum(axis=1)
    assert set(n_refs) >= {1, 2, 3}, "sample must mix reference counts"
    return frame


def _multi_refs(frame: pd.DataFrame) -> list[list[str]]:
    columns = frame[["neutral1", "neutral2", "neutral3"]]
    return [[r for r in row if isinstance(r, str)] for row in columns.itertuples(index=False)]


def test_multi_reference_bleu_chrf_and_exact_match(paradetox, scorer):
    refs = _multi_refs(paradetox)
    # the last reference, re-spaced, for rows with several references; the toxic input otherwise
    outputs = [" ".join(r[-1].split()) + " " if len(r) > 1 else t for t, r in zip(paradetox["toxic"], refs)]
    langs = ["en"] * len(paradetox)
    m = scorer.score(paradetox["toxic"], outputs, refs, langs)
    # sacrebleu's own reading: one stream per reference position, None where a row has fewer refs
    streams = [[r if isinstance(r, str) else None for r in paradetox[c]] for c in ("neutral1", "neutral2", "neutral3")]
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, streams).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, streams).score)
    expected_exact = [
        len(r) > 1 or " ".join(t.split()) in {" ".join(x.split()) for x in r} for t, r in zip(paradetox["toxic"], refs)
    ]
    assert m["exact_match"] == pytest.approx(np.mean(expected_exact)) and 0 < m["exact_match"] < 1
    frame = scorer.sentence_scores(paradetox["toxic"], outputs, refs, langs)
    # BERTScore against several references is the best one, as bert_score's list-of-lists scoring
    _, _, f = scorer.bertscorer.score(outputs, refs)
    np.testing.assert_allclose(frame["bertscore_f1"], f.numpy(), atol=1e-5)


def test_j_from_per_sentence_parts(mpd_dir, scorer, lexicon):
    en = _read_lang(mpd_dir, "en", 6).iloc[[2, 5]]
    src, ref = en["toxic_sentence"].tolist(), en["neutral_sentence"].tolist()
    outputs = [src[0], ref[1]]  # a toxic copy (STA 0) and the reference itself (chrF 100)
    frame = scorer.sentence_scores(src, outputs, [[r] for r in ref], en["lang"])
    _, _, sim = scorer.bertscorer.score(outputs, src)  # bert_score's own pipeline, vs the input
    sim = sim.clamp(0, 1).double().numpy()
    assert frame["sta"].tolist() == [0.0, 1.0] and frame["chrf"].tolist()[1] == 100.0
    np.testing.assert_allclose(frame["sim"], sim, atol=1e-5)
    np.testing.assert_allclose(frame["j"], [0.0, sim[1]], atol=1e-5)
    m = scorer.score(src, outputs, [[r] for r in ref], en["lang"])
    assert m["j"] == pytest.approx(sim[1] / 2, abs=1e-5) and m["j/en"] == m["j"]


def test_bertscore_identical_high_unrelated_low(mpd_dir, scorer):
    en, de = _read_lang(mpd_dir, "en", 3), _read_lang(mpd_dir, "de", 3)
    sources = en["neutral_sentence"].tolist()
    outputs = sources[:1] + de["neutral_sentence"].tolist()[:1] + [""]
    frame = scorer.sentence_scores(sources[:3], outputs, [[s] for s in sources], ["en"] * 3)
    assert frame["bertscore_f1"][0] == pytest.approx(1.0, abs=1e-5)
    assert frame["bertscore_f1"][1] < 0.9 and frame["bertscore_f1"][2] == 0.0  # empty output scores 0
    assert frame["j"][2] == 0.0


def test_per_language_keys_and_weighted_overall(mpd, scorer):
    sub = pd.concat([mpd[mpd["lang"] == "en"].head(2), mpd[mpd["lang"] == "ru"], mpd[mpd["lang"] == "zh"].head(3)])
    outputs = [t if i % 2 else n for i, (t, n) in enumerate(zip(sub["toxic_sentence"], sub["neutral_sentence"]))]
    m = scorer.score(sub["toxic_sentence"], outputs, _refs(sub), sub["lang"], prefix="test_")
    langs = ["en", "ru", "zh"]
    assert set(m) == {f"test_{k}" for k in METRICS} | {f"test_{k}/{lang}" for k in METRICS for lang in langs}
    n = {lang: m[f"test_n/{lang}"] for lang in langs}
    assert n == {"en": 2.0, "ru": 6.0, "zh": 3.0}
    weighted = sum(n[lang] * m[f"test_copy_rate/{lang}"] for lang in langs) / sum(n.values())
    assert m["test_copy_rate"] == pytest.approx(weighted)
    assert 0 < m["test_copy_rate"] < 1


def test_degeneration_columns_and_keys(mpd, scorer):
    """Loops, length ratio and distinct-n, per sentence and per language, on all 9 languages."""
    refs = mpd["neutral_sentence"].tolist()
    outputs = list(refs)
    ru, zh = np.flatnonzero(mpd["lang"] == "ru"), np.flatnonzero(mpd["lang"] == "zh")
    outputs[ru[0]] = refs[ru[0]] + " чтобы её расплавить к хthingт чтобы её расплавить к хthingт чтобы"
    outputs[zh[1]] = "哈" * 12
    outputs[zh[2]] = refs[zh[2]][:3]
    frame = scorer.sentence_scores(mpd["toxic_sentence"], outputs, _refs(mpd), mpd["lang"])
    assert frame["degenerate"].tolist() == [float(i in (ru[0], zh[1])) for i in range(len(mpd))]
    by_hand = [len(" ".join(o.split())) / len(" ".join(s.split())) for o, s in zip(outputs, mpd["toxic_sentence"])]
    np.testing.assert_allclose(frame["length_ratio"], by_hand)
    m = scorer.score(mpd["toxic_sentence"], outputs, _refs(mpd), mpd["lang"], prefix="test_")
    assert m["test_degenerate_rate"] == pytest.approx(2 / 54)
    assert m["test_degenerate_rate/ru"] == pytest.approx(1 / 6) and m["test_degenerate_rate/zh"] == pytest.approx(1 / 6)
    assert all(m[f"test_degenerate_rate/{lang}"] == 0.0 for lang in OTHER_LANGS if lang != "ru")
    assert m["test_length_ratio/zh"] == pytest.approx(np.mean([by_hand[i] for i in zh]))
    for lang in mpd["lang"].unique():
        assert {f"test_{k}/{lang}" for k in ("distinct_1", "distinct_2", "length_ratio")} <= set(m)
        assert 0 < m[f"test_distinct_1/{lang}"] <= m[f"test_distinct_2/{lang}"] <= 1
    # the looping rows repeat n-grams, so the outputs are less diverse than the references alone
    plain = scorer.score(mpd["toxic_sentence"], refs, _refs(mpd), mpd["lang"])
    assert m["test_distinct_2/ru"] < plain["distinct_2/ru"] and m["test_distinct_1/zh"] < plain["distinct_1/zh"]
    assert plain["degenerate_rate"] == 0.0


def test_reference_free_scores_need_no_reference(mpd, scorer):
    """Rows without references: the input-side columns equal those of a full scoring, the rest is NaN."""
    outputs = [n if i % 3 else t for i, (t, n) in enumerate(zip(mpd["toxic_sentence"], mpd["neutral_sentence"]))]
    free = scorer.reference_free_scores(mpd["toxic_sentence"], outputs, mpd["lang"])
    full = scorer.sentence_scores(mpd["toxic_sentence"], outputs, _refs(mpd), mpd["lang"])
    assert list(free.columns) == list(full.columns)
    for col in ("copy", "copy_loose", "bertscore_src_f1", "sim", "toxicity", "sta", "degenerate", "length_ratio"):
        np.testing.assert_allclose(free[col], full[col], atol=1e-6, err_msg=col)
    assert free[["exact", "chrf", "bertscore_f1", "j"]].isna().all().all()
    assert 0 < free["copy"].mean() < 1 and 0 < free["sta"].mean() <= 1
    with pytest.raises(ValueError, match="differ in length"):
        scorer.reference_free_scores(mpd["toxic_sentence"], outputs[:-1], mpd["lang"])

def test_distinct_n_by_hand_in_score(mpd_dir, scorer):
    en = _read_lang(mpd_dir, "en", 2)
    outputs = ["a b a", "b c"]  # unigrams a b a b c: 3 of 5 distinct; bigrams ab ba bc: all distinct
    m = scorer.score(en["toxic_sentence"], outputs, _refs(en), en["lang"])
    assert m["distinct_1"] == pytest.approx(3 / 5) and m["distinct_1/en"] == pytest.approx(3 / 5)
    assert m["distinct_2"] == 1.0 and m["degenerate_rate"] == 0.0
    copy = scorer.score(en["toxic_sentence"], en["toxic_sentence"], _refs(en), en["lang"])
    assert copy["length_ratio"] == 1.0


def test_scorer_and_bertscorer_loaded_once(lexicon, scorer):
    loads = load_counts()["bertscore"]
    assert get_scorer(MetricsConfig(), lexicon) is scorer
    other = Scorer(MetricsConfig(bertscore_batch_size=8), None)
    assert other.bertscorer is scorer.bertscorer and load_counts()["bertscore"] == loads


def test_delete_system_removes_lexicon_term(mpd_dir, lexicon):
    en = _read_lang(mpd_dir, "en", 3)
    src = en["toxic_sentence"].tolist()[2]  # "You made a mistake you ass."
    assert lexicon.find(src, "en")
    deleted = reference_systems([src], [["You made a mistake."]], ["en"], lexicon)["delete"][0]
    assert not lexicon.find(deleted, "en") and not lexicon.is_toxic(deleted, "en")
    assert "mistake" in deleted


def test_bad_input_names_the_row(scorer):
    with pytest.raises(ValueError, match="differ in length"):
        scorer.score(["a", "b"], ["a"], [["a"], ["b"]], ["en", "en"])
    with pytest.raises(TypeError, match=r"refs\[1\]"):
        scorer.score(["a", "b"], ["a", "b"], [["a"], "b"], ["en", "en"])
    with pytest.raises(ValueError, match=r"refs\[0\] has no non-empty"):
        scorer.score(["a"], ["a"], [["", None]], ["en"])
    with pytest.raises(TypeError, match=r"outputs\[0\]"):
        scorer.score(["a"], [None], [["a"]], ["en"])


def test_toxicity_without_lexicon_is_nan(scorer):
    plain = Scorer(MetricsConfig())
    m = plain.score(["you idiot"], ["you fool"], [["you fool"]], ["en"])
    assert math.isnan(m["toxicity"]) and math.isnan(m["j"]) and m["exact_match"] == 1.0


def test_perplexity():
    assert perplexity(1.49) == pytest.approx(4.437, abs=1e-3)
    assert perplexity(0.0) == 1.0 and perplexity(1e6) == math.inf
    out = add_perplexity({"eval_loss": math.log(4.4)})
    assert out["eval_perplexity"] == pytest.approx(4.4)
    with pytest.raises(KeyError, match="eval_loss"):
        add_perplexity({"loss": 1.0})


def test_classifier_toxicity_path(tmp_path, mpd_dir):
    """A real (tiny, randomly initialised) sequence classifier saved locally drives STA."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    model_dir, _ = default_bertscore_model()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.vocab_size == 30522
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=2, id2label={0: "toxic", 1: "neutral"}, label2id={"toxic": 0, "neutral": 1},
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    en = _read_lang(mpd_dir, "en", 3)
    src = en["toxic_sentence"].tolist()
    before = load_counts()["classifier"]
    scorer = Scorer(MetricsConfig(toxicity_classifier=str(tmp_path)))
    assert get_toxicity_classifier(str(tmp_path)) is scorer.classifier
    assert load_counts()["classifier"] == before + 1 and scorer.classifier.toxic_index == 0
    frame = scorer.sentence_scores(src, src, [[r] for r in en["neutral_sentence"]], en["lang"])
    model = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = [torch.softmax(model(**tokenizer(s, return_tensors="pt")).logits, -1)[0, 0].item() for s in src]
    np.testing.assert_allclose(frame["judge_toxicity"], expected, atol=1e-5)
    np.testing.assert_allclose(frame["sta"], 1 - np.array(expected), atol=1e-5)
    assert frame["toxicity"].isna().all()  # the lexicon column stays the lexicon's (none given here)


def test_a_model_that_cannot_load_is_one_line_naming_its_key(tmp_path: Path) -> None:
    """A hub id offline (or no such model) and an empty folder: a ModelError naming the config key."""
    from raydetox.errors import ModelError
    from raydetox.metrics import ToxicityClassifier, get_bertscorer

    with pytest.raises(ModelError, match=r"metrics.bertscore_model 'nobody-here/no-such-model': cannot load it "
                                         r"\(not a local folder"):
        get_bertscorer("nobody-here/no-such-model", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"metrics.toxicity_classifier '.*empty': cannot load it \(a local folder\)"):
        ToxicityClassifier(str(tmp_path / "empty"))
