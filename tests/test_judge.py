"""The offline toxicity judge on the real data: no validation/test leakage, caching, quality, config errors."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raydetox.config import ConfigError, JudgeConfig, JudgeSourceConfig, config_from_dict, load_config
from raydetox.data.io import DataError
from raydetox.data.prepare import PreparedData, prepare
from raydetox.judge import DROPPED_FILE, MODEL_FILE, REPORT_JSON, REPORT_MD, TRAINING_FILE, JudgeLeakError
from raydetox.judge import ToxicityJudge, build_judge, read_source, text_hash

REPO = Path(__file__).resolve().parents[1]
LANGS = ["am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, mpd_dir: Path, shared_data: Path) -> PreparedData:
    """The quickstart preparation (split 0.8/0.1/0.1, seed 0) of multilingual ParaDetox."""
    wordlists = [f"{shared_data}/lexicons/ldnoobw_v2/{{lang}}.txt"]
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", {"lexicon.wordlists": wordlists})
    return prepare(cfg, tmp_path_factory.mktemp("prepared"), source=str(mpd_dir))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, prepared: PreparedData) -> tuple[Path, pd.DataFrame]:
    """A labelled TSV holding test/validation texts (verbatim and re-cased/re-punctuated) among new ones."""
    test, val = prepared.test, prepared.validation
    last_neutral = [test[c].tail(5) for c in ("neutral", "lang", "id")]
    rows = [
        *[(t, 1, lang, "test", i) for t, lang, i in zip(test["toxic"][:5], test["lang"], test["id"])],
        *[(t.upper() + " !!", 0, lang, "test", i) for t, lang, i in zip(*last_neutral)],
        *[(t, 1, lang, "validation", i) for t, lang, i in zip(val["toxic"][:3], val["lang"], val["id"])],
        ("a perfectly ordinary sentence about the weather", 0, "en", None, None),
        ("you absolute moron, get lost", 1, "en", None, None),
    ]
    frame = pd.DataFrame(rows, columns=["text", "label", "lang", "split", "held_id"])
    path = tmp_path_factory.mktemp("planted") / "planted.tsv"
    frame[["text", "label", "lang"]].to_csv(path, sep="\t", index=False)
    return path, frame


def _small_config(shared_data: Path, cache_dir: Path, planted: Path | None = None) -> JudgeConfig:
    """Small settings: 120 toxic TextDetox inputs per language + the train split, 1–4-grams, 2**18 features."""
    sources = [
        JudgeSourceConfig(
            path=str(shared_data / "textdetox_inputs" / "textdetox2024_test_inputs.tsv"),
            lang_column="lang",
            toxic_columns=["toxic_sentence"],
            max_rows_per_lang=120,
        )
    ]
    if planted is not None:
        labelled = {"text_column": "text", "label_column": "label", "lang_column": "lang"}
        sources.append(JudgeSourceConfig(path=str(planted), **labelled))
    return JudgeConfig(sources=sources, ngram_range=[1, 4], n_features=2**18, cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def judge(
    tmp_path_factory: pytest.TempPathFactory,
    prepared: PreparedData,
    shared_data: Path,
    planted: tuple[Path, pd.DataFrame],
) -> ToxicityJudge:
    cache = tmp_path_factory.mktemp("judge-cache")
    return build_judge(_small_config(shared_data, cache, planted[0]), prepared)


def _held_out_texts(prepared: PreparedData) -> list[str]:
    frames = (prepared.validation, prepared.test)
    return [t for f in frames for col in ("toxic", "neutral") for t in f[col]] + [
        r for f in frames for refs in f["refs"] for r in refs
    ]


def test_judge_never_sees_validation_or_test(judge: ToxicityJudge, prepared: PreparedData, planted) -> None:
    _, frame = planted
    training = pd.read_parquet(judge.path / TRAINING_FILE)
    held_ids = set(prepared.validation["id"]) | set(prepared.test["id"])
    assert held_ids.isdisjoint(training["id"])
    assert {text_hash(t) for t in _held_out_texts(prepared)}.isdisjoint(training["text_hash"])
    # Every planted held-out text (verbatim or re-cased with extra punctuation) is listed as dropped,
    # with the split and the id it matched; the two new texts are trained on.
    dropped = pd.read_csv(judge.path / DROPPED_FILE)
    from_planted = dropped[dropped["source"].str.endswith("planted.tsv")]
    expected = frame.dropna(subset=["split"])
    assert sorted(from_planted["text"]) == sorted(expected["text"])
    for text, split, held_id in zip(expected["text"], expected["split"], expected["held_id"]):
        row = from_planted[from_planted["text"] == text].iloc[0]
        assert row["reason"] == f"held_out_{split}" and held_id in row["detail"], row.to_dict()
    assert (training["source"].str.endswith("planted.tsv")).sum() == 2
    reasons = {"empty", "held_out_validation", "held_out_test", "conflicting_labels", "duplicate"}
    assert set(dropped["reason"]) <= reasons


def test_leak_assertion_fires_on_a_planted_id(
    tmp_path: Path, prepared: PreparedData, shared_data: Path
) -> None:
    # A test row that reuses a train row's id (a broken split): the text filter cannot see it, the
    # post-fit assertion must, and nothing may be cached.
    train_id = prepared.stages["full"]["id"].iloc[0]
    test = prepared.test.copy()
    test.loc[0, "id"] = train_id
    leaky = dataclasses.replace(prepared, test=test)
    with pytest.raises(JudgeLeakError, match=train_id):
        build_judge(_small_config(shared_data, tmp_path), leaky)
    assert not [p for p in (tmp_path / "judge").iterdir() if (p / MODEL_FILE).exists()]


def test_leak_assertion_fires_on_a_planted_text(judge: ToxicityJudge, prepared: PreparedData) -> None:
    seen = prepared.stages["full"]["toxic"].iloc[0]
    with pytest.raises(JudgeLeakError, match="1 text"):
        judge.assert_unseen(texts=[f"  {seen.upper()} ?!"])
    with pytest.raises(JudgeLeakError, match="1 id"):
        judge.assert_unseen(ids=[prepared.stages["full"]["id"].iloc[0]])
    judge.assert_unseen(ids=prepared.test["id"], texts=_held_out_texts(prepared))  # the real held-out set


def test_holdout_texts_are_excluded(tmp_path: Path, prepared: PreparedData, shared_data: Path) -> None:
    holdout = prepared.stages["full"]["toxic"].iloc[:4].tolist()
    judge = build_judge(_small_config(shared_data, tmp_path), prepared, exclude=holdout)
    judge.assert_unseen(texts=holdout)
    dropped = pd.read_csv(judge.path / DROPPED_FILE)
    assert set(dropped.loc[dropped["reason"] == "held_out_holdout", "text"]) == set(holdout)


def test_cache_hit_then_rebuild_on_config_change(tmp_path: Path, prepared: PreparedData, shared_data: Path) -> None:
    cfg = _small_config(shared_data, tmp_path)
    t0 = time.perf_counter()
    first = build_judge(cfg, prepared)
    fit_seconds = time.perf_counter() - t0
    stamp = (first.path / MODEL_FILE).stat().st_mtime_ns
    t0 = time.perf_counter()
    again = build_judge(cfg, prepared)
    hit_seconds = time.perf_counter() - t0
    assert again.path == first.path and (again.path / MODEL_FILE).stat().st_mtime_ns == stamp
    texts = prepared.test["toxic"].tolist()
    np.testing.assert_array_equal(again.predict_proba(texts), first.predict_proba(texts))
    assert hit_seconds < fit_seconds, (hit_seconds, fit_seconds)

    changed = build_judge(dataclasses.replace(cfg, C=1.0), prepared)
    assert changed.path != first.path and changed.path.parent == first.path.parent
    assert not np.allclose(changed.predict_proba(texts), first.predict_proba(texts))
    fewer = dataclasses.replace(cfg, sources=[dataclasses.replace(cfg.sources[0], max_rows_per_lang=60)])
    assert build_judge(fewer, prepared).path not in (first.path, changed.path)  # other training texts
    assert len([p for p in (tmp_path / "judge").iterdir() if not p.name.startswith(".")]) == 3  # .locks aside


def test_quality_on_the_test_split(judge: ToxicityJudge, prepared: PreparedData) -> None:
    test = prepared.test
    langs = test["lang"].tolist() * 2
    scores = judge.evaluate(test["toxic"].tolist() + test["neutral"].tolist(), [1] * len(test) + [0] * len(test), langs)
    # Measured with these small settings: 0.91 overall, 0.85 (ar) to 0.95 (uk) per language; chance is 0.5.
    assert scores["roc_auc"] > 0.85, scores
    assert all(scores[f"roc_auc/{lang}"] > 0.75 for lang in LANGS), scores
    assert scores["n"] == 2 * len(test)
    report = json.loads((judge.path / REPORT_JSON).read_text())
    assert report["test"]["roc_auc"] == pytest.approx(scores["roc_auc"])
    md = (judge.path / REPORT_MD).read_text()
    assert "Quality on the prepared test split" in md and "| zh " in md


def test_delete_is_not_judged_non_toxic_by_construction(judge: ToxicityJudge) -> None:
    systems = json.loads((judge.path / REPORT_JSON).read_text())["reference_systems"]
    assert systems["delete"]["lexicon"] == 0.0  # the circularity the judge removes
    # Measured with these small settings: copy 0.69, delete 0.51, references 0.35.
    assert systems["delete"]["judge"] > 0.3
    assert systems["copy"]["judge"] > systems["delete"]["judge"] > systems["references"]["judge"]


def test_predict_proba_shape_and_blank_texts(judge: ToxicityJudge) -> None:
    p = judge.predict_proba(["you absolute moron, get lost", "", "   ", "thank you for your help"])
    assert p.shape == (4,) and p.dtype == np.float64
    assert p[1] == p[2] == 0.0 and 0.0 < p[3] < p[0] < 1.0
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        judge.predict_proba(["fine", None])  # type: ignore[list-item]


def test_untrusted_model_file_is_refused(judge: ToxicityJudge, tmp_path: Path) -> None:
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    sio.dump(FunctionTransformer(os.system), tmp_path / MODEL_FILE)
    (tmp_path / TRAINING_FILE).write_bytes((judge.path / TRAINING_FILE).read_bytes())
    with pytest.raises(ValueError, match="outside raydetox.judge.TRUSTED_TYPES"):
        ToxicityJudge.load(tmp_path)


def test_quickstart_judge_sources_read(shared_data: Path) -> None:
    cfg = load_config(REPO / "experiments" / "quickstart.yaml").metrics.judge
    assert [Path(s.path).name for s in cfg.sources] == ["paradetox.tsv", "en_data.tsv", "textdetox2024_test_inputs.tsv"]
    for i, spec in enumerate(cfg.sources):
        rows = read_source(dataclasses.replace(spec, max_rows_per_lang=50), i, REPO)
        assert set(rows["label"]) == ({1} if i == 2 else {0, 1}), spec.path
    assert sorted(set(rows["lang"])) == LANGS  # the TextDetox inputs cover all 9 languages


@pytest.mark.parametrize(
    "judge_cfg, key, words",
    [
        ({"bogus": 1}, "metrics.judge.bogus", "unknown key"),
        ({"C": 0}, "metrics.judge.C", "greater than 0"),
        ({"ngram_range": [4, 2]}, "metrics.judge.ngram_range", "min_n <= max_n"),
        ({"ngram_range": [0, 2]}, "metrics.judge.ngram_range.0", "greater than or equal to 1"),
        ({"n_features": 0}, "metrics.judge.n_features", "greater than or equal to 1"),
        ({"sources": [], "use_train_split": False}, "metrics.judge.sources", "no training data"),
        ({"sources": [{"path": "x.tsv", "lang": "en"}]}, "metrics.judge.sources.0.toxic_columns", "or text_column"),
        ({"sources": [{"path": "x.tsv", "toxic_columns": ["t"]}]}, "metrics.judge.sources.0.lang", "lang_column"),
        ({"sources": [{"path": "x.tsv", "lang": "english", "toxic_columns": ["t"]}]},
         "metrics.judge.sources.0.lang", "not a language code"),
        ({"sources": [{"path": "x.tsv", "lang": "en", "text_column": "t"}]},
         "metrics.judge.sources.0.label_column", "go together"),
        ({"sources": [{"path": "x.tsv", "lang": "en", "toxic_columns": ["t"], "max_rows_per_lang": 0}]},
         "metrics.judge.sources.0.max_rows_per_lang", "greater than or equal to 1"),
        ({"sources": [{"path": "x.tsv", "lang": "en", "toxic_columns": ["t"], "colour": 1}]},
         "metrics.judge.sources.0.colour", "unknown key"),
    ],
)
def test_bad_judge_config_names_the_key(judge_cfg: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"metrics": {"judge": judge_cfg}}, origin="exp.yaml")
    msg = str(info.value)
    assert f"'{key}'" in msg and words in msg and "exp.yaml" in msg, msg


def test_bad_source_file_names_key_file_and_row(tmp_path: Path, shared_data: Path) -> None:
    paradetox = shared_data / "paradetox" / "paradetox.tsv"
    spec = JudgeSourceConfig(path=str(paradetox), lang="en", toxic_columns=["toxic_sentence"])
    missing_column = r"'metrics\.judge\.sources\.3\.toxic_columns'.*toxic_sentence.*paradetox\.tsv"
    with pytest.raises(ConfigError, match=missing_column):
        read_source(spec, 3, tmp_path)
    with pytest.raises(ConfigError, match=r"'metrics\.judge\.sources\.0\.path'.*nope\.tsv"):
        read_source(dataclasses.replace(spec, path="nope.tsv"), 0, tmp_path)
    bad = tmp_path / "labels.csv"
    bad.write_text("text,label\nhello,0\nyou idiot,maybe\n")
    spec = JudgeSourceConfig(path=bad.name, lang="en", text_column="text", label_column="label")
    with pytest.raises(DataError, match=r"'metrics\.judge\.sources\.1'.*labels\.csv: row 2, column 'label'.*'maybe'"):
        read_source(spec, 1, tmp_path)
