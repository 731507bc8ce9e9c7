"""Loop detection, distinct-n and length ratio on crafted strings and on real multilingual ParaDetox."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from raydetox.degeneration import LoopRule, distinct_n, find_loop, is_loop, length_ratio, units

# A loop from a real model output (ru); the ellipses stand for the rest of the sentence.
RU_LOOP = "… чтобы её расплавить к хthingт чтобы её расплавить к хthingт чтобы …"

LOOPS = {
    "ru": RU_LOOP,
    "ru_in_sentence": "Надо взять лёд, " + RU_LOOP.strip("… "),
    "en_word": "fuck fuck fuck fuck fuck",
    "en_phrase": "I think that you are I think that you are I think that",
    "en_pair": "go on go on go on go on",
    "zh_char": "哈哈哈哈哈哈哈哈哈哈哈哈",
    "zh_phrase": "我们应该尊重他人我们应该尊重他人我们应该",
    "ja_phrase": "ありがとうございますありがとうございます",
    "de_punct": "Das ist nicht gut. Das ist nicht gut. Das ist",
}

NORMAL = {
    "en_very": "This is very very good.",
    "en_ha": "ha ha, that is funny",
    "en_hahaha": "ha ha ha",
    "en_no": "No, no. I did not say that.",
    "en_no_no_no": "no no no, please stop",
    "zh_thanks": "谢谢你的帮助。",
    "zh_slowly": "慢慢来，不要着急。",
    "zh_laugh": "哈哈哈，真好笑",
    "zh_step": "我们一步一步地走。",
    "zh_comma_repeat": "都是小仙女，小仙女没有错",
    "ja_various": "いろいろありがとうございます。",
    "ja_sometimes": "ときどき東京へ行きます。",
    "de": "Das ist nicht in Ordnung, das ist nicht fair.",
    "ru": "Он сказал, что придёт завтра, если будет время.",
    "emphasis": "what did you do ! ! ! ! ! !",
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_are_caught(name):
    assert is_loop(LOOPS[name]), LOOPS[name]


@pytest.mark.parametrize("name", sorted(NORMAL))
def test_normal_sentences_are_not_loops(name):
    assert not is_loop(NORMAL[name]), (NORMAL[name], find_loop(NORMAL[name]))


def test_loop_span_and_copies():
    assert find_loop(RU_LOOP) == (5, 2.2)  # 5 words, two copies and the first word of a third
    assert find_loop(LOOPS["en_word"]) == (1, 5.0)
    assert find_loop(LOOPS["zh_char"]) == (1, 12.0)
    assert find_loop(LOOPS["ja_phrase"]) == (10, 2.0)  # characters, not one space-less "word"
    assert find_loop("a b c a b c a") == (3, 7 / 3)


def test_thresholds_are_parameters():
    assert not is_loop("ha ha ha") and is_loop("ha ha ha", LoopRule(short_repeats=3))
    assert is_loop("ha ha ha ha") and not is_loop("ha ha ha ha", LoopRule(short_repeats=5))
    three = RU_LOOP.rstrip("… ") + " её расплавить к хthingт"
    assert not is_loop(RU_LOOP, LoopRule(long_repeats=3)) and is_loop(three, LoopRule(long_repeats=3))
    # spans of 1-2 units need short_repeats copies; with short_span=1 a pair needs only long_repeats
    assert not is_loop("go on go on") and is_loop("go on go on", LoopRule(short_span=1))
    assert not is_loop(RU_LOOP, LoopRule(max_span=4))


def test_units_by_script():
    assert units("No, no... 不要哈哈!") == ["no", ",", "no", "...", "不", "要", "哈", "哈", "!"]
    assert units("I don't know из-за") == ["i", "don't", "know", "из-за"]
    assert units("ラーメン") == ["ラ", "ー", "メ", "ン"]
    assert units("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # vowel signs stay inside their word
    assert units("") == [] and find_loop("") is None and find_loop("word") is None


def test_distinct_n_by_hand():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a b) twice, (b c), (b d)
    assert distinct_n(["我爱你", "我爱他"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["我爱你", "我爱他"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["x", "x"], 2) != distinct_n(["x", "x"], 2)  # no bigram at all: NaN
    assert distinct_n(["the the the the"], 1) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(["a"], 0)


def test_length_ratio_by_hand():
    assert length_ratio("abc", "abcdef") == 0.5
    assert length_ratio("  a   b ", "a b") == 1.0  # whitespace-normalised
    assert length_ratio("谢谢", "谢谢你") == pytest.approx(2 / 3)
    assert math.isnan(length_ratio("x", "   "))


@pytest.fixture(scope="module")
def mpd_all(mpd_dir: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(f).assign(lang=f.name[:2]) for f in sorted(mpd_dir.glob("*.parquet"))]
    return pd.concat(frames, ignore_index=True)


def test_human_references_are_almost_never_loops(mpd_all):
    refs = mpd_all["neutral_sentence"]
    assert len(refs) == 3600 and mpd_all["lang"].nunique() == 9
    flagged = [r for r in refs if is_loop(r)]
    assert len(flagged) / len(refs) < 0.005, flagged
    # the few flagged references keep a repetition their toxic input already has
    toxic_of = dict(zip(mpd_all["neutral_sentence"], mpd_all["toxic_sentence"]))
    assert all(is_loop(toxic_of[r]) for r in flagged)
    for lang, part in mpd_all.groupby("lang"):
        assert sum(map(is_loop, part["neutral_sentence"])) <= 2, lang


def test_real_character_loop_in_toxic_input(mpd_all):
    zh = mpd_all.loc[mpd_all["lang"] == "zh", "toxic_sentence"]
    hits = [t for t in zh if "默默默默" in t]
    assert hits and all(find_loop(t)[0] == 1 for t in hits)
