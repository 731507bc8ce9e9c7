"""Confirmation on untouched data (raydetox.confirm) and the checkpoint of a row (selection.checkpoint_of).

One tiny real sweep with the baseline (module fixture) is analysed with ``raydetox analyze --confirm
--holdout``; while that runs, the sweep's data directory holds only the test split and the lexicon, so
reading any validation or training row would fail.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sacrebleu.metrics import CHRF

from raydetox.cli import main
from raydetox.config import DataConfig, dump_config, load_config
from raydetox.confirm import BEST, SENTENCE_COLUMNS, TEST_SPLIT, EvalSet, _summarise, compare, load_holdout
from raydetox.data.io import DataError, load_pairs, read_table
from raydetox.data.lexicon import Lexicon
from raydetox.metrics import get_scorer, ref_streams
from raydetox.judge import POINTER_FILE
from raydetox.pretraining_corpus import BASE_POINTER, recorded_base
from raydetox.results import DATA_DIR, load_results, read_predictions
from raydetox.selection import best_config, best_row, checkpoint_of, seed_of, seed_rows
from tests.test_sweep import SWEEP
from tests.tiny import tiny_config

HOLDOUT_PER_LANG = 3


@pytest.fixture(scope="module")
def confirmed(mpd_dir: Path, shared_data: Path, embedded_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """(results dir, analysis dir, holdout file, hidden data dir) of a confirmed tiny sweep."""
    import ray

    from raydetox.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("confirm")
    cfg = tiny_config(mpd_dir, tmp / "runs", embedded_cache,
                      **{**SWEEP, "sweep.orderings": [["easy", "full"]], "sweep.include_baseline": True,
                         "sweep.untrained": True,
                         # the tiny base loops; these tests are about confirmation, not the loop guard
                         "sweep.max_degenerate_rate": 1.0})
    try:
        results = run_sweep(cfg, storage_path=str(tmp / "sweeps"))
    finally:
        ray.shutdown()
    assert not [r for r in results if r.error]
    exp_dir = tmp / "sweeps" / cfg.name

    # Toxic inputs of a source the sweep never reads, without references.
    inputs = load_pairs(DataConfig(), str(shared_data / "textdetox_inputs" / "textdetox2024_test_inputs.tsv"))
    inputs = inputs.groupby("lang").head(HOLDOUT_PER_LANG)
    holdout = tmp / "holdout.tsv"
    pd.DataFrame({"toxic_sentence": inputs["toxic"], "neutral_sentence": "", "lang": inputs["lang"]}).to_csv(
        holdout, sep="\t", index=False)

    data, hidden = exp_dir / DATA_DIR, tmp / "hidden-data"
    data.rename(hidden)
    (data / TEST_SPLIT).parent.mkdir(parents=True)
    shutil.copy2(hidden / TEST_SPLIT, data / TEST_SPLIT)
    shutil.copy2(hidden / "lexicon.json", data / "lexicon.json")
    shutil.copy2(hidden / POINTER_FILE, data / POINTER_FILE)  # which judge scores STA (no data in it)
    shutil.copy2(hidden / BASE_POINTER, data / BASE_POINTER)  # which base the trials started from (likewise)
    out = tmp / "analysis"
    try:
        assert main(["analyze", str(exp_dir), "--out", str(out), "--confirm", "--holdout", str(holdout)]) == 0
    finally:
        shutil.rmtree(data)
        hidden.rename(data)
    return exp_dir, out, holdout


def _systems(exp_dir: Path) -> set[str]:
    """The systems a confirmation runs: a reference point is not run twice when it is the best row."""
    best = best_row(load_results(exp_dir), load_config(exp_dir / "experiment.yaml").sweep)
    return ({"best", "copy", "delete"} | (set() if best["is_baseline"] == True else {"baseline"})  # noqa: E712
            | (set() if best.get("is_untrained") == True else {"untrained"}))  # noqa: E712


def _trained(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["is_untrained"] != True]  # noqa: E712 (a column of bools and NaN)


@pytest.mark.slow
def test_every_sweep_has_untrained_rows_from_the_shared_untrained_model(confirmed) -> None:
    """The untrained variant: one decode row per decoding setting, at stage 0, scored like every other row
    on validation, from the same base the confirmation's ``untrained`` row uses (no checkpoint)."""
    from raydetox.experiment import load_untrained, toxic_token_ids
    from raydetox.sweep import decode_grid
    from raydetox.trainer import predict

    exp_dir, _, _ = confirmed
    experiment = load_config(exp_dir / "experiment.yaml")
    df = load_results(exp_dir)
    untrained = df[df["is_untrained"] == True]  # noqa: E712
    assert untrained["trial_id"].nunique() == 1 and len(untrained) == len(decode_grid(experiment))
    assert (untrained["phase"] == "decode").all() and (untrained["stage_index"] == 0).all()
    assert set(untrained["stage"]) == set(untrained["ordering"]) == {"untrained"}
    assert not untrained["is_baseline"].any() and untrained["decode_reused"].eq(False).all()
    assert sorted(map(tuple, untrained[["toxic_penalty", "copy_penalty"]].to_numpy())) == sorted(
        map(tuple, decode_grid(experiment)))
    trained_columns = {c for c in _trained(df) if c.startswith("eval_")}
    assert trained_columns - {"eval_loss", "eval_perplexity"} <= set(untrained.columns)
    assert untrained["objective"].notna().all() and all(checkpoint_of(exp_dir, r) is None for _, r in untrained.iterrows())
    # Its stored outputs are what the shared untrained model writes under that decoding.
    row = untrained[untrained["toxic_penalty"] == math.inf].iloc[0]
    prepared_validation = pd.read_parquet(exp_dir / DATA_DIR / "stages" / "validation.parquet")
    lexicon = Lexicon.load(exp_dir / DATA_DIR / "lexicon.json")
    decoding = best_config(experiment, row).decoding
    # the base the driver recorded: the one the trained trials started from (built with the config's
    # model.embedded.sources, which an untrained row once left out and so built a base of its own)
    base_dir = recorded_base(exp_dir / DATA_DIR)
    assert base_dir is not None and (Path(base_dir) / "build_report.json").is_file()
    model, tokenizer = load_untrained(experiment, base_dir=base_dir)
    scorer = get_scorer(experiment.metrics, lexicon)
    _, predictions = predict(model, tokenizer, prepared_validation, decoding, scorer,
                             toxic_token_ids(lexicon, tokenizer, decoding), experiment.model.max_source_length)
    assert list(predictions["output"]) == list(read_predictions(exp_dir / row["predictions"])["output"])


