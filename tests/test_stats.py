"""Bootstrap intervals, paired differences, seed summaries and verdicts on crafted and real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from sacrebleu.metrics import CHRF

from raydetox.stats import Interval, bootstrap_interval, paired_bootstrap, seed_summary, sign_flip_test, verdict

# Student t quantile t(0.975, df) from printed tables.
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824}


@pytest.fixture(scope="module")
def scores() -> np.ndarray:
    """Per-sentence scores that vary much more between sentences than between systems."""
    return np.random.default_rng(7).uniform(0.0, 1.0, size=300)


def _zero_mean(noise: np.ndarray) -> np.ndarray:
    return noise - noise.mean()


def test_paired_bootstrap_finds_a_known_difference(scores):
    noise = _zero_mean(np.random.default_rng(1).normal(0.0, 0.05, size=len(scores)))
    better = scores + 0.04 + noise  # mean difference exactly 0.04
    diff = paired_bootstrap(better, scores)
    assert diff.estimate == pytest.approx(0.04)
    assert diff.contains(0.04) and diff.low > 0
    assert verdict(diff, "j", "curriculum", "baseline").outcome == "better"
    # Unpaired, the two systems' intervals overlap: the pairing is what removes sentence difficulty.
    alone_a, alone_b = bootstrap_interval(better), bootstrap_interval(scores)
    assert alone_a.low < alone_b.high
    # a - b and b - a mirror each other
    back = paired_bootstrap(scores, better)
    assert back.estimate == pytest.approx(-0.04) and back.high < 0
    assert verdict(back, "j", "baseline", "curriculum").outcome == "worse"


def test_paired_bootstrap_without_a_difference(scores):
    noise = _zero_mean(np.random.default_rng(2).normal(0.0, 0.05, size=len(scores)))
    diff = paired_bootstrap(scores + noise, scores)
    assert diff.estimate == pytest.approx(0.0, abs=1e-12)
    assert diff.contains(0.0) and diff.low < 0 < diff.high
    assert 0 < diff.width < 0.03
    assert verdict(diff, "j").outcome == "no difference"
    assert verdict(diff, "j", max_width=diff.width / 2).outcome == "undecided"


def test_identical_systems_give_a_zero_width_interval(scores):
    diff = paired_bootstrap(scores, scores.copy())
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    zeros = bootstrap_interval(np.zeros(37))
    assert (zeros.estimate, zeros.low, zeros.high, zeros.n) == (0.0, 0.0, 0.0, 37)


def test_bootstrap_interval_of_a_mean(scores):
    it = bootstrap_interval(scores)
    assert it.estimate == pytest.approx(scores.mean()) and it.n == 300 and it.confidence == 0.95
    # close to the normal approximation mean ± 1.96 · sd / √n for a uniform sample of 300
    half = 1.96 * scores.std(ddof=1) / math.sqrt(len(scores))
    assert it.low == pytest.approx(scores.mean() - half, abs=0.01)
    assert it.high == pytest.approx(scores.mean() + half, abs=0.01)
    narrow = bootstrap_interval(scores, confidence=0.5)
    assert it.low < narrow.low < narrow.high < it.high
    # the generic path (a statistic of the rows) resamples the same rows as the fast mean path
    assert bootstrap_interval(scores, statistic=lambda rows: float(rows.mean())) == it


def test_deterministic_for_a_seed(scores):
    assert bootstrap_interval(scores, seed=3) == bootstrap_interval(scores, seed=3)
    assert bootstrap_interval(scores, seed=3) != bootstrap_interval(scores, seed=4)
    assert paired_bootstrap(scores, scores[::-1], seed=5) == paired_bootstrap(scores, scores[::-1], seed=5)


def test_corpus_chrf_from_sentence_statistics(mpd_dir: Path):
    en = pd.read_parquet(mpd_dir / "en-00000-of-00001.parquet").head(120)
    refs, toxic = en["neutral_sentence"].tolist(), en["toxic_sentence"].tolist()
    chrf = CHRF()
    # sacrebleu's per-sentence sufficient statistics; corpus chrF is computed from their column sums
    ref_stats = np.array(chrf._extract_corpus_statistics(refs, [refs]))
    copy_stats = np.array(chrf._extract_corpus_statistics(toxic, [refs]))

    def corpus_chrf(rows: np.ndarray) -> float:
        return chrf._compute_score_from_stats(rows.sum(axis=0).tolist()).score

    it = bootstrap_interval(copy_stats, statistic=corpus_chrf, n_resamples=999)
    assert it.estimate == pytest.approx(sacrebleu.corpus_chrf(toxic, [refs]).score)
    assert it.low < it.estimate < it.high and it.width > 1
    diff = paired_bootstrap(ref_stats, copy_stats, statistic=corpus_chrf, n_resamples=999)
    assert diff.estimate == pytest.approx(100 - it.estimate) and diff.low > 0
    text = verdict(diff, "chrF", "reference", "copy").text
    assert text.startswith("reference is significantly better than copy on chrF")


def test_bad_inputs_are_named(scores):
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap(scores, scores[:-1])
    with pytest.raises(ValueError, match=r"non-finite values at rows \[2\]"):
        bootstrap_interval([0.1, 0.2, float("nan")])
    with pytest.raises(ValueError, match="need a statistic"):
        bootstrap_interval(np.ones((5, 3)))
    with pytest.raises(ValueError, match="no rows"):
        bootstrap_interval([])
    one = bootstrap_interval([0.7])
    assert one.estimate == 0.7 and math.isnan(one.low) and math.isnan(one.high)


def test_seed_summary_by_hand():
    runs = pd.DataFrame(
        {
            "schedule": ["easy-first", "easy-first", "easy-first", "random", "random", "baseline"],
            "seed": [0, 1, 2, 0, 1, 0],
            "j": [0.30, 0.34, 0.32, 0.20, 0.26, 0.25],
            "chrf": [40.0, 44.0, 48.0, 30.0, np.nan, 35.0],
        }
    )
    out = seed_summary(runs, "schedule", ["j", "chrf"]).set_index(["schedule", "metric"])
    row = out.loc[("easy-first", "j")]
    assert (row["mean"], row["std"], row["n"]) == (pytest.approx(0.32), pytest.approx(0.02), 3)
    half = T975[2] * 0.02 / math.sqrt(3)
    assert row["low"] == pytest.approx(0.32 - half, abs=1e-5) and row["high"] == pytest.approx(0.32 + half, abs=1e-5)
    row = out.loc[("random", "j")]  # two seeds: std = |0.26 − 0.20| / √2, t with 1 degree of freedom
    std = 0.06 / math.sqrt(2)
    assert row["std"] == pytest.approx(std) and row["n"] == 2
    assert row["high"] - row["low"] == pytest.approx(2 * T975[1] * std / math.sqrt(2), abs=1e-4)
    row = out.loc[("easy-first", "chrf")]
    assert (row["mean"], row["std"], row["n"]) == (44.0, 4.0, 3)
    # a single seed (or a single non-missing value): no spread, no interval
    for key in [("baseline", "j"), ("random", "chrf")]:
        row = out.loc[key]
        assert row["n"] == 1 and math.isnan(row["std"]) and math.isnan(row["low"]) and math.isnan(row["high"])
    assert out.loc[("random", "chrf"), "mean"] == 30.0
    assert len(out) == 6


def test_seed_summary_keeps_groups_with_a_missing_key():
    runs = pd.DataFrame({"schedule": ["a", "a", None], "lr": [1e-4, 1e-4, 3e-4], "j": [0.1, 0.3, 0.2]})
    out = seed_summary(runs, ["schedule", "lr"], ["j"])
    assert len(out) == 2 and out["n"].tolist() == [2, 1] and out["schedule"].isna().tolist() == [False, True]
    with pytest.raises(KeyError, match="bleu"):
        seed_summary(runs, "schedule", ["bleu"])


def test_verdict_sentences():
    better = Interval(0.05, 0.01, 0.09, 0.95, 400)
    v = verdict(better, "j", "best", "delete")
    assert v.outcome == "better" and str(v) == v.text
    assert v.text == (
        "best is significantly better than delete on j (best − delete = +0.05, 95% CI +0.01 to +0.09, 400 sentences)."
    )
    # lower is better for toxicity: a positive difference is worse
    assert verdict(better, "toxicity", higher_is_better=False).outcome == "worse"
    assert verdict(Interval(-0.05, -0.09, -0.01, 0.95, 400), "toxicity", higher_is_better=False).outcome == "better"
    unclear = Interval(0.01, -0.2, 0.22, 0.95, 400)
    assert verdict(unclear, "j").outcome == "no difference"
    v = verdict(unclear, "j", max_width=0.1)
    assert v.outcome == "undecided" and "wider than 0.1" in v.text
    # a per-language test split has about 37 rows: decided at the default minimum, not at 50
    assert verdict(Interval(0.05, 0.01, 0.09, 0.95, 37), "j").outcome == "better"
    v = verdict(Interval(0.05, 0.01, 0.09, 0.95, 37), "j", min_n=50)
    assert v.outcome == "undecided" and "fewer than 50 sentences" in v.text
    assert verdict(Interval(0.05, math.nan, math.nan, 0.95, 400), "j").outcome == "undecided"


def test_a_difference_carried_by_few_sentences_needs_the_sign_flip_test():
    """330 sentences of which 3 differ, all one way: the bootstrap interval of the mean excludes 0, but
    an exact sign-flip test gives p = 1/4: not significant. Twelve that differ one way are (p < 0.001)."""
    best, base = np.zeros(330), np.zeros(330)
    base[:3] = 1.0
    few = paired_bootstrap(best, base)
    assert few.high < 0 and (few.differing, few.sign_flip_p) == (3, 0.25)
    said = verdict(few, "copy rate", "best", "baseline", higher_is_better=False)
    assert said.outcome == "no difference" and "only 3 of 330 sentences differ, sign-flip test p = 0.25" in said.text
    base[:12] = 1.0
    twelve = paired_bootstrap(best, base)
    assert twelve.sign_flip_p == pytest.approx(2 / 2**12)
    assert verdict(twelve, "copy rate", "best", "baseline", higher_is_better=False).outcome == "better"
    base[:40] = 1.0  # enough differing sentences: the bootstrap alone decides, as before
    many = paired_bootstrap(best, base)
    assert many.differing == 40
    assert "sign-flip" not in verdict(many, "copy rate", "best", "baseline", higher_is_better=False).text
    assert sign_flip_test([0.0, 0.0]) == sign_flip_test([]) == sign_flip_test([0.3]) == 1.0


def test_scoring_noise_is_not_a_difference(scores):
    """Identical outputs scored in other batches differ by ~1e-9: no sentence differs, no verdict."""
    a = scores
    noisy = paired_bootstrap(a, a + 1e-9 * np.sign(np.sin(np.arange(len(a)))))
    assert noisy.differing == 0 and noisy.sign_flip_p == 1.0
    assert verdict(noisy, "j").outcome == "no difference"
