"""Splits, difficulty, buckets and stages on the real multilingual ParaDetox pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raydetox.config import CleaningConfig, CurriculumConfig, LexiconConfig, SplitConfig
from raydetox.data.clean import clean_pairs
from raydetox.data.difficulty import difficulty_cdf, score_difficulty, word_edit_distance
from raydetox.data.io import DataError
from raydetox.data.lexicon import Lexicon
from raydetox.data.split import split_pairs
from raydetox.data.stages import BUCKETS, assign_buckets, paced_subsets, stage_subsets
from raydetox.pacing import CompetenceSampler, competence, phase_steps

LANGS = ("am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh")


@pytest.fixture(scope="module")
def bucketed(mpd_pairs: pd.DataFrame) -> pd.DataFrame:
    """The pipeline as prepare runs it: split → lexicon from train → clean → score → buckets."""
    split = split_pairs(mpd_pairs, SplitConfig())
    lexicon = Lexicon.learn(split[split["split"] == "train"], LexiconConfig())
    kept = clean_pairs(split, CleaningConfig(), lexicon).kept
    return assign_buckets(score_difficulty(kept, CurriculumConfig(), lexicon), CurriculumConfig())


# ----------------------------------------------------------------------------------------------- splits


def test_split_is_seeded_stratified_and_order_independent(mpd_pairs: pd.DataFrame) -> None:
    cfg = SplitConfig(train=0.7, validation=0.2, test=0.1, seed=3)
    first = split_pairs(mpd_pairs, cfg)
    assert first["id"].tolist() == mpd_pairs["id"].tolist()  # row order kept
    assert first["split"].equals(split_pairs(mpd_pairs, cfg)["split"])
    other = split_pairs(mpd_pairs, SplitConfig(train=0.7, validation=0.2, test=0.1, seed=4))
    assert (first["split"] != other["split"]).sum() > 100
    sizes = first.groupby(["lang", "split"]).size().unstack()
    assert list(sizes.index) == list(LANGS)
    for name, fraction in (("train", 0.7), ("validation", 0.2), ("test", 0.1)):
        assert (abs(sizes[name] - fraction * 400) <= 1).all(), sizes
    shuffled = split_pairs(mpd_pairs.sample(frac=1.0, random_state=1), cfg)
    assert shuffled.set_index("id")["split"].sort_index().equals(first.set_index("id")["split"].sort_index())
    assert "split" not in mpd_pairs.columns  # input not modified


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["en", "de", "zh"]), st.sampled_from(["", " ", "a", "b", "c", "d", "e", "f"])),
        min_size=1, max_size=40,
    ),
    fractions=st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0), (0.0, 0.5, 0.5)]),
    seed=st.integers(0, 2**31),
    order=st.randoms(use_true_random=False),
)
def test_property_split_is_a_function_of_ids_and_seed(rows, fractions, seed: int, order) -> None:
    # Few distinct texts: many rows share a toxic text (groups); "" and " " must not form a group.
    table = pd.DataFrame(
        {"id": [f"r{i}" for i in range(len(rows))], "lang": [lang for lang, _ in rows],
         "toxic": [text for _, text in rows], "neutral": "n"}
    )
    cfg = SplitConfig(train=fractions[0], validation=fractions[1], test=fractions[2], seed=seed)
    split = split_pairs(table, cfg)
    assert split["id"].tolist() == table["id"].tolist()  # every row once, in input order
    assert set(split["split"]) <= {"train", "validation", "test"}
    by_id = split.set_index("id")["split"]

    shuffled = table.iloc[order.sample(range(len(table)), len(table))]
    assert split_pairs(shuffled, cfg).set_index("id")["split"].reindex(by_id.index).equals(by_id)
    assert split_pairs(table, cfg)["split"].equals(split["split"])

    # A language's assignment does not depend on the other languages in the table.
    en = table[table["lang"] == "en"]
    if len(en):
        alone = split_pairs(en, cfg).set_index("id")["split"]
        assert alone.equals(by_id.loc[alone.index])
    # Rows sharing a (non-empty) toxic text stay together; a zero fraction gets no rows.
    keyed = split[split["toxic"].str.strip() != ""]
    assert (keyed.groupby(["lang", "toxic"])["split"].nunique() == 1).all()
    for name, fraction in zip(("train", "validation", "test"), fractions):
        if fraction == 0:
            assert name not in set(split["split"])


def test_split_is_stable_across_data_versions(mpd_pairs: pd.DataFrame) -> None:
    """A new data version (rows removed, rows added, ids renumbered) moves only texts next to a cut:
    each change shifts each of the two cuts by at most one row."""
    cfg = SplitConfig()
    before = split_pairs(mpd_pairs, cfg).set_index("toxic")["split"]
    gone = mpd_pairs.sample(n=20, random_state=0)
    new_rows = pd.DataFrame({"id": [f"new-{i}" for i in range(20)], "lang": "en",
                             "toxic": [f"a new sentence, number {i}" for i in range(20)], "neutral": "n"})
    version = pd.concat([mpd_pairs.drop(gone.index), new_rows], ignore_index=True)
    version["id"] = [f"v2-{i}" for i in range(len(version))]
    after = split_pairs(version, cfg).set_index("toxic")["split"]
    common = before.index.intersection(after.index)
    moved = int((before[common] != after[common]).sum())
    assert len(common) == len(mpd_pairs) - 20
    assert moved <= 2 * (20 + 20), moved
    # A random permutation per version would move about a third of them.
    assert moved < 0.02 * len(common), moved


def test_different_seeds_give_different_splits() -> None:
    table = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "lang": "en",
                          "toxic": [f"text {i}" for i in range(200)], "neutral": "n"})
    splits = {tuple(split_pairs(table, SplitConfig(seed=seed))["split"]) for seed in range(5)}
    assert len(splits) == 5


def test_rows_sharing_a_toxic_text_stay_in_one_split() -> None:
    rows = [
        (f"t{i}-{j}", "en", f"toxic sentence number {i}", f"neutral {i}.{j}")
        for i in range(60)
        for j in range(3)
    ]
    table = pd.DataFrame(rows, columns=["id", "lang", "toxic", "neutral"])
    out = split_pairs(table, SplitConfig(train=0.6, validation=0.2, test=0.2))
    assert (out.groupby("toxic")["split"].nunique() == 1).all()
    assert set(out["split"]) == {"train", "validation", "test"}
    assert abs((out["split"] == "train").sum() - 0.6 * len(out)) <= 3  # whole groups of 3 move together


def test_existing_split_column_is_validated_and_kept(mpd_pairs: pd.DataFrame) -> None:
    names = np.array(["train", "Dev", " val ", "valid", "TEST", "validation"])
    table = mpd_pairs.assign(split=names[np.arange(len(mpd_pairs)) % len(names)])
    out = split_pairs(table, SplitConfig(seed=9))
    expected = np.array(["train", "validation", "validation", "validation", "test", "validation"])
    assert out["split"].tolist() == expected[np.arange(len(out)) % 6].tolist()
    renamed = split_pairs(table.rename(columns={"split": "fold"}), SplitConfig(), split_column="fold")
    assert renamed["split"].equals(out["split"])
    table.loc[5, "split"] = "holdout"
    with pytest.raises(ValueError, match=r"row id 'am-5': split 'holdout'"):
        split_pairs(table, SplitConfig())
    with pytest.raises(ValueError, match="split column 'nope' not found"):
        split_pairs(mpd_pairs, SplitConfig(), split_column="nope")


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_split_file_is_honoured_and_bad_rows_are_named(
    mpd_pairs: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    names = np.array(["train", "dev", "test"])
    assignment = pd.DataFrame({"id": mpd_pairs["id"], "split": names[np.arange(len(mpd_pairs)) % 3]})
    path = tmp_path / f"splits{suffix}"
    assignment.iloc[::-1].to_csv(path, sep=sep, index=False)  # order in the file does not matter
    out = split_pairs(mpd_pairs, SplitConfig(split_file=str(path)))
    assert out["split"].tolist() == assignment["split"].replace("dev", "validation").tolist()

    bad = assignment.copy()
    bad.loc[7, "id"] = "xx-1"
    bad.to_csv(path, sep=sep, index=False)
    with pytest.raises(ValueError, match=rf"split file {path}, row 9: id 'xx-1' is not in the pairs table"):
        split_pairs(mpd_pairs, SplitConfig(split_file=str(path)))
    assignment.iloc[:-2].to_csv(path, sep=sep, index=False)
    missing = r"2 id\(s\) of the pairs table are missing, e.g. \['zh-398', 'zh-399'\]"
    with pytest.raises(ValueError, match=missing):
        split_pairs(mpd_pairs, SplitConfig(split_file=str(path)))
    bad = assignment.copy()
    bad.loc[0, "split"] = "eval"
    bad.to_csv(path, sep=sep, index=False)
    with pytest.raises(ValueError, match=rf"split file {path}, row 2: split 'eval'"):
        split_pairs(mpd_pairs, SplitConfig(split_file=str(path)))
    with pytest.raises(ValueError, match="both split.split_file"):
        split_pairs(mpd_pairs, SplitConfig(split_file=str(path)), split_column="split")
    with pytest.raises(DataError, match="missing.csv"):
        split_pairs(mpd_pairs, SplitConfig(split_file=str(tmp_path / "missing.csv")))


# ------------------------------------------------------------------------------------------- difficulty


def test_word_edit_distance() -> None:
    assert word_edit_distance([], []) == 0
    assert word_edit_distance(list("abc"), list("abc")) == 0
    assert word_edit_distance(list("abc"), list("axc")) == 1
    assert word_edit_distance(list("abcd"), list("ad")) == 2
    assert word_edit_distance(list("kitten"), list("sitting")) == 3
    assert word_edit_distance([], list("xyz")) == 3


def test_score_columns_and_direction(bucketed: pd.DataFrame) -> None:
    for column in ("overlap", "edit_distance", "difficulty"):
        assert bucketed[column].between(0, 1).all(), column
    assert (bucketed["length"] >= 1).all()
    assert bucketed["toxicity"].notna().all() and (bucketed["toxicity"] >= 0).all()
    row = bucketed.set_index("id").loc["en-1"]  # "worthless scum" → "unpleasant people": 2 of 17 words
    assert row["edit_distance"] == pytest.approx(2 / 17) and row["overlap"] == pytest.approx(15 / 17)
    # Easy = local edits, hard = rewrites: overlap falls and edit distance grows with the bucket.
    means = bucketed.groupby(["lang", "bucket"])[["overlap", "edit_distance"]].mean()
    for lang in LANGS:
        ov = means.loc[lang, "overlap"]
        ed = means.loc[lang, "edit_distance"]
        assert ov["easy"] > ov["medium"] > ov["hard"], lang
        assert ed["easy"] < ed["medium"] < ed["hard"], lang


def test_toxicity_score_column_is_used_and_explicit_toxicity_is_easier(mpd_pairs: pd.DataFrame) -> None:
    table = mpd_pairs[mpd_pairs["lang"] == "de"].head(50).copy()
    table["toxicity_score"] = np.linspace(0.0, 1.0, len(table))
    cfg = CurriculumConfig(overlap_weight=0.0, toxicity_weight=1.0, length_weight=0.0)
    scored = score_difficulty(table, cfg)
    assert scored["toxicity"].tolist() == table["toxicity_score"].tolist()
    assert scored["difficulty"].is_monotonic_decreasing and scored["difficulty"].is_unique
    table.loc[table.index[3], "toxicity_score"] = np.nan
    with pytest.raises(ValueError, match=r"row id 'de-3', column 'toxicity_score'"):
        score_difficulty(table, cfg)


def test_without_toxicity_source_the_term_is_left_out(mpd_pairs: pd.DataFrame) -> None:
    table = mpd_pairs.head(40)
    with pytest.warns(UserWarning, match="toxicity left out"):
        scored = score_difficulty(table, CurriculumConfig())
    assert scored["toxicity"].isna().all() and scored["difficulty"].notna().all()
    with pytest.raises(ValueError, match="weights sum to 0"):
        score_difficulty(table, CurriculumConfig(overlap_weight=0, length_weight=0))
    with pytest.raises(ValueError, match=r"length_weight[\s\S]*greater than or equal to 0"):
        CurriculumConfig(length_weight=-1)  # refused when the config is loaded


# ---------------------------------------------------------------------------------------------- buckets


def test_buckets_ordered_and_balanced_on_train(bucketed: pd.DataFrame) -> None:
    means = bucketed.groupby(["lang", "bucket"])["difficulty"].mean().unstack()
    for lang in LANGS:
        assert means.loc[lang, "easy"] < means.loc[lang, "medium"] < means.loc[lang, "hard"], lang
    train = bucketed[bucketed["split"] == "train"]
    sizes = train.groupby(["lang", "bucket"]).size().unstack()
    n = train.groupby("lang").size()
    assert (abs(sizes["easy"] - n / 3) <= 1).all() and (abs(sizes["hard"] - n / 3) <= 1).all()
    # Evaluation rows are cut at the train thresholds: no eval row is easier than a train row it outranks.
    for lang in LANGS:
        rows = bucketed[bucketed["lang"] == lang]
        tr = rows[rows["split"] == "train"]
        ev = rows[rows["split"] != "train"]
        easiest_non_easy = tr.loc[tr["bucket"] != "easy", "difficulty"].min()
        hardest_non_hard = tr.loc[tr["bucket"] != "hard", "difficulty"].max()
        assert (ev.loc[ev["bucket"] == "easy", "difficulty"] <= easiest_non_easy).all()
        assert (ev.loc[ev["bucket"] == "hard", "difficulty"] >= hardest_non_hard).all()


def test_ties_are_broken_by_seeded_id(mpd_pairs: pd.DataFrame) -> None:
    flat = mpd_pairs[mpd_pairs["lang"] == "es"].assign(difficulty=0.5)
    first = assign_buckets(flat, CurriculumConfig(seed=1))
    assert first["bucket"].value_counts().to_dict() == {"easy": 133, "medium": 134, "hard": 133}
    assert first["bucket"].equals(assign_buckets(flat, CurriculumConfig(seed=1))["bucket"])
    reordered = assign_buckets(flat.iloc[::-1], CurriculumConfig(seed=1))
    by_id = first.set_index("id")["bucket"].sort_index()
    assert reordered.set_index("id")["bucket"].sort_index().equals(by_id)
    assert not first["bucket"].equals(assign_buckets(flat, CurriculumConfig(seed=2))["bucket"])


def test_fixed_cut_points(bucketed: pd.DataFrame) -> None:
    out = assign_buckets(bucketed.drop(columns="bucket"), CurriculumConfig(cut_points=[0.3, 0.6]))
    d = out["difficulty"]
    expected = np.select([d < 0.3, d < 0.6], ["easy", "medium"], "hard")
    assert out["bucket"].tolist() == expected.tolist()
    assert set(out["bucket"]) == set(BUCKETS)
    with pytest.raises(ValueError, match="run score_difficulty first"):
        assign_buckets(bucketed.drop(columns="difficulty"), CurriculumConfig())


def test_stages_non_empty_for_every_language(bucketed: pd.DataFrame) -> None:
    stages = stage_subsets(bucketed)
    assert list(stages) == ["easy", "medium", "hard", "full"]
    train = bucketed[bucketed["split"] == "train"]
    assert len(stages["full"]) == len(train)
    assert sorted(pd.concat([stages[b] for b in BUCKETS])["id"]) == sorted(train["id"])
    for name, frame in stages.items():
        assert (frame["split"] == "train").all()
        assert sorted(frame["lang"].unique()) == list(LANGS), name
        if name != "full":
            assert (frame["bucket"] == name).all()
    with pytest.warns(UserWarning, match=r"\['easy'\] have no training rows"):
        stage_subsets(assign_buckets(bucketed, CurriculumConfig(cut_points=[0.0, 0.5])))
    with pytest.raises(ValueError, match="run assign_buckets first"):
        stage_subsets(bucketed.drop(columns="bucket"))


# ----------------------------------------------------------------------------------------------- pacing


def test_cumulative_subsets_are_unions_of_the_earlier_buckets() -> None:
    order = ["hard", "easy", "medium", "full"]
    assert paced_subsets(order, "disjoint") == [("hard",), ("easy",), ("medium",), ("full",)]
    # Buckets in easy → hard order; all three buckets are the full train split.
    assert paced_subsets(order, "cumulative") == [("hard",), ("easy", "hard"), ("full",), ("full",)]
    assert paced_subsets(["easy", "full", "hard"], "cumulative") == [("easy",), ("full",), ("full",)]
    assert paced_subsets(order, "competence") == [("full",)] * 4
    with pytest.raises(ValueError, match="unknown pacing 'nope'"):
        paced_subsets(order, "nope")


def test_difficulty_cdf_is_per_language_and_follows_difficulty(bucketed: pd.DataFrame) -> None:
    full = stage_subsets(bucketed)["full"]
    d = difficulty_cdf(full)
    assert ((d > 0) & (d <= 1)).all()
    for lang in LANGS:
        rows = (full["lang"] == lang).to_numpy()
        values, difficulty = d[rows], full.loc[rows, "difficulty"].to_numpy()
        assert values.max() == 1.0
        # The CDF value is the share of the language's rows at most as difficult.
        assert values.tolist() == [(difficulty <= x).mean() for x in difficulty]
        # So competence c admits about the share c of every language.
        assert abs((values <= 0.3).mean() - 0.3) < 0.02, lang
    with pytest.raises(ValueError, match="run score_difficulty first"):
        difficulty_cdf(full.drop(columns="difficulty"))


@pytest.mark.parametrize("kind", ["sqrt", "linear"])
def test_competence_sampler_draws_only_pairs_within_competence(bucketed: pd.DataFrame, kind: str) -> None:
    d = difficulty_cdf(stage_subsets(bucketed)["full"])
    c0, total, per_step = 0.05, 40, 16
    expected = {  # Platanios et al. (2019), eq. 6 and 7
        "sqrt": lambda t: min(1.0, np.sqrt(t * (1 - c0**2) / total + c0**2)),
        "linear": lambda t: min(1.0, t * (1 - c0) / total + c0),
    }[kind]
    # Two phases of one run (steps 1-15 and 16-40): the second continues the first's competence.
    first = CompetenceSampler(d, first_step=0, steps=15, total_steps=total, examples_per_step=per_step, c0=c0,
                              kind=kind, seed=3)
    second = CompetenceSampler(d, first_step=15, steps=25, total_steps=total, examples_per_step=per_step, c0=c0,
                               kind=kind, seed=3)
    drawn = np.array(list(first) + list(second)).reshape(total, per_step)
    assert len(first) == 15 * per_step and len(second) == 25 * per_step
    pools = []
    for t in range(1, total + 1):
        c = expected(t)
        assert competence(t, total, c0, kind) == pytest.approx(c, abs=1e-12)
        step = drawn[t - 1]
        assert len(set(step)) == per_step  # a step never repeats a pair
        assert (d[step] <= c + 1e-12).all(), (t, c, d[step].max())
        pools.append(int((d <= c + 1e-12).sum()))
    assert all(a <= b for a, b in zip(pools, pools[1:])) and pools[0] < len(d) / 4
    assert competence(total, total, c0, kind) == 1.0 and pools[-1] == len(d)
    # The pool grows into the hard pairs: the last steps draw pairs the first could not.
    assert d[drawn[:3]].max() <= expected(3) < d[drawn[-5:]].max()
    # A run resumed at a phase boundary draws the same as the uninterrupted run.
    again = CompetenceSampler(d, first_step=15, steps=25, total_steps=total, examples_per_step=per_step, c0=c0,
                              kind=kind, seed=3)
    assert list(again) == list(second)


def test_competence_pool_never_smaller_than_a_step(bucketed: pd.DataFrame) -> None:
    d = difficulty_cdf(stage_subsets(bucketed)["full"])
    sampler = CompetenceSampler(d, first_step=0, steps=1, total_steps=10**6, examples_per_step=64, c0=0.001,
                                kind="linear")
    assert int((d <= competence(1, 10**6, 0.001, "linear")).sum()) < 64  # too few pairs within competence
    step = sampler.step_indices(1)
    # The 64 easiest pairs instead, each once.
    assert sorted(d[step]) == sorted(np.sort(d)[:64]) and len(set(step)) == 64


def test_phase_steps_count_epochs_of_the_full_split() -> None:
    # 130 pairs, batch 8: 17 batches a pass; 2 processes: 9 each; accumulation 2: 5 updates a pass.
    assert phase_steps([1.0, 0.5, 2.0], 130, 8) == [17, 9, 34]
    assert phase_steps([1.0], 130, 8, world_size=2, accumulation=2) == [5]
    assert phase_steps([1.0, 3.0], 130, 8, max_steps_per_stage=4) == [4, 4]


@pytest.mark.parametrize("world, accumulation", [(1, 2), (2, 1), (2, 2)])
def test_competence_steps_survive_accelerate_sharding(bucketed: pd.DataFrame, world: int, accumulation: int) -> None:
    # Under DDP accelerate deals the sampler's batches round-robin to the processes; with the examples of
    # a step = batch × accumulation × processes, each optimizer step's micro-batches, over all
    # processes, are exactly that step's draw.
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    d = difficulty_cdf(stage_subsets(bucketed)["full"])
    batch = 4
    sampler = CompetenceSampler(d, first_step=3, steps=5, total_steps=12, examples_per_step=batch * accumulation * world,
                                c0=0.05)
    local = [list(BatchSamplerShard(BatchSampler(sampler, batch, drop_last=False), num_processes=world,
                                    process_index=rank)) for rank in range(world)]
    assert all(len(batches) == 5 * accumulation for batches in local)
    for j, t in enumerate(sampler.step_numbers()):
        seen = [i for batches in local for b in batches[j * accumulation:(j + 1) * accumulation] for i in b]
        assert sorted(seen) == sorted(sampler.step_indices(t).tolist())