@pytest.mark.slow
def test_checkpoint_of_finds_stage_and_decode_rows(confirmed, tmp_path: Path) -> None:
    exp_dir, out, _ = confirmed
    df = _trained(load_results(exp_dir))
    for _, row in df.iterrows():
        path = checkpoint_of(exp_dir, row)
        assert path is not None and path.is_dir(), (row["trial_id"], row["phase"], row["stage_index"])
        # The stage the row scored: stage k's directory, in a checkpoint that finished k stages.
        assert path.name == f"stage-{int(row['stage_index']) - 1:02d}-{row['stage']}"
        state = json.loads((path.parents[1] / "curriculum_state.json").read_text())
        assert len(state["stages"]) == int(row["stage_index"])
        assert (path / "adapter_model.safetensors").is_file()
    # A decoding row scores its trial's final weights.
    decode = df[df["phase"] == "decode"].iloc[0]
    final = df[(df["trial_id"] == decode["trial_id"]) & (df["phase"] == "stage")]
    assert checkpoint_of(exp_dir, decode) == checkpoint_of(exp_dir, final.loc[final["stage_index"].idxmax()])

    # The report and the file beside best_config.yaml name the best row's checkpoint.
    best = best_row(load_results(exp_dir), load_config(exp_dir / "experiment.yaml").sweep)
    note = json.loads((out / "best_checkpoint.json").read_text())
    assert note["checkpoint"] == (str(checkpoint_of(exp_dir, best)) if best.get("is_untrained") != True else None)  # noqa: E712
    assert note["trial_id"] == best["trial_id"]
    if note["checkpoint"] is not None:
        assert f"Checkpoint: `{note['checkpoint']}`" in (out / "report.md").read_text()
    else:
        assert "**No schedule beat the untrained base on validation**" in (out / "report.md").read_text()

    # The Ray Train layout (train/train-<id>/checkpoint_<time>/) is found too; retention → None.
    copy = tmp_path / "sweep"
    shutil.copytree(exp_dir, copy, ignore=shutil.ignore_patterns("data", "work"))
    row = df[df["phase"] == "stage"].iloc[0]
    trial_dir = copy / row["trial_dir"]
    train_dir = copy / "train" / f"train-{row['trial_id']}"
    train_dir.mkdir(parents=True)
    for k, ckpt in enumerate(sorted(trial_dir.glob("checkpoint_*"))):
        ckpt.rename(train_dir / f"checkpoint_2026-01-01_00-00-0{k}.000000")
    found = checkpoint_of(copy, row)
    assert found is not None and found.is_relative_to(train_dir.resolve())
    shutil.rmtree(found.parents[1])
    assert checkpoint_of(copy, row) is None


