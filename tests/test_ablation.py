"""Ablations as a sweep axis: config validation, each cleaning arm prepared once with the same evaluation
rows, the effect table on a crafted results table with a known effect, and a tiny end-to-end sweep."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raydetox.ablation import (
    CLEANING_OFF,
    ablation_effects,
    check_paired,
    baseline_epochs_of,
    matched_pairs,
    prepare_arms,
    search_space,
    trial_arms,
)
from raydetox.config import ConfigError, config_from_dict, config_to_dict, load_config
from raydetox.data.prepare import load_prepared
from raydetox.results import CLEANING_OFF_DATA_DIR, decoding_arm, write_predictions
from tests.tiny import tiny_config


def _sweep_cfg(**sweep):
    return config_from_dict({"sweep": sweep}, origin="test.yaml")


# ------------------------------------------------------------------------------------------------ config


def test_the_ablations_example_is_the_quickstart_but_its_sweep() -> None:
    """experiments/ablations.yaml measures the quickstart's setting: the same data, lexicon, split, base
    (so its cached base and judge are reused), decoding and judge; only its sweep and retention differ."""
    experiments = Path(__file__).resolve().parents[1] / "experiments"
    mine = config_to_dict(load_config(experiments / "ablations.yaml"))
    theirs = config_to_dict(load_config(experiments / "quickstart.yaml"))
    for section in (mine, theirs):
        section.pop("name"), section.pop("sweep"), section["training"].pop("keep_checkpoints")
    assert mine == theirs


def test_ablation_keys_are_validated_at_load() -> None:
    cfg = _sweep_cfg(ablations={"factors": ["cleaning", "curriculum", "decoding_controls"]})
    assert cfg.sweep.ablations.factors == ["cleaning", "curriculum", "decoding_controls"]
    assert cfg.sweep.ablations.decoding_controls.toxic_penalty == float("inf")
    assert _sweep_cfg().sweep.ablations is None
    bad = [
        ({"factors": ["cleaning", "lexicon"]}, "key 'sweep.ablations.factors.1'"),
        ({"factors": ["cleaning", "cleaning"]}, "listed twice"),
        ({"factors": []}, "key 'sweep.ablations.factors'"),
        ({}, "key 'sweep.ablations.factors'"),
        ({"factors": ["decoding_controls"], "decoding_controls": {"toxic_penalty": 0, "copy_penalty": 0}},
         "key 'sweep.ablations.decoding_controls.toxic_penalty': both penalties are 0"),
        ({"factors": ["decoding_controls"], "decoding_controls": {"copy_penalty": -1}},
         "key 'sweep.ablations.decoding_controls.copy_penalty'"),
        ({"factors": ["cleaning"], "seeds": [0]}, "key 'sweep.ablations.seeds': unknown key"),
    ]
    for ablations, message in bad:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
            _sweep_cfg(ablations=ablations)
        assert str(err.value).startswith("test.yaml: ")
    with pytest.raises(ConfigError, match="key 'sweep.ablations': factor 'curriculum' .* needs sweep.include_baseline"):
        _sweep_cfg(ablations={"factors": ["curriculum"]}, include_baseline=False)
    with pytest.raises(ConfigError, match="key 'sweep.ablations': needs sweep.decode_reuse"):
        _sweep_cfg(ablations={"factors": ["cleaning"]}, decode_reuse=False)


def test_arms_of_trials_and_rows() -> None:
    cfg = _sweep_cfg(ablations={"factors": ["cleaning", "curriculum", "decoding_controls"],
                                "decoding_controls": {"toxic_penalty": 2.0, "copy_penalty": 0.0}})
    assert search_space(cfg.sweep) == {"ablation_cleaning": ["on", "off"]}
    config = {"ablation_cleaning": "off", "variant": {"is_baseline": True}}
    assert trial_arms(config, cfg.sweep.ablations.factors) == {"ablation_cleaning": "off", "ablation_curriculum": "off"}
    untrained = {"ablation_cleaning": "on", "variant": {"is_baseline": False, "is_untrained": True}}
    assert trial_arms(untrained, cfg.sweep.ablations.factors) == {"ablation_cleaning": "on"}  # no schedule: no arm
    assert decoding_arm(2.0, 0.0, cfg.sweep) == {"ablation_decoding_controls": "on"}
    assert decoding_arm(0.0, 0.0, cfg.sweep) == {"ablation_decoding_controls": "off"}
    assert decoding_arm(2.0, 1.0, cfg.sweep) == {"ablation_decoding_controls": None}
    assert decoding_arm(2.0, 0.0, _sweep_cfg().sweep) == {}


# -------------------------------------------------------------------------------------------- data arms


def test_cleaning_arms_are_prepared_once_with_identical_evaluation_rows(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path
) -> None:
    cfg = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, rows_per_lang=40,
                      **{"sweep.ablations": {"factors": ["cleaning"]}, "cleaning.drop_already_neutral": True})
    from raydetox.data.prepare import prepare

    sweep_dir = tmp_path / "sweep"
    on = prepare(cfg, sweep_dir / "data")
    arms = prepare_arms(cfg, sweep_dir, on)
    assert set(arms) == {"on", "off"} and Path(arms["off"]) == (sweep_dir / CLEANING_OFF_DATA_DIR).resolve()
    off = load_prepared(arms["off"])
    for split in ("validation", "test"):
        pd.testing.assert_frame_equal(getattr(on, split)[["id", "lang", "toxic", "neutral"]],
                                      getattr(off, split)[["id", "lang", "toxic", "neutral"]])
    # The uncleaned arm trains on every row the cleaning choices dropped from the train split.
    on_dropped = on.dropped[on.dropped["split"] == "train"]
    chosen = on_dropped[on_dropped["reason"].isin(["duplicate", "identical", "already_neutral", "still_toxic",
                                                   "noisy"])]
    assert len(chosen) > 0, "the slice must give cleaning something to drop"
    assert set(chosen["id"]) <= set(off.stages["full"]["id"])
    assert len(off.stages["full"]) == len(on.stages["full"]) + len(chosen)
    off_train_dropped = off.dropped[off.dropped["split"] == "train"]
    assert not off_train_dropped["reason"].isin([k.removeprefix("drop_") for k in CLEANING_OFF]).any()
    assert len(off.dropped) + len(off.stages["full"]) + len(off.validation) + len(off.test) == (
        len(on.dropped) + len(on.stages["full"]) + len(on.validation) + len(on.test))
    # Prepared once: a resumed sweep (no fresh data) reuses the arm on disk.
    manifest = Path(arms["off"]) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert prepare_arms(cfg, sweep_dir, None) == arms
    assert manifest.stat().st_mtime_ns == stamp
    # Without a cleaning ablation there is one arm and nothing else is prepared.
    plain = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, rows_per_lang=40)
    assert prepare_arms(plain, tmp_path / "plain", None) == {"on": str((tmp_path / "plain" / "data").resolve())}
    # Arms that do not evaluate on the same rows are refused.
    off.validation = off.validation.iloc[1:]
    with pytest.raises(AssertionError, match="validation rows differ"):
        check_paired(on, off)


def test_multi_reference_data_whose_arms_would_need_two_bases_is_one_error(
    shared_data: Path, tmp_path: Path, embedded_cache: Path
) -> None:
    """English ParaDetox has up to 3 references a row: cleaning drops some rows with their extra references,
    so the uncleaned arm's training texts differ, and the arms would not share one embedded base."""
    from raydetox.data.io import DataError
    from raydetox.data.prepare import prepare

    for expand in (False, True):
        cfg = tiny_config(shared_data / "paradetox" / "paradetox.tsv", tmp_path / "runs", embedded_cache,
                          rows_per_lang=400, **{"sweep.ablations": {"factors": ["cleaning"]},
                                                "data.default_lang": "en", "data.expand_refs": expand})
        sweep_dir = tmp_path / f"expand-{expand}"
        on = prepare(cfg, sweep_dir / "data")
        if not expand:
            with pytest.raises(DataError, match="data-cleaning-off: the uncleaned arm's pretraining texts or pairs differ.*"
                                                "data.expand_refs: true"):
                prepare_arms(cfg, sweep_dir, on)
        else:  # one training row per reference: the arms' texts agree
            assert set(prepare_arms(cfg, sweep_dir, on)) == {"on", "off"}


