"""Cleaning: every row accounted for, each rule fires on its hand-made row, switches work, real data."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raydetox.config import CleaningConfig, LexiconConfig
from raydetox.data.clean import REASONS, clean_pairs, token_overlap, tokenize
from raydetox.data.lexicon import Lexicon

LANGS = ("am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh")
DROPPED_COLUMNS = ["id", "lang", "split", "reason", "toxic", "neutral", "detail"]


@pytest.fixture(scope="module")
def learned_lexicon(mpd_pairs: pd.DataFrame) -> Lexicon:
    """What prepare builds by default: terms the references remove, learned from the pairs."""
    return Lexicon.learn(mpd_pairs, LexiconConfig())


HAND_LEXICON = Lexicon.from_terms({"en": ["idiot", "fucking", "stupid", "moron"], "de": ["idiot"]})

DUP_OF_TRAIN = "same (lang, toxic, neutral) as id dup-train"
# (id, split, toxic, neutral, expected reason or "kept", expected detail prefix)
HAND_ROWS = [
    ("empty-t", "train", "", "a calm sentence", "empty_toxic", "toxic text is empty"),
    ("none-t", "train", None, "a calm sentence", "empty_toxic", "toxic text is empty"),
    ("empty-n", "train", "you stupid man", "   ", "empty_neutral", "neutral text is empty"),
    ("dup-test", "test", "you moron, go away", "please go away", "duplicate", DUP_OF_TRAIN),
    ("dup-train", "train", "you moron, go away", "please go away", "kept", None),
    ("dup-val", "validation", "you moron, go away", "please go away", "duplicate", DUP_OF_TRAIN),
    ("ident", "train", "You are an IDIOT", "  you  are an   idiot ", "identical", "neutral == toxic"),
    ("calm", "train", "The weather is nice today in the city.", "The weather is nice today in the city!",
     "already_neutral", "no lexicon term in toxic; token overlap 1.00 >= 0.97"),
    ("still", "train", "you are a fucking idiot", "you are an idiot",
     "still_toxic", "neutral keeps lexicon term(s): idiot"),
    ("chrf", "train", "shut up you stupid moron", "Kindly reconsider.", "noisy", "chrF "),
    ("long", "train", "you are wrong idiot",
     "you are wrong, and I think you should read the article again before you reply to anyone here",
     "noisy", "length ratio "),
    ("good", "train", "you are a stupid person", "you are a person", "kept", None),
]


def hand_table() -> pd.DataFrame:
    ids, splits, toxic, neutral, _, _ = zip(*HAND_ROWS)
    return pd.DataFrame(
        {"id": ids, "lang": "en", "toxic": toxic, "neutral": neutral,
         "refs": [[n] for n in neutral], "split": splits}
    )


def reasons_by_id(result) -> dict[str, str]:
    out = {row_id: "kept" for row_id in result.kept["id"]}
    out.update(dict(zip(result.dropped["id"], result.dropped["reason"])))
    return out


def assert_partition(pairs: pd.DataFrame, result) -> None:
    assert len(result.kept) + len(result.dropped) == len(pairs)
    kept, dropped = set(result.kept["id"]), set(result.dropped["id"])
    assert not kept & dropped
    assert kept | dropped == set(pairs["id"])
    assert set(result.dropped["reason"]) <= set(REASONS)


def test_tokenize_and_overlap() -> None:
    assert tokenize("You CAN'T stop-me, 42x!") == ["you", "can", "t", "stop", "me", "42x"]
    assert tokenize("谁是狗,不得house") == ["谁", "是", "狗", "不", "得", "house"]
    # Devanagari vowel signs are combining marks: they stay inside the word.
    assert tokenize("गांड पे हाथ") == ["गांड", "पे", "हाथ"]
    assert token_overlap(["a", "b", "b"], ["b", "a"]) == pytest.approx(2 / 3)
    assert token_overlap([], []) == 1.0
    assert token_overlap(["a"], []) == 0.0


def test_each_reason_on_hand_made_rows() -> None:
    table = hand_table()
    result = clean_pairs(table, CleaningConfig(), HAND_LEXICON)
    assert_partition(table, result)
    got = reasons_by_id(result)
    assert got == {row[0]: row[4] for row in HAND_ROWS}
    details = dict(zip(result.dropped["id"], result.dropped["detail"]))
    for row_id, _, _, _, reason, prefix in HAND_ROWS:
        if reason != "kept":
            assert details[row_id].startswith(prefix), (row_id, details[row_id])
    assert list(result.dropped.columns) == DROPPED_COLUMNS
    # The duplicate kept is the train copy, even though the test copy comes first in the table.
    assert result.kept.loc[result.kept["id"] == "dup-train", "split"].item() == "train"
    assert list(result.kept.columns) == list(table.columns)


def test_detail_reports_measured_value() -> None:
    table = hand_table()
    result = clean_pairs(table, CleaningConfig(), HAND_LEXICON)
    detail = result.dropped.set_index("id")["detail"]
    chrf_value = float(detail["chrf"].split()[1])
    assert 0 <= chrf_value < 10
    ratio = float(detail["long"].split()[2])
    expected = len(HAND_ROWS[10][3]) / len(HAND_ROWS[10][2])
    assert ratio == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize(
    ("switch", "reason"),
    [
        ("drop_duplicates", "duplicate"),
        ("drop_identical", "identical"),
        ("drop_already_neutral", "already_neutral"),
        ("drop_still_toxic", "still_toxic"),
        ("drop_noisy", "noisy"),
    ],
)
def test_each_switch_turns_its_rule_off(switch: str, reason: str) -> None:
    table = hand_table()
    on = clean_pairs(table, CleaningConfig(), HAND_LEXICON)
    off = clean_pairs(table, CleaningConfig(**{switch: False}), HAND_LEXICON)
    assert reason in set(on.dropped["reason"])
    assert reason not in set(off.dropped["reason"])
    assert_partition(table, off)
    # Every other rule still drops what it dropped before.
    before = on.dropped[on.dropped["reason"] != reason].set_index("id")["reason"]
    after = off.dropped.set_index("id")["reason"]
    assert after.reindex(before.index).equals(before)


def test_thresholds_are_used() -> None:
    table = hand_table()
    strict = clean_pairs(table, CleaningConfig(min_token_overlap=0.9), HAND_LEXICON)
    detail = strict.dropped.set_index("id")["detail"]
    assert detail["good"].startswith("token overlap 0.80 < 0.9")
    lenient = clean_pairs(table, CleaningConfig(min_chrf=0.0, max_length_ratio=10.0), HAND_LEXICON)
    assert {"chrf", "long"} <= set(lenient.kept["id"])


def test_without_lexicon_the_lexicon_rules_are_skipped_with_a_warning() -> None:
    table = hand_table()
    with pytest.warns(UserWarning, match="no lexicon"):
        result = clean_pairs(table, CleaningConfig())
    got = reasons_by_id(result)
    assert got["calm"] == "kept" and got["still"] == "kept"
    assert_partition(table, result)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about when both rules are off
        clean_pairs(table, CleaningConfig(drop_already_neutral=False, drop_still_toxic=False))


def test_sides_of_only_invisible_characters_are_empty(mpd_pairs: pd.DataFrame) -> None:
    rows = mpd_pairs[mpd_pairs["lang"] == "en"].head(6).reset_index(drop=True)
    blank = {  # zero-width space, BOM, word joiner, ZWJ, soft hyphen (all Unicode Cf) amid whitespace
        0: ("toxic", "\u200b"), 1: ("toxic", " \u200b\ufeff\n"),
        2: ("neutral", "\u2060\u200d"), 3: ("neutral", "\u00ad "),
    }
    for i, (side, text) in blank.items():
        rows.loc[i, side] = text
    rows.loc[4, "toxic"] = "\u200b" + rows.loc[4, "toxic"]  # visible text beside one: not empty
    result = clean_pairs(rows, CleaningConfig(), HAND_LEXICON)
    assert_partition(rows, result)
    got = reasons_by_id(result)
    ids = rows["id"].tolist()
    assert [got[ids[i]] for i in range(4)] == ["empty_toxic", "empty_toxic", "empty_neutral", "empty_neutral"]
    assert not got[ids[4]].startswith("empty")
    detail = result.dropped.set_index("id")["detail"]
    assert detail[ids[0]] == "toxic text is empty" and detail[ids[2]] == "neutral text is empty"


def test_rows_of_a_language_the_lexicon_lacks_are_matched_against_no_terms(mpd_pairs: pd.DataFrame) -> None:
    table = mpd_pairs[mpd_pairs["lang"].isin(["en", "de", "uk"])].groupby("lang").head(30).reset_index(drop=True)
    lexicon = Lexicon.learn(table[table["lang"] == "en"], LexiconConfig())
    with pytest.warns(UserWarning) as caught:
        result = clean_pairs(table, CleaningConfig(), lexicon)
    assert [str(w.message) for w in caught] == [
        "the lexicon has no terms for language(s) de (30 rows), uk (30 rows) of the pairs (it has ['en']): "
        "their texts are matched against no terms (nothing found, nothing deleted)"
    ]
    assert_partition(table, result)
    other = result.dropped[result.dropped["lang"] != "en"]
    assert "still_toxic" not in set(other["reason"])  # no term, so none kept by a rewrite
    assert (result.counts.loc[["de", "uk"], "kept"] > 0).all()


def test_bad_tables_raise_naming_the_problem() -> None:
    table = hand_table()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['neutral'\]"):
        clean_pairs(table.drop(columns="neutral"), CleaningConfig(), HAND_LEXICON)
    with pytest.raises(ValueError, match="repeated ids: \\['good'\\]"):
        clean_pairs(pd.concat([table, table.tail(1)]), CleaningConfig(), HAND_LEXICON)
    bad_split = table.assign(split=table["split"].replace({"test": "holdout"}))
    with pytest.raises(ValueError, match="row id 'dup-test', column 'split': 'holdout'"):
        clean_pairs(bad_split, CleaningConfig(), HAND_LEXICON)
    bad_text = table.astype({"toxic": object})
    bad_text.loc[11, "toxic"] = 3.5
    with pytest.raises(ValueError, match="row id 'good', column 'toxic'"):
        clean_pairs(bad_text, CleaningConfig(), HAND_LEXICON)


def test_real_multilingual_accounting(
    mpd_pairs: pd.DataFrame, learned_lexicon: Lexicon, tmp_path: Path
) -> None:
    result = clean_pairs(mpd_pairs, CleaningConfig(), learned_lexicon)
    assert_partition(mpd_pairs, result)
    assert len(result.kept) + len(result.dropped) == 3600
    counts = result.counts
    assert list(counts.index) == list(LANGS)
    assert list(counts.columns) == [*REASONS, "kept", "total"]
    assert (counts["total"] == 400).all()
    assert (counts[[*REASONS, "kept"]].sum(axis=1) == counts["total"]).all()
    per_reason = result.dropped["reason"].value_counts().reindex(list(REASONS), fill_value=0)
    assert (counts[list(REASONS)].sum() == per_reason).all()
    assert (counts["kept"] == result.kept.groupby("lang").size()).all()
    # The real data has identical pairs (en, uk) and heavy rewrites (am); both must show up.
    assert counts.loc["uk", "identical"] >= 1 and counts.loc["am", "noisy"] >= 1
    # The learned lexicon finds pairs whose neutral side keeps a term, and untouched near-copies.
    assert counts["still_toxic"].sum() >= 1 and counts["already_neutral"].sum() >= 1
    assert result.summary().startswith(f"kept {len(result.kept)}/3600; dropped: ")

    paths = result.write(tmp_path)
    assert {p.name for p in paths.values()} == {"dropped.parquet", "dropped.csv", "counts.csv"}
    back_dropped = pd.read_parquet(paths["dropped_parquet"])
    pd.testing.assert_frame_equal(back_dropped, result.dropped, check_dtype=False)
    back = pd.read_csv(paths["counts"], index_col="lang")
    assert (back.to_numpy() == counts.to_numpy()).all()


TEXTS = ["", " ", "you stupid idiot", "You Stupid  Idiot", "you are a person", "hello there friend",
         "a much longer sentence that keeps going for quite a while", "idiot", "x"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["en", "de"]), st.sampled_from(TEXTS), st.sampled_from(TEXTS),
                  st.sampled_from(["train", "validation", "test"])),
        min_size=0, max_size=25,
    ),
    with_split=st.booleans(),
    switches=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_property_rows_partition(rows, with_split: bool, switches: list[bool]) -> None:
    table = pd.DataFrame(rows, columns=["lang", "toxic", "neutral", "split"])
    table.insert(0, "id", [f"r{i}" for i in range(len(table))])
    if not with_split:
        table = table.drop(columns="split")
    names = ["drop_duplicates", "drop_identical", "drop_already_neutral", "drop_still_toxic", "drop_noisy"]
    cfg = CleaningConfig(**dict(zip(names, switches)))
    result = clean_pairs(table, cfg, HAND_LEXICON)
    assert_partition(table, result)
    assert int(result.counts["total"].sum()) == len(table)
    kept = result.kept
    # Nothing kept is empty, and no (lang, toxic, neutral) is kept twice when duplicates are dropped.
    assert all(isinstance(t, str) and t.strip() for t in pd.concat([kept["toxic"], kept["neutral"]]))
    if cfg.drop_duplicates:
        assert not kept.duplicated(["lang", "toxic", "neutral"]).any()


@pytest.mark.slow
def test_thousands_of_rows_clean_in_seconds(shared_data: Path) -> None:
    # 5,000 of the 19,766 scored ParaDetox rows keep the file fast; the full set measured ~3.5 s.
    raw = pd.read_csv(shared_data / "paradetox_scored" / "en_data.tsv", sep="\t", nrows=5000)
    table = pd.DataFrame(
        {"id": raw["idx"].astype(str) + "-" + np.arange(len(raw)).astype(str), "lang": "en",
         "toxic": raw["toxic_comment"], "neutral": raw["neutral_comment"]}
    )
    start = time.perf_counter()
    result = clean_pairs(table, CleaningConfig(drop_already_neutral=False, drop_still_toxic=False))
    seconds = time.perf_counter() - start
    assert_partition(table, result)
    assert result.counts.loc["en", "duplicate"] > 0  # ParaDetox repeats some pairs verbatim
    assert seconds < 10, f"cleaning {len(table)} rows took {seconds:.1f} s"