@pytest.mark.slow
def test_confirmation_generates_only_for_test_and_holdout_rows(confirmed) -> None:
    exp_dir, out, holdout = confirmed
    preds = pd.read_parquet(out / "confirmation_predictions.parquet")
    stages = exp_dir / DATA_DIR / "stages"
    test = pd.read_parquet(stages / "test.parquet")
    seen = pd.concat([pd.read_parquet(stages / f"{name}.parquet") for name in ("full", "validation")])
    holdout_ids = set(load_pairs(DataConfig(), str(holdout))["id"])
    on_test = preds[preds["dataset"] == "test"]
    on_holdout = preds[preds["dataset"] == f"holdout:{holdout.name}"]
    assert len(on_test) + len(on_holdout) == len(preds)
    assert set(preds["system"]) == _systems(exp_dir)
    for system, rows in on_test.groupby("system"):
        assert sorted(rows["id"]) == sorted(test["id"]), system
        assert set(rows["input"]) == set(test["toxic"])
    for system, rows in on_holdout.groupby("system"):
        assert set(rows["id"]) == holdout_ids, system
    assert not set(on_test["id"]) & set(seen["id"])
    # STA comes from the sweep's independent judge here too, reference-free holdout rows included.
    assert preds["judge_toxicity"].notna().all()
    np.testing.assert_allclose(preds["sta"], 1 - preds["judge_toxicity"])