# ---------------------------------------------------------------------------------------- effect table


def _crafted_sweep(tmp_path: Path, n: int = 80, seeds: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    """Decode rows of a cleaning × decoding_controls ablation whose predictions hold known sentence values:
    cleaning on raises J by 0.1 on every sentence and lowers the copy rate by a quarter of the sentences;
    decoding controls change BERTScore only by zero-mean noise."""
    rng = np.random.default_rng(0)
    base_j = rng.uniform(0.2, 0.6, n)
    base_copy = (rng.uniform(size=n) < 0.5).astype(float)
    base_bs = rng.uniform(0.6, 0.9, n)
    rows = []
    for seed in seeds:
        for cleaning in ("on", "off"):
            for controls, (toxic, copy) in (("on", (float("inf"), 1.0)), ("off", (0.0, 0.0))):
                j = base_j + (0.1 if cleaning == "on" else 0.0) + rng.normal(0, 0.01, n)
                copies = base_copy.copy()
                if cleaning == "on":
                    copies[np.flatnonzero(base_copy)[: n // 4]] = 0.0
                bs = base_bs + rng.normal(0, 0.02, n)
                trial = f"t{seed}{cleaning}"
                rel = f"predictions/{trial}/decode-tox{toxic}-copy{copy}.parquet"
                frame = pd.DataFrame({
                    "id": [f"s{i}" for i in range(n)], "lang": "en", "input": "x", "output": "y",
                    "references": json.dumps(["y"]), "copy": copies, "j": j, "bertscore_f1": bs,
                })
                write_predictions(frame.sample(frac=1, random_state=seed), tmp_path / rel)  # any row order
                rows.append({
                    "trial_id": trial, "phase": "decode", "stage_index": 2, "toxic_penalty": toxic,
                    "copy_penalty": copy, "seed": seed, "config/seed": seed, "config/ablation_cleaning": cleaning,
                    "config/variant/ordering": "easy>full", "ablation_cleaning": cleaning,
                    "ablation_decoding_controls": controls, "predictions": rel, "eval_copy_rate": copies.mean(),
                    "eval_j": j.mean(), "eval_bertscore_f1": bs.mean(),
                })
    # A stage row and a decode row outside both decoding arms take no part.
    rows.append({**rows[0], "phase": "stage", "stage_index": 1})
    rows.append({**rows[0], "toxic_penalty": 2.0, "ablation_decoding_controls": None})
    return pd.DataFrame(rows)


def test_effect_table_has_the_known_sign_and_interval(tmp_path: Path) -> None:
    df = _crafted_sweep(tmp_path)
    sweep = _sweep_cfg(ablations={"factors": ["cleaning", "decoding_controls"]}).sweep
    pairs = matched_pairs(df, "cleaning", ["cleaning", "decoding_controls"])
    assert len(pairs) == 6  # 3 seeds × 2 decoding arms
    for i, j in pairs:
        on, off = df.loc[i], df.loc[j]
        assert (on["ablation_cleaning"], off["ablation_cleaning"]) == ("on", "off")
        assert on["config/seed"] == off["config/seed"] and on["toxic_penalty"] == off["toxic_penalty"]
    effects = ablation_effects(df, sweep, tmp_path, n_resamples=2000).set_index(["factor", "metric"])
    assert list(effects.index) == [(f, m) for f in ("cleaning", "decoding_controls")
                                   for m in ("copy_rate", "j", "bertscore_f1")]
    j = effects.loc[("cleaning", "j")]
    assert j["effect"] == pytest.approx(0.1, abs=0.005) and 0.09 < j["sentence_low"] < 0.1 < j["sentence_high"] < 0.11
    assert 0 < j["seed_low"] < 0.1 < j["seed_high"] and j["pairs"] == 6 and j["seeds"] == 3 and j["sentences"] == 80
    assert "cleaning on is significantly better than cleaning off on j" in j["verdict"]
    copy = effects.loc[("cleaning", "copy_rate")]
    assert copy["effect"] == pytest.approx(-0.25) and copy["sentence_high"] < 0
    assert "significantly better" in copy["verdict"]  # lower copy rate is better
    noise = effects.loc[("decoding_controls", "bertscore_f1")]
    assert noise["sentence_low"] < 0 < noise["sentence_high"] and abs(noise["effect"]) < 0.01
    assert "significantly" not in noise["verdict"]
    # The "on" mean is over the "on" rows of the matched pairs (both decoding arms' cleaning arms).
    on_rows = [i for i, _ in matched_pairs(df, "decoding_controls", ["cleaning", "decoding_controls"])]
    assert effects.loc[("decoding_controls", "j"), "on_mean"] == pytest.approx(df.loc[on_rows, "eval_j"].mean())


def test_curriculum_pairs_each_curriculum_variant_with_the_baseline_of_its_seed_and_arms(tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1):
        variants = (("easy>full", False, 0.30), ("hard>full", False, 0.34), ("baseline:full", True, 0.2))
        for ordering, baseline, j in variants:
            for controls, toxic in (("on", float("inf")), ("off", 0.0)):
                rows.append({
                    "trial_id": f"{ordering}-{seed}", "phase": "decode", "stage_index": 1 if baseline else 2,
                    "toxic_penalty": toxic, "copy_penalty": 0.0, "seed": seed, "config/seed": seed,
                    "config/variant/ordering": ordering, "config/variant/is_baseline": baseline,
                    "ablation_curriculum": "off" if baseline else "on", "ablation_decoding_controls": controls,
                    "eval_j": j + 0.01 * seed + (0.05 if controls == "on" else 0.0),
                })
    for controls, toxic in (("on", float("inf")), ("off", 0.0)):
        # The untrained base's rows, as sweeps before the fix labelled them ("curriculum on"); no lr.
        rows.append({"trial_id": "untrained-0", "phase": "decode", "stage_index": 0, "toxic_penalty": toxic,
                     "copy_penalty": 0.0, "seed": 0, "config/seed": 0, "config/variant/ordering": "untrained",
                     "config/variant/is_baseline": False, "is_untrained": True, "ablation_curriculum": "on",
                     "ablation_decoding_controls": controls, "eval_j": 0.9})
    df = pd.DataFrame(rows)
    df["config/variant/lr"] = [float("nan") if u is True else 3e-4 for u in df["is_untrained"]]
    factors = ["curriculum", "decoding_controls"]
    pairs = matched_pairs(df, "curriculum", factors)
    assert len(pairs) == 8  # 2 seeds × 2 decoding arms × 2 curriculum variants, each against its baseline
    for i, j in pairs:
        assert df.at[j, "config/variant/is_baseline"] and not df.at[i, "config/variant/is_baseline"]
        assert (df.at[i, "seed"], df.at[i, "toxic_penalty"]) == (df.at[j, "seed"], df.at[j, "toxic_penalty"])
    assert len(matched_pairs(df, "decoding_controls", factors)) == 6  # within each trial
    sweep = _sweep_cfg(ablations={"factors": factors, "decoding_controls": {"copy_penalty": 0.0}}).sweep
    effects = ablation_effects(df, sweep, tmp_path, n_resamples=500).set_index(["factor", "metric"])
    assert effects.loc[("curriculum", "j"), "effect"] == pytest.approx(0.12)
    assert effects.loc[("decoding_controls", "j"), "effect"] == pytest.approx(0.05)
    assert effects.loc[("curriculum", "j"), "seeds"] == 2


def test_curriculum_pairs_only_with_the_baseline_of_its_lr_and_epochs() -> None:
    """A curriculum at lr 1e-4 is never compared with the baseline at 3e-4 (that would measure the lr),
    nor a 1-epoch curriculum with the baseline of the 2-epoch one."""
    rows = []
    for lr in (1e-4, 3e-4):
        for epochs in (1.0, 2.0):
            for ordering, baseline in (("easy>full", False), ("baseline:full", True)):
                stages = ["full"] if baseline else ["easy", "full"]
                total = epochs * 2 if baseline else epochs
                rows.append({
                    "trial_id": f"{ordering}-{lr}-{epochs}", "phase": "decode", "stage_index": len(stages),
                    "toxic_penalty": 0.0, "copy_penalty": 0.0, "seed": 0, "config/seed": 0,
                    "config/variant/ordering": ordering, "config/variant/is_baseline": baseline,
                    "config/variant/lr": lr, "config/variant/epochs": total,
                    "config/variant/schedule": json.dumps([{"stage": st, "epochs": total, "lr": lr} for st in stages]),
                    "ablation_curriculum": "off" if baseline else "on", "eval_j": 0.3,
                })
    df = pd.DataFrame(rows)
    sweep = _sweep_cfg(epochs=[1.0, 2.0], lr=[1e-4, 3e-4], lr_search="grid",
                       ablations={"factors": ["curriculum"]}).sweep
    derived = baseline_epochs_of(sweep, df)
    assert derived == {1.0: {2.0}, 2.0: {4.0}}  # the sweep's own: epochs × the 2 stages
    pairs = matched_pairs(df, "curriculum", ["curriculum"], derived)
    assert len(pairs) == 4
    for i, j in pairs:
        assert df.at[i, "config/variant/lr"] == df.at[j, "config/variant/lr"]
        assert df.at[j, "config/variant/epochs"] == 2 * df.at[i, "config/variant/epochs"]
    given = _sweep_cfg(epochs=[1.0, 2.0], baseline_epochs=[3.0, 5.0], ablations={"factors": ["curriculum"]}).sweep
    assert baseline_epochs_of(given, df) == {1.0: {3.0}, 2.0: {5.0}}  # by position
    one = _sweep_cfg(epochs=[1.0, 2.0], baseline_epochs=[4.0], ablations={"factors": ["curriculum"]}).sweep
    assert baseline_epochs_of(one, df) == {1.0: {4.0}, 2.0: {4.0}}


def test_effect_table_without_stored_predictions_keeps_the_seed_interval(tmp_path: Path) -> None:
    df = _crafted_sweep(tmp_path).drop(columns="predictions")
    sweep = _sweep_cfg(ablations={"factors": ["cleaning", "decoding_controls"]}).sweep
    effects = ablation_effects(df, sweep, tmp_path, n_resamples=500)
    assert effects["sentence_low"].isna().all() and effects["seed_low"].notna().all()
    assert effects["verdict"].str.startswith("Cannot tell").all()


def test_effect_table_of_a_partial_sweep_and_unpaired_predictions(tmp_path: Path) -> None:
    from raydetox.errors import ResultsError

    df = _crafted_sweep(tmp_path)
    sweep = _sweep_cfg(ablations={"factors": ["cleaning", "decoding_controls"]}).sweep
    # A sweep that has not finished both arms of a factor yet: its rows say so, the others are estimated.
    partial = ablation_effects(df[df["ablation_cleaning"] == "on"], sweep, tmp_path, n_resamples=100)
    cleaning = partial[partial["factor"] == "cleaning"]
    assert (cleaning["pairs"] == 0).all() and cleaning["effect"].isna().all()
    assert cleaning["verdict"].str.startswith("No pair of rows differs only in cleaning (yet)").all()
    assert partial.loc[partial["factor"] == "decoding_controls", "effect"].notna().all()
    from raydetox.plots import plot_ablation_effects

    assert plot_ablation_effects(partial, tmp_path / "partial.png").is_file()
    with pytest.raises(ValueError, match="no ablation effect to plot"):
        plot_ablation_effects(cleaning, tmp_path / "none.png")
    with pytest.raises(ResultsError, match=r"no arm column\(s\) \['ablation_curriculum'\]"):
        matched_pairs(df, "cleaning", ["cleaning", "curriculum"])
    # Two arms scored on different sentences are not paired: refused, naming the trials.
    from raydetox.results import read_predictions

    path = tmp_path / df.loc[0, "predictions"]
    write_predictions(read_predictions(path).iloc[1:].assign(references=json.dumps(["y"])), path)
    with pytest.raises(ResultsError, match="predictions of trials t0on and t0off hold different sentences"):
        ablation_effects(df, sweep, tmp_path, n_resamples=100)


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def _ray_stopped():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_tiny_ablation_sweep_writes_the_ablation_table(
    mpd_dir: Path, tmp_path: Path, embedded_cache: Path, _ray_stopped: None
) -> None:
    from raydetox.analysis import analyze
    from raydetox.results import load_results
    from raydetox.sweep import decode_grid, run_sweep

    # An extra pretraining source at a path relative to the driver's working directory, as the
    # quickstart's are: the trials (in their own directories) and the uncleaned arm start from the base
    # the driver recorded, and never re-read it.
    english = pd.read_csv(mpd_dir.parent / "paradetox" / "paradetox.tsv", sep="\t").head(40)
    english.to_csv(tmp_path / "extra.tsv", sep="\t", index=False)
    source = {"source": os.path.relpath(tmp_path / "extra.tsv"), "toxic_column": "toxic",
              "neutral_columns": ["neutral1"], "default_lang": "en"}
    cfg = tiny_config(mpd_dir, tmp_path / "runs", embedded_cache, rows_per_lang=40, **{
        "model.embedded.sources": [source],
        "sweep.orderings": [["easy", "full"]], "sweep.include_baseline": False, "sweep.seeds": [0],
        "sweep.toxic_penalty": [0.0], "sweep.copy_penalty": [0.0], "sweep.max_degenerate_rate": 1.0,
        "sweep.untrained": False,  # its single run under a cleaning ablation: tests/test_sweep.py
        "sweep.ablations": {"factors": ["cleaning", "decoding_controls"]}, "cleaning.drop_already_neutral": True,
        "ray.cpus_per_worker": 1.0,
    })
    assert decode_grid(cfg) == [[0.0, 0.0], [float("inf"), 1.0]]  # the "off" arm was in the grid already
    results = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"))
    assert len(results) == 2 and not [r for r in results if r.error]
    exp_dir = tmp_path / "sweeps" / cfg.name
    from raydetox.pretraining_corpus import recorded_base

    assert recorded_base(exp_dir / CLEANING_OFF_DATA_DIR) == recorded_base(exp_dir / "data") is not None
    df = load_results(exp_dir)
    # 2 trials (cleaning on/off) × (2 stage rows + 2 decode rows); each row records its arms.
    assert len(df) == 8 and sorted(df.groupby("ablation_cleaning").size()) == [4, 4]
    decode = df[df["phase"] == "decode"].set_index(["ablation_cleaning", "ablation_decoding_controls"])
    assert sorted(decode.index) == [("off", "off"), ("off", "on"), ("on", "off"), ("on", "on")]
    assert decode.loc[("on", "on"), "toxic_penalty"] == float("inf")
    # Each trial trained on its arm's data: the first stage's examples are its arm's easy bucket.
    first = df[(df["phase"] == "stage") & (df["stage_index"] == 1)].set_index("ablation_cleaning")
    for arm, folder in (("on", "data"), ("off", CLEANING_OFF_DATA_DIR)):
        easy = pd.read_parquet(exp_dir / folder / "stages" / "easy.parquet")
        assert first.loc[arm, "stage_examples"] == len(easy)
    assert first.loc["off", "stage_examples"] != first.loc["on", "stage_examples"]
    report = analyze(exp_dir)
    effects = pd.read_csv(report.out_dir / "ablations.csv")
    assert list(zip(effects["factor"], effects["metric"])) == [
        (f, m) for f in ("cleaning", "decoding_controls") for m in ("copy_rate", "j", "bertscore_f1")]
    assert (effects["pairs"] == 2).all() and (effects["seeds"] == 1).all() and (effects["sentences"] > 30).all()
    assert effects["sentence_low"].le(effects["effect"]).all() and effects["effect"].le(effects["sentence_high"]).all()
    assert effects["seed_low"].isna().all()  # one seed: no interval across seeds
    # The effect is the rows' own difference (no arm mixed up): recomputed from the rows.
    on, off = decode.loc[("on", "off"), "eval_j"], decode.loc[("off", "off"), "eval_j"]
    on2, off2 = decode.loc[("on", "on"), "eval_j"], decode.loc[("off", "on"), "eval_j"]
    cleaning_j = effects[(effects["factor"] == "cleaning") & (effects["metric"] == "j")].iloc[0]
    assert cleaning_j["effect"] == pytest.approx(((on - off) + (on2 - off2)) / 2)
    text = report.report.read_text()
    assert "## Ablations" in text and "![ablations](ablations.png)" in text
    assert (report.out_dir / "ablations.png").is_file()
    assert "ablations (on − off" in report.summary()