@pytest.mark.slow
def test_confirmation_intervals_and_holdout_without_references(confirmed) -> None:
    exp_dir, out, holdout = confirmed
    table = pd.read_parquet(out / "confirmation.parquet")
    assert len(pd.read_csv(out / "confirmation.csv")) == len(table)
    finite = table.dropna(subset=["estimate", "low", "high"])
    assert len(finite) > 0.5 * len(table[table["kind"] != "seeds"])
    assert ((finite["low"] <= finite["estimate"] + 1e-12) & (finite["estimate"] <= finite["high"] + 1e-12)).all()
    test = table[(table["dataset"] == "test") & (table["kind"] == "score")]
    langs = set(pd.read_parquet(exp_dir / DATA_DIR / TEST_SPLIT)["lang"])
    assert set(test["lang"]) == langs | {"all"}
    # Every comparison the report makes has an interval and a verdict.
    diffs = table[(table["dataset"] == "test") & (table["kind"] == "difference") & (table["lang"] == "all")]
    assert set(diffs["system"]) == {f"best − {s}" for s in _systems(exp_dir) & {"baseline", "untrained", "delete"}}
    assert set(diffs["metric"]) == {"j", "copy"} and diffs["text"].str.len().gt(0).all()

    # corpus chrF of the best system, recomputed from its stored outputs with sacrebleu
    preds = pd.read_parquet(out / "confirmation_predictions.parquet")
    best = preds[(preds["dataset"] == "test") & (preds["system"] == BEST)]
    refs = [list(r) for r in best["references"]]
    chrf = CHRF().corpus_score(list(best["output"]), ref_streams(refs)).score
    stored = test[(test["system"] == BEST) & (test["lang"] == "all") & (test["metric"] == "chrf")]["estimate"]
    assert stored.iloc[0] == pytest.approx(chrf)

    # The holdout has no references: nothing reference-based is scored, the rest is.
    held = table[(table["dataset"] == f"holdout:{holdout.name}") & (table["kind"] == "score")]
    by_metric = held.groupby("metric")["estimate"]
    for metric in ("chrf", "bleu", "j", "bertscore_f1"):
        assert by_metric.get_group(metric).isna().all(), metric
    for metric in ("sta", "sim", "copy", "degenerate"):
        assert np.isfinite(by_metric.get_group(metric)).all(), metric
    rows = preds[preds["dataset"] == f"holdout:{holdout.name}"]
    assert rows["references"].map(len).eq(0).all()
    assert rows["chrf"].isna().all() and rows["j"].isna().all()
    assert rows[["sta", "sim", "copy"]].notna().all().all()

    report = (out / "report.md").read_text()
    assert "## Confirmation on untouched data" in report and f"### holdout:{holdout.name}" in report
    for text in diffs["text"]:
        assert text in report
    if "baseline" not in _systems(exp_dir):  # the objective picked the baseline: said in plain words
        assert "no schedule beat the baseline" in report
    if "untrained" not in _systems(exp_dir):  # likewise the untrained base
        assert "no schedule beat the untrained base" in report


@pytest.mark.slow
def test_detox_with_the_checkpoint_reproduces_a_final_stage_row(confirmed, tmp_path: Path) -> None:
    """The documented reuse, ``raydetox detox --model <checkpoint> --config best_config.yaml``, rewrites the
    validation inputs exactly as the trial did: every metric of the row comes out the same."""
    exp_dir, _, _ = confirmed
    experiment = load_config(exp_dir / "experiment.yaml")
    df = _trained(load_results(exp_dir))
    # A final-stage row that bans toxic tokens: the lexicon must be found beside the checkpoint.
    decode = df[(df["phase"] == "decode") & (df["toxic_penalty"] == math.inf)]
    row = decode.loc[decode["objective"].idxmax()]
    config = tmp_path / "best_config.yaml"
    dump_config(best_config(experiment, row), config)
    validation = pd.read_parquet(exp_dir / DATA_DIR / "stages" / "validation.parquet")
    inputs, outputs = tmp_path / "validation.csv", tmp_path / "outputs.csv"
    validation[["id", "toxic"]].to_csv(inputs, index=False)
    checkpoint = checkpoint_of(exp_dir, row)
    assert main(["detox", "--model", str(checkpoint), "--config", str(config), str(inputs), "--column", "toxic",
                 "--out", str(outputs)]) == 0
    written = read_table(outputs)  # a table in gives a table out: one record per input, with its id
    assert list(written["id"]) == list(validation["id"])
    rewritten = list(written["output"])
    # The very sentences the trial wrote for this row (its stored predictions), in the same order.
    stored = read_predictions(exp_dir / row["predictions"])
    assert list(stored["id"]) == list(validation["id"]) and rewritten == list(stored["output"])
    scorer = get_scorer(experiment.metrics, Lexicon.load(exp_dir / DATA_DIR / "lexicon.json"))
    scores = scorer.score(list(validation["toxic"]), rewritten, [list(r) for r in validation["refs"]],
                          list(validation["lang"]), prefix="eval_")
    # Text metrics come out exactly; BERTScore embeds in float32, batched differently
    # in this process than in the trial, so it agrees to float32 precision.
    for key in ("eval_copy_rate", "eval_exact_match", "eval_chrf", "eval_bleu", "eval_toxicity"):
        assert scores[key] == row[key], key
    for key in ("eval_bertscore_f1", "eval_bertscore_src_f1"):
        assert scores[key] == pytest.approx(row[key], abs=1e-6), key


def test_a_holdout_of_toxic_inputs_needs_an_empty_reference_column_and_says_so(shared_data: Path, tmp_path: Path) -> None:
    inputs = pd.read_csv(shared_data / "textdetox_inputs" / "textdetox2024_test_inputs.tsv", sep="\t",
                         keep_default_na=False).groupby("lang").head(2)
    bare = tmp_path / "inputs.tsv"
    inputs[["toxic_sentence", "lang"]].to_csv(bare, sep="\t", index=False)
    with pytest.raises(DataError, match="a holdout of toxic inputs only still needs a reference column") as err:
        load_holdout(bare)
    assert "data.neutral_columns" not in str(err.value), "analyze takes no --set: no hint it cannot follow"
    inputs.assign(neutral_sentence="").to_csv(bare, sep="\t", index=False)
    held = load_holdout(bare)
    assert len(held.pairs) == len(inputs) and not any(len(r) for r in held.pairs["refs"])
    inputs.to_csv(bare, sep="\t", index=False)  # TextDetox's own: the input repeated as a placeholder
    assert not any(len(r) for r in load_holdout(bare).pairs["refs"])


def test_a_lost_checkpoint_is_refused_with_the_way_to_get_it_back(tmp_path: Path) -> None:
    from raydetox.config import DecodingConfig
    from raydetox.confirm import _checkpoint_runs
    from raydetox.errors import ResultsError

    trial = tmp_path / "results" / "trial_a"
    trial.mkdir(parents=True)
    row = {"trial_id": "a", "phase": "stage", "stage_index": 1, "stage": "full", "toxic_penalty": 0.0,
           "copy_penalty": 0.0, "eval_bertscore_f1": 0.8, "eval_copy_rate": 0.2}
    (trial / "result.json").write_text(json.dumps(row) + "\n")
    (trial / "params.json").write_text(json.dumps({"schedule": [{"stage": "full", "epochs": 1.0, "lr": 1e-3}]}))
    df = load_results(tmp_path / "results")
    with pytest.raises(ResultsError, match="retention removed it; re-train it with best_config.yaml"):
        _checkpoint_runs(tmp_path / "results", df, df.iloc[0], BEST, DecodingConfig(), [])
    # best_config.yaml re-trains the best row, not a reference point's.
    with pytest.raises(ResultsError, match="higher training.keep_checkpoints to keep the baseline's"):
        _checkpoint_runs(tmp_path / "results", df, df.iloc[0], "baseline", DecodingConfig(), [])


def test_paired_comparison_on_a_crafted_difference() -> None:
    rng = np.random.default_rng(7)
    base = rng.uniform(0.1, 0.6, 300)
    gain = rng.normal(0.05, 0.02, 300)  # the chosen schedule is better on every sentence but a few
    diff, said = compare(base + gain, base, "j", "baseline")
    assert said.outcome == "better" and diff.contains(float(gain.mean()))
    assert diff.estimate == pytest.approx(gain.mean())
    # Copy rate: lower is better.
    copies = (rng.uniform(size=300) < 0.6).astype(float)
    fewer = copies * (rng.uniform(size=300) < 0.5)
    assert compare(fewer, copies, "copy", "untrained")[1].outcome == "better"
    assert compare(copies, fewer, "copy", "untrained")[1].outcome == "worse"
    # Sentences without a score on either side are left out; none left: no comparison.
    a = np.where(rng.uniform(size=300) < 0.2, np.nan, base + gain)
    assert compare(a, base, "j", "baseline")[0].n == int(np.isfinite(a).sum())
    assert compare(np.full(3, np.nan), base[:3], "j", "baseline") == (None, None)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_seed_rows_group_runs_of_one_variant() -> None:
    common = {"phase": "stage", "stage_index": 2, "stage": "full", "toxic_penalty": 0.0, "copy_penalty": 0.0}
    rows = [
        {"trial_id": "a", "config/variant/ordering": "easy>full", "config/seed": 0, **common},
        {"trial_id": "b", "config/variant/ordering": "easy>full", "config/seed": 1, **common},
        {"trial_id": "c", "config/variant/ordering": "hard>full", "config/seed": 0, **common},
        {"trial_id": "b", "config/variant/ordering": "easy>full", "config/seed": 1, **{**common, "stage_index": 1}},
    ]
    df = _frame(rows)
    found = seed_rows(df, df.iloc[1])
    assert found["trial_id"].tolist() == ["b", "a"] and (found["stage_index"] == 2).all()
    assert [seed_of(r) for _, r in found.iterrows()] == [1, 0]
    assert seed_rows(df, df.iloc[2])["trial_id"].tolist() == ["c"]
    assert seed_of(df.drop(columns="config/seed").iloc[0]) == "a"


def test_seeds_are_pooled_per_sentence_and_summarised_across_seeds() -> None:
    n = 40
    rng = np.random.default_rng(3)
    pairs = pd.DataFrame({"id": [f"x{i}" for i in range(n)], "lang": ["en"] * n, "toxic": ["t"] * n,
                          "refs": [["r"]] * n})
    s = EvalSet("test", Path("test.parquet"), pairs)
    cols = list(SENTENCE_COLUMNS)
    frames, stats = [], {}
    for system, trial in (("best", "s0"), ("best", "s1"), ("best", "s2"), ("baseline", "b0")):
        scores = pd.DataFrame(rng.uniform(size=(n, len(cols))), columns=cols)
        frames.append(scores.assign(system=system, trial_id=trial, seed=trial, row=np.arange(n)))
        stats.setdefault(system, {})[trial] = rng.integers(1, 20, size=(n, 24)).astype(float)
    preds = pd.concat(frames, ignore_index=True)
    table = pd.DataFrame(_summarise(s, preds, stats, {"best": {}, "baseline": {}}, n_resamples=200, seed=0))
    best = preds[preds["system"] == "best"]
    score = table[(table["kind"] == "score") & (table["system"] == "best") & (table["lang"] == "all")]
    assert score.set_index("metric").loc["j", "estimate"] == pytest.approx(best["j"].mean())
    seeds = table[table["kind"] == "seeds"].set_index("metric")
    assert set(table.loc[table["kind"] == "seeds", "system"]) == {"best"}  # the baseline ran once
    per_seed = best.groupby("trial_id")["j"].mean()
    assert seeds.loc["j", "n"] == 3 and seeds.loc["j", "estimate"] == pytest.approx(per_seed.mean())
    assert seeds.loc["j", "std"] == pytest.approx(per_seed.std())
    assert seeds.loc["j", "low"] < per_seed.mean() < seeds.loc["j", "high"]


def test_a_set_where_only_some_rows_have_references_compares_sta_too() -> None:
    """J needs a reference, STA does not: in a mixed set both are compared (J over the rows with one)."""
    n = 40
    rng = np.random.default_rng(4)
    pairs = pd.DataFrame({"id": [f"x{i}" for i in range(n)], "lang": ["en"] * n, "toxic": ["t"] * n,
                          "refs": [["r"]] * (n // 2) + [[]] * (n - n // 2)})
    s = EvalSet("holdout:mixed", Path("mixed.tsv"), pairs)
    cols = list(SENTENCE_COLUMNS)
    frames, stats = [], {}
    for system in ("best", "baseline"):
        scores = pd.DataFrame(rng.uniform(size=(n, len(cols))), columns=cols)
        scores.loc[n // 2:, "j"] = np.nan  # no reference, no J
        frames.append(scores.assign(system=system, trial_id=system, seed=0, row=np.arange(n)))
        stats[system] = {system: rng.integers(1, 20, size=(n, 24)).astype(float)}
    preds = pd.concat(frames, ignore_index=True)
    table = pd.DataFrame(_summarise(s, preds, stats, {"best": {}, "baseline": {}}, n_resamples=200, seed=0))
    diffs = table[(table["kind"] == "difference") & (table["lang"] == "all")].set_index("metric")
    assert set(diffs.index) == {"j", "copy", "sta"}
    assert diffs.loc["j", "n"] == n // 2 and diffs.loc["sta", "n"] == n == diffs.loc["copy", "n"]
