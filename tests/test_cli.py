"""The train → evaluate → detox path and the reference systems through the `raydetox` command."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raydetox.cli import main
from raydetox.config import config_from_dict, dump_config
from raydetox.data.io import read_table
from raydetox.detox import DetoxInputs, unescape_line, write_outputs
from raydetox.errors import ResultsError
from raydetox.preflight import find_lexicon
from raydetox.sweep import _claim_experiment_dir
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, mpd_dir: Path, embedded_cache: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    dump_config(tiny_config(mpd_dir, root / "runs", embedded_cache), config)
    assert main(["train", str(config), "--out", str(root / "run"), "--baseline"]) == 0
    return config, root / "run"


def test_train_writes_runs_and_report(trained: tuple[Path, Path]) -> None:
    _, run = trained
    report = (run / "report.md").read_text()
    for name in ("curriculum", "baseline", "copy", "delete"):
        assert f"| {name}" in report, name
    stages = pd.read_csv(run / "curriculum" / "stages.csv")
    assert stages["stage"].tolist() == ["easy", "hard"]
    assert pd.read_csv(run / "baseline" / "stages.csv")["stage"].tolist() == ["full"]
    comparison = pd.read_csv(run / "comparison.csv", index_col=0)
    assert comparison.loc["copy", "copy_rate"] == 1.0


def test_evaluate_a_checkpoint_on_a_pairs_file(trained: tuple[Path, Path], tmp_path: Path, mpd_dir: Path) -> None:
    config, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--model", str(ckpt), "--data", str(mpd_dir / "en-00000-of-00001.parquet"),
                 "--config", str(config), "--set", "data.default_lang=en", "--set", "data.max_rows_per_lang=20",
                 "--decoding", "toxic_penalty=.inf", "--decoding", "num_beams=2", "--out", str(out)])
    assert code == 0
    scores = json.loads(out.read_text())
    assert scores["n"] == 20 and 0.0 <= scores["copy_rate"] <= 1.0 and "bertscore_f1/en" in scores
    # The per-sentence predictions beside the scores; the run's judge (found from the checkpoint) gave STA.
    from raydetox.results import read_predictions

    predictions = read_predictions(out.with_suffix(".predictions.parquet"))
    assert len(predictions) == 20 and predictions["copy"].mean() == pytest.approx(scores["copy_rate"])
    assert scores["sta"] == pytest.approx(1 - scores["judge_toxicity"]) and predictions["judge_toxicity"].notna().all()


def test_baselines_copy_and_delete(tmp_path: Path, mpd_dir: Path, shared_data: Path) -> None:
    out = tmp_path / "baselines.json"
    lists = f"lexicon.wordlists=['{shared_data}/lexicons/ldnoobw_v2/{{lang}}.txt']"
    code = main(["baselines", "--data", str(mpd_dir), "--set", "data.max_rows_per_lang=15", "--set", lists,
                 "--out", str(out)])
    assert code == 0
    scores = json.loads(out.read_text())
    assert scores["copy"]["copy_rate"] == 1.0
    assert scores["delete"]["toxicity"] == 0.0 and scores["delete"]["copy_rate"] < 1.0


def test_baselines_read_any_source_under_any_config_and_say_where_sta_comes_from(
    trained: tuple[Path, Path], tmp_path: Path, mpd_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A config that forces another format (every best_config.yaml says format: dir) still scores a file
    given by --data or RAYDETOX_DATA; STA from the lexicon is said on stderr, and a run's --lexicon brings
    that run's judge."""
    english = pd.read_parquet(mpd_dir / "en-00000-of-00001.parquet").head(12)
    pairs = tmp_path / "pairs.tsv"
    english.rename(columns={"toxic_sentence": "toxic", "neutral_sentence": "neutral"})[["toxic", "neutral"]].assign(
        lang="en").to_csv(pairs, sep="\t", index=False)
    config = tmp_path / "dir.yaml"
    config.write_text(f"data:\n  source: {mpd_dir}\n  format: dir\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["baselines", "--config", str(config), "--data", str(pairs)]) == 0
    assert "STA (and J) from the lexicon (no --lexicon of a run" in capsys.readouterr().err
    monkeypatch.setenv("RAYDETOX_DATA", str(pairs))
    assert main(["baselines", "--config", str(config), "--out", str(tmp_path / "env.json")]) == 0
    assert json.loads((tmp_path / "env.json").read_text())["copy"]["copy_rate"] == 1.0
    capsys.readouterr()
    _, run = trained
    assert main(["baselines", "--lexicon", str(run / "data" / "lexicon.json"), "--out", str(tmp_path / "j.json")]) == 0
    assert "STA (and J) from the lexicon" not in capsys.readouterr().err
    judged = json.loads((tmp_path / "j.json").read_text())["delete"]
    assert judged["toxicity"] == 0.0 and judged["sta"] < 1.0  # the judge still finds toxic deletions
    monkeypatch.delenv("RAYDETOX_DATA")
    assert main(["baselines"]) == 2
    assert "--data: give the pairs to score" in capsys.readouterr().err


def test_detox_rewrites_lines(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    src = tmp_path / "in.txt"
    src.write_text("you are a stupid idiot\nthis is fucking great\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["detox", "--model", str(ckpt), str(src), "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_detox_under_source_words_only_in_one_language_is_delete(
    trained: tuple[Path, Path], tmp_path: Path, mpd_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raydetox.data.lexicon import Lexicon

    _, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    # The tiny run's own lexicon may have learned no English term: give it some.
    lexicon = Lexicon.from_terms({"en": ["fuck", "fucking", "stupid", "idiot", "shit"]})
    lexicon_file = tmp_path / "lexicon.json"
    lexicon.save(lexicon_file)
    english = pd.read_parquet(mpd_dir / "en-00000-of-00001.parquet")["toxic_sentence"]
    lines = [t for t in english if lexicon.find(t, "en")][:4] + ["no term here"]
    src = tmp_path / "in.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "out.txt"
    swo = ["--decoding", "toxic_penalty=inf", "--decoding", "source_words_only=true",
           "--decoding", "source_skip_penalty=inf", "--lexicon", str(lexicon_file)]
    # With skip inf the model has no choice left: the English terms go, as the delete system drops them.
    assert main(["detox", "--model", str(ckpt), str(src), "--out", str(out), "--lang", "en", *swo]) == 0
    assert out.read_text(encoding="utf-8").splitlines() == [lexicon.remove(line, "en") for line in lines]
    assert any(lexicon.remove(line, "en") != line for line in lines), "the test needs a term to drop"
    assert main(["detox", "--model", str(ckpt), str(src), "--lang", "xx", *swo]) == 2
    assert "--lang 'xx': not a language of the lexicon" in capsys.readouterr().err


def test_bad_schedule_and_missing_input_are_one_line_errors(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, run = trained
    assert main(["train", str(config), "--out", str(tmp_path), "--schedule", "easy:1,extreme:1"]) == 2
    assert "extreme" in capsys.readouterr().err
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    assert main(["detox", "--model", str(ckpt), str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ errors and bugs

CORPUS = Path(__file__).parent / "bad_inputs"


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The stderr of a refused command: exactly one line, ``raydetox COMMAND: error: …``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("lexicon for ")]
    assert len(lines) == 1 and lines[0].startswith(f"raydetox {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def exp_config(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(f"output_dir: {tmp_path / 'runs'}\ndata:\n  default_lang: en\n")
    return path


def test_any_other_exception_is_a_bug_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A plain ValueError is no longer taken for an input problem: only the project's errors are.
    def broken(args: object) -> int:
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr("raydetox.cli.cmd_config", broken)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: an internal invariant broke" in err
    assert err.rstrip().splitlines()[-1].startswith("raydetox config: this is a bug in raydetox")


@pytest.mark.parametrize("item", ["seed=\x1f", "se\x1fed=1", "name=a\nb"])
def test_set_with_a_control_character_is_one_line(
    item: str, exp_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prepare", str(exp_config), "--set", item]) == 2
    line = _one_error_line(capsys, "prepare")
    bad = next(c for c in item if not c.isprintable())
    assert f"--set {item!r}" in line and f"control character {bad!r}" in line, line


def test_decoding_option_is_named_in_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baselines", "--data", str(CORPUS / "bom.csv"), "--decoding", "num_beams=[1"]) == 2
    line = _one_error_line(capsys, "baselines")
    assert "--decoding 'num_beams=[1': invalid YAML at line 1" in line, line


# ------------------------------------------------------------------------ cheap preconditions first


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_prepare_out_at_a_file_fails_before_reading_data(
    where: str, exp_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me\n")
    out = taken if where == "file" else taken / "data"
    # The data is malformed: had it been read first, its error would be the one printed.
    code = main(["prepare", str(exp_config), "--data", str(CORPUS / "unbalanced_quote.tsv"), "--out", str(out)])
    assert code == 2
    line = _one_error_line(capsys, "prepare")
    expected = "exists and is not a directory" if where == "file" else f"{taken} is not a directory"
    assert line.startswith(f"raydetox prepare: error: --out {out}: ") and expected in line, line
    assert taken.read_text() == "keep me\n"


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("command", ["evaluate", "detox"])
def test_model_dir_is_checked_before_any_data_is_read(
    command: str, trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    malformed = _copy_model(ckpt, tmp_path / "malformed")
    (malformed / "adapter_config.json").write_text('{"r": 4,\n "base_model_name_or_path": }')
    moved_base = _copy_model(ckpt, tmp_path / "moved-base")
    meta = json.loads((moved_base / "raydetox_model.json").read_text())
    (moved_base / "raydetox_model.json").write_text(json.dumps({**meta, "base": str(tmp_path / "gone")}))
    hub_base = _copy_model(ckpt, tmp_path / "hub-base")
    (hub_base / "raydetox_model.json").unlink()
    adapter = json.loads((hub_base / "adapter_config.json").read_text())
    (hub_base / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": "nobody/nothing"}))
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{not json")
    # A base that passes the cheap check (its config parses) but has lost its weights: the load says so.
    no_weights = _copy_model(Path(meta["base"]), tmp_path / "base-without-weights")
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    weightless = _copy_model(ckpt, tmp_path / "weightless-base")
    (weightless / "raydetox_model.json").write_text(json.dumps({**meta, "base": str(no_weights)}))
    cases = {
        tmp_path / "nonexistent": "model directory not found",
        malformed: f"{malformed / 'adapter_config.json'}: not valid JSON: Expecting value at line 2, column 29",
        moved_base: f"base model '{tmp_path / 'gone'}' not found",
        hub_base: "base model 'nobody/nothing' is neither a local folder nor in the Hugging Face cache",
        full: f"{full / 'config.json'}: not valid JSON",
    }
    # Malformed data: were it read first, its error would be the one printed.
    data = ["--data", str(CORPUS / "unbalanced_quote.tsv")] if command == "evaluate" else [str(CORPUS / "empty.tsv")]
    for model, expected in cases.items():
        assert main([command, "--model", str(model), *data]) == 2
        line = _one_error_line(capsys, command)
        assert expected in line, line
    good = tmp_path / "in.txt"
    good.write_text("you are a stupid idiot\n", encoding="utf-8")
    data = ["--data", str(CORPUS / "bom.csv")] if command == "evaluate" else [str(good)]
    assert main([command, "--model", str(weightless), *data]) == 2
    line = _one_error_line(capsys, command)
    assert f"model.name_or_path='{no_weights}': seq2seq model: cannot load: OSError: " in line, line


def test_sweep_resume_with_nothing_to_resume_says_so_first(
    exp_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "sweeps"
    code = main(["sweep", str(exp_config), "--data", str(CORPUS / "unbalanced_quote.tsv"),
                 "--storage", str(storage), "--resume"])
    assert code == 2
    line = _one_error_line(capsys, "sweep")
    assert f"{storage}/raydetox: no sweep to resume (no tuner.pkl); run without --resume first" in line, line
    # Nothing prepared (the data is malformed anyway), nothing created in the storage folder.
    assert not (storage / "raydetox").exists()


# ------------------------------------------------------------------- nothing deleted outside storage


def _fake_sweep(folder: Path, valid: bool = True) -> Path:
    """A folder holding what a raydetox sweep leaves (Tune's state beside experiment.yaml) and a result."""
    folder.mkdir(parents=True)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    if valid:
        dump_config(config_from_dict({}), folder / "experiment.yaml")
    (folder / "precious.txt").write_text("not yours to delete\n")
    return folder


def test_overwrite_never_deletes_outside_storage_nor_a_foreign_folder(
    exp_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "sweeps"
    outside = _fake_sweep(tmp_path / "elsewhere" / "raydetox")
    storage.mkdir()
    (storage / "raydetox").symlink_to(outside, target_is_directory=True)
    args = ["sweep", str(exp_config), "--data", str(CORPUS / "bom.csv"), "--storage", str(storage), "--overwrite"]
    assert main(args) == 2
    line = _one_error_line(capsys, "sweep")
    assert f"resolves to {outside}, outside the storage folder {storage}" in line, line
    assert (outside / "precious.txt").is_file() and (storage / "raydetox").is_symlink()

    (storage / "raydetox").unlink()
    foreign = _fake_sweep(storage / "raydetox", valid=False)  # Tune state, but no raydetox experiment.yaml
    assert main(args) == 2
    line = _one_error_line(capsys, "sweep")
    assert "not a raydetox sweep" in line and "--overwrite deletes only raydetox sweeps" in line, line
    assert (foreign / "precious.txt").is_file()
    (foreign / "experiment.yaml").write_text("- a list, not a raydetox config\n")
    assert main(args) == 2
    assert "not a raydetox sweep" in _one_error_line(capsys, "sweep")
    assert (foreign / "precious.txt").is_file()


def test_overwrite_deletes_a_raydetox_sweep_inside_storage(tmp_path: Path) -> None:
    storage = tmp_path / "sweeps"
    sweep = _fake_sweep(storage / "mine")
    beside = _fake_sweep(storage / "other")
    with pytest.raises(ResultsError, match="a sweep already ran here"):
        _claim_experiment_dir(str(storage), "mine", overwrite=False)
    assert (sweep / "precious.txt").is_file()
    _claim_experiment_dir(str(storage), "mine", overwrite=True)
    assert not sweep.exists() and (beside / "precious.txt").is_file()


# ---------------------------------------------------------------------- one output record per input


def test_writer_keeps_one_record_per_input_whatever_the_outputs(tmp_path: Path) -> None:
    tricky = ["a\nb", "c\r\nd", "e\\nf", "g\u2028h", "tab\there", "", "back\\slash\n", "\x85\x0b\x0c\x1c"]
    outputs = [tricky[i % len(tricky)] + f" {i}" for i in range(500)]
    inputs = DetoxInputs([f"id{i}" for i in range(500)], [f"text {i}" for i in range(500)], table=False)
    text_out = tmp_path / "out.txt"
    write_outputs(inputs, outputs, text_out, "text")
    written = text_out.read_text(encoding="utf-8")
    assert written.count("\n") == 500 and len(written.splitlines()) == 500
    assert [unescape_line(line) for line in written.split("\n")[:-1]] == outputs
    for fmt in ("csv", "tsv", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        write_outputs(DetoxInputs(inputs.ids, inputs.texts, table=True), outputs, out, fmt)
        back = read_table(out)  # the project's strict reader (quoted line breaks, one object a line)
        assert back["id"].tolist() == inputs.ids and back["output"].tolist() == outputs, fmt
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 500


def test_detox_500_inputs_give_500_records(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    texts = [f"you are a stupid idiot number {i}" + ("\nreally stupid" if i % 7 == 0 else "") for i in range(500)]
    table = tmp_path / "in.csv"
    pd.DataFrame({"idx": [f"r{i}" for i in range(500)], "text": texts}).to_csv(table, index=False)
    for out in (tmp_path / "out.csv", tmp_path / "out.jsonl"):
        assert main(["detox", "--model", str(ckpt), str(table), "--column", "text", "--out", str(out)]) == 0
        back = read_table(out)
        assert back["id"].tolist() == [f"r{i}" for i in range(500)] and back["input"].tolist() == texts
    plain = tmp_path / "in.txt"
    plain.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    assert main(["detox", "--model", str(ckpt), str(plain), "--out", str(tmp_path / "out.txt")]) == 0
    assert len((tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()) == 500


def test_detox_tables_read_properly_or_fail_in_one_line(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = trained
    ckpt = str(sorted((run / "curriculum" / "checkpoints").iterdir())[-1])
    out = tmp_path / "out.csv"
    assert main(["detox", "--model", ckpt, str(CORPUS / "semicolon.csv"), "--column", "toxic", "--out", str(out)]) == 0
    back = read_table(out)
    assert back["id"].tolist() == ["s1", "s2"] and back["input"][0] == "you are a stupid person, really"
    capsys.readouterr()
    cp1251 = CORPUS / "cp1251.csv"
    assert main(["detox", "--model", ckpt, str(cp1251), "--column", "toxic"]) == 2
    line = _one_error_line(capsys, "detox")
    assert f"error: {cp1251}: line 3: undecodable bytes" in line and "save it as UTF-8" in line, line
    assert main(["detox", "--model", ckpt, str(CORPUS / "bom.csv"), "--column", "nope"]) == 2
    assert "no column 'nope'; columns are ['toxic', 'neutral', 'lang']" in _one_error_line(capsys, "detox")
    assert main(["detox", "--model", ckpt, str(CORPUS / "bom.csv")]) == 2
    assert "name the column holding the sentences with --column" in _one_error_line(capsys, "detox")


# ------------------------------------------------------------------- the lexicon of a sweep checkpoint


@pytest.mark.parametrize("layout", ["train/train-abc/checkpoint_000001/checkpoints",
                                    "trial_abc/checkpoint_000001/checkpoints"])
def test_toxic_penalty_finds_the_sweep_lexicon_or_refuses(
    layout: str, trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = trained
    ckpt = sorted((run / "curriculum" / "checkpoints").iterdir())[-1]
    sweep = tmp_path / "sweeps" / "tiny"  # as a sweep lays it out: STORAGE/NAME/data/lexicon.json
    model = _copy_model(ckpt, sweep / layout / ckpt.name)
    src = tmp_path / "in.txt"
    src.write_text("you are a stupid idiot\n", encoding="utf-8")
    args = ["detox", "--model", str(model), str(src), "--decoding", "toxic_penalty=2"]
    assert main(args) == 2  # no lexicon anywhere above: an error, not a penalty on no token
    line = _one_error_line(capsys, "detox")
    assert "key 'decoding.toxic_penalty': 2 needs a lexicon, and none was found" in line, line
    (sweep / "data").mkdir()
    shutil.copy(run / "data" / "lexicon.json", sweep / "data" / "lexicon.json")
    assert main(args) == 0
    assert f"lexicon for decoding.toxic_penalty: {sweep / 'data' / 'lexicon.json'}" in capsys.readouterr().err
    assert find_lexicon(model) == sweep / "data" / "lexicon.json"


# --------------------------------------------------------------------------- analyze on bad results


def _results_dir(tmp_path: Path, rows: list[dict], params: object | None = None) -> Path:
    results = tmp_path / "results"
    trial = results / "trial_a"
    trial.mkdir(parents=True)
    dump_config(config_from_dict({}), results / "experiment.yaml")
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if params is not None:
        (trial / "params.json").write_text(json.dumps(params))
    return results


GOOD_ROW = {"trial_id": "a", "phase": "stage", "stage_index": 1, "stage": "full", "toxic_penalty": 0.0,
            "copy_penalty": 0.0, "eval_bertscore_f1": 0.8, "eval_copy_rate": 0.2}
SCHEDULE = {"schedule": [{"stage": "full", "epochs": 1.0, "lr": 1e-3}]}


@pytest.mark.parametrize(
    ("rows", "params", "expected"),
    [
        ([{k: v for k, v in GOOD_ROW.items() if k != "eval_copy_rate"}], SCHEDULE,
         r"result\.json: no row reports \['eval_copy_rate'\], which sweep\.objective 'bertscore_copy_bound'"),
        ([GOOD_ROW, {**GOOD_ROW, "stage_index": 2, "eval_bertscore_f1": "high"}], SCHEDULE,
         r"result\.json:2: key 'eval_bertscore_f1': expected a number, got str 'high'"),
        ([{**GOOD_ROW, "stage_index": "two"}], SCHEDULE, r"result\.json:1: key 'stage_index': expected an integer"),
        ([{**GOOD_ROW, "copy_penalty": [1]}], SCHEDULE, r"result\.json:1: key 'copy_penalty': expected a number"),
        ([{**GOOD_ROW, "trial_id": 7}], SCHEDULE, r"result\.json:1: key 'trial_id': expected text, got int 7"),
        ([GOOD_ROW], {"schedule": "full"}, r"params\.json: key 'schedule': expected a list of stages"),
        ([GOOD_ROW], {"schedule": [{"stage": "extreme", "epochs": 1, "lr": 1}]}, r"params\.json: key 'schedule\.0'"),
        ([GOOD_ROW], [1, 2], r"params\.json: expected a JSON object"),
    ],
)
def test_analyze_bad_results_is_one_line(
    rows: list[dict], params: object, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _results_dir(tmp_path, rows, params)
    assert main(["analyze", str(results)]) == 2
    line = _one_error_line(capsys, "analyze")
    assert re.search(expected, line), line


def test_resuming_with_a_changed_config_is_refused_before_ray_starts(tmp_path: Path) -> None:
    """The trials still to run would use the new values and the finished ones used the old: the analysis
    would mix two sweeps. Where and how trials run (ray.*, concurrency) may change."""
    from raydetox.sweep import _check_same_config, run_sweep

    ran = config_from_dict({"name": "exp", "sweep": {"lr": [3.0e-4]}, "decoding": {"no_repeat_ngram_size": 3}})
    exp_dir = tmp_path / "sweeps" / "exp"
    exp_dir.mkdir(parents=True)
    (exp_dir / "tuner.pkl").write_bytes(b"")  # what Tune's restore looks for
    dump_config(ran, exp_dir / "experiment.yaml")
    changed = config_from_dict({"name": "exp", "sweep": {"lr": [1.0e-3]}, "decoding": {"no_repeat_ngram_size": 0}})
    with pytest.raises(ResultsError) as err:
        run_sweep(changed, resume=True, storage_path=str(tmp_path / "sweeps"))
    msg = str(err.value)
    assert "this sweep ran with another config: decoding.no_repeat_ngram_size (3 -> 0), sweep.lr ([0.0003] -> [0.001])" in msg
    assert f"resume with the config it ran with ({tmp_path / 'sweeps'}/exp/experiment.yaml)" in msg and "--overwrite" in msg
    import ray

    assert not ray.is_initialized()
    same_work = config_from_dict({"name": "exp", "sweep": {"lr": [3.0e-4], "max_concurrent_trials": 1},
                                  "decoding": {"no_repeat_ngram_size": 3}, "ray": {"cpus_per_worker": 0.5}})
    _check_same_config(same_work, str(tmp_path / "sweeps"), "exp")  # passes


def test_an_empty_data_path_is_refused_not_ignored(
    exp_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["prepare", str(exp_config), "--data", " "]) == 2
    assert "--data: empty path" in _one_error_line(capsys, "prepare")
    monkeypatch.setenv("RAYDETOX_DATA", "")
    assert main(["prepare", str(exp_config)]) == 2
    assert "environment variable RAYDETOX_DATA is set but empty" in _one_error_line(capsys, "prepare")


def test_analyze_malformed_trial_list_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _results_dir(tmp_path, [GOOD_ROW], {**SCHEDULE, "variant": {"ordering": "full"}})
    (results / "trials.jsonl").write_text('{"trial_id": "a"}\n[1, 2]\n{"trial_id": "b"}\n')
    assert main(["analyze", str(results)]) == 2
    line = _one_error_line(capsys, "analyze")
    assert f"{results / 'trials.jsonl'}:2: expected a JSON object with a 'trial_id', got '[1, 2]'" in line, line


def test_analyze_binary_result_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _results_dir(tmp_path, [GOOD_ROW], SCHEDULE)
    (results / "trial_a" / "result.json").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["analyze", str(results)]) == 2
    assert f"{results / 'trial_a' / 'result.json'}: not UTF-8 text" in _one_error_line(capsys, "analyze")


def test_analyze_names_what_the_results_lack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two = {"schedule": [{"stage": "easy", "epochs": 1.0, "lr": 1e-3}, {"stage": "full", "epochs": 1.0, "lr": 1e-3}],
           "variant": {"ordering": "easy>full"}}
    results = _results_dir(tmp_path, [GOOD_ROW, {**GOOD_ROW, "stage_index": 2}], two)
    def trial(name: str, rows: list[dict], params: object = two) -> Path:
        (results / name).mkdir()
        (results / name / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (results / name / "params.json").write_text(json.dumps(params))
        return results / name

    trial("trial_b", [{**GOOD_ROW, "trial_id": "b", "stage": "easy"}])  # interrupted after its first stage
    trial("trial_c", [])  # started, never reported
    trial("trial_d", [{"objective": float("-inf"), "skipped": "duplicate"}])  # ran nothing, on purpose
    trial("trial_e", [{**GOOD_ROW, "trial_id": "e", "eval_bertscore_f1": None}, {**GOOD_ROW, "trial_id": "e", "stage_index": 2}])
    # The sweep listed every trial it started (a restart lists one again); trial_f's directory is gone, and
    # the driver was killed while writing the last line.
    (results / "trials.jsonl").write_text("".join(json.dumps({"trial_id": t}) + "\n" for t in "abcdefa") + '{"tri')
    assert main(["analyze", str(results)]) == 0
    out = capsys.readouterr().out
    expected = ["trial_f: started (trials.jsonl) but its directory is gone (deleted or moved?): its rows are lost",
                "trial_b: reported 1 of its 2 stages", "trial_c: no result row",
                "trial_e/result.json: stage row (stage 1, toxic_penalty 0, copy_penalty 0) has no objective"]
    assert "incomplete: 4 problem(s) in the results" in out and all(e in out for e in expected), out
    assert out.count("trial_f") == 1
    assert "trial_d" not in out and "trial_a" not in out
    report = (results / "analysis" / "report.md").read_text()
    assert "## What the results lack" in report and all(e in report for e in expected)


def test_analyze_without_confirm_removes_an_earlier_confirmation_from_its_out_dir(tmp_path: Path) -> None:
    results = _results_dir(tmp_path, [GOOD_ROW], {**SCHEDULE, "variant": {"ordering": "full"}})
    out = tmp_path / "analysis"
    out.mkdir()
    stale = [out / name for name in ("confirmation.csv", "confirmation.parquet", "confirmation_predictions.parquet")]
    for path in stale:
        path.write_text("another sweep's confirmation")
    (out / "notes.txt").write_text("the user's own")
    assert main(["analyze", str(results), "--out", str(out)]) == 0
    assert not any(p.exists() for p in stale) and (out / "notes.txt").is_file()


def test_analyze_refuses_an_out_path_under_a_file_and_a_missing_holdout_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _results_dir(tmp_path, [GOOD_ROW], SCHEDULE)
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    for out in (taken, taken / "sub"):
        assert main(["analyze", str(results), "--out", str(out)]) == 2
        assert f"--out {out}: " in _one_error_line(capsys, "analyze")
    assert main(["analyze", str(tmp_path / "no-sweep")]) == 2
    assert f"{tmp_path / 'no-sweep'}: not found (a sweep's results directory" in _one_error_line(capsys, "analyze")
    assert main(["analyze", str(taken)]) == 2
    assert f"{taken}: not a directory" in _one_error_line(capsys, "analyze")
    assert main(["analyze", str(results), "--out", str(tmp_path / "a"), "--holdout", str(tmp_path / "nope.tsv")]) == 2
    assert f"--holdout {tmp_path / 'nope.tsv'}: not found" in _one_error_line(capsys, "analyze")
    (tmp_path / "empty.tsv").write_text("")
    assert main(["analyze", str(results), "--out", str(tmp_path / "a"), "--holdout", str(tmp_path / "empty.tsv")]) == 2
    assert f"{tmp_path / 'empty.tsv'}" in _one_error_line(capsys, "analyze")
    assert not (tmp_path / "a").exists(), "refused before any analysis file is written"


def test_ray_resource_failures_are_told_apart_from_bugs() -> None:
    """An out-of-memory kill or a dead worker (also wrapped in a RayTaskError or raised from another
    error) is reported as the machine's problem, exit 3; an exception of raydetox's code inside a Ray
    task stays a bug."""
    import ray.exceptions

    from raydetox.cli import ray_resource_error

    oom = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
    assert ray_resource_error(oom) is oom
    wrapped = ray.exceptions.RayTaskError("trial", "traceback", oom)
    assert ray_resource_error(wrapped) is oom
    crashed = ray.exceptions.WorkerCrashedError()
    try:
        try:
            raise crashed
        except ray.exceptions.WorkerCrashedError as inner:
            raise RuntimeError("sweep failed") from inner
    except RuntimeError as outer:
        assert ray_resource_error(outer) is crashed
    assert ray_resource_error(ray.exceptions.RayTaskError("trial", "traceback", KeyError("x"))) is None
    assert ray_resource_error(ValueError("plain")) is None


# ------------------------------------------------------------------------ outputs, inputs and pipes


def _ckpt(trained: tuple[Path, Path]) -> str:
    return str(sorted((trained[1] / "curriculum" / "checkpoints").iterdir())[-1])


LONG = " ".join(["you are a stupid idiot"] * 30)  # well over the default model.max_source_length (64 tokens)


def test_out_folders_are_made_before_the_work_or_refused_up_front(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = trained
    src = tmp_path / "in.txt"
    src.write_text("you are a stupid idiot\n", encoding="utf-8")
    pairs = ["--data", str(CORPUS / "bom.csv"), "--set", "data.default_lang=en"]
    runs = {
        "detox": ["detox", "--model", _ckpt(trained), str(src)],
        "evaluate": ["evaluate", "--model", _ckpt(trained), "--config", str(config), *pairs],
        "baselines": ["baselines", *pairs],
    }
    for command, args in runs.items():
        out = tmp_path / command / "new" / "folders" / "out.json"
        assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
        assert out.is_file(), command
    capsys.readouterr()
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    # Malformed inputs: had they been read first, their error would be the one printed.
    bad = {"detox": ["detox", "--model", _ckpt(trained), str(CORPUS / "empty.tsv")],
           "evaluate": ["evaluate", "--model", _ckpt(trained), "--data", str(CORPUS / "unbalanced_quote.tsv")],
           "baselines": ["baselines", "--data", str(CORPUS / "unbalanced_quote.tsv")]}
    for command, args in bad.items():
        assert main([*args, "--out", str(taken / "sub" / "out.json")]) == 2
        line = _one_error_line(capsys, command)
        assert f"--out {taken / 'sub' / 'out.json'}: {taken} is not a directory" in line, line
    assert taken.read_text() == "keep me\n"


def test_detox_says_which_inputs_are_truncated_and_leaves_blank_ones_empty(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.txt"
    src.write_text(f"you are a stupid idiot\n   \n\n{LONG}\nthis is fucking great\n\t\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    capsys.readouterr()
    assert main(["detox", "--model", _ckpt(trained), str(src), "--out", str(out)]) == 0
    written = out.read_text(encoding="utf-8").split("\n")
    # One output a line, in order; the blank and whitespace-only inputs give empty outputs.
    assert len(written) == 7 and written[-1] == "" and written[1] == written[2] == written[5] == ""
    assert written[0].strip() and written[3].strip() and written[4].strip()
    err = capsys.readouterr().err
    # Without --config, the length the model was trained with (the tiny config's 32), not the default 64.
    assert ("raydetox detox: warning: 1 input exceeds model.max_source_length=32 tokens and the model sees only "
            "the first 32 (the rest of each is not rewritten and is missing from its output): lines 4\n") in err, err
    # A table: ids named; under source_words_only the tail is kept, and the warning says so.
    table = tmp_path / "in.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "text": [LONG, "   ", "you idiot"]}).to_csv(table, index=False)
    out = tmp_path / "out.jsonl"
    assert main(["detox", "--model", _ckpt(trained), str(table), "--column", "text", "--out", str(out),
                 "--decoding", "source_words_only=true", "--decoding", "no_repeat_ngram_size=0"]) == 0
    back = read_table(out)
    assert back["id"].tolist() == ["a", "b", "c"] and back["output"].tolist()[1] == ""
    err = capsys.readouterr().err
    assert "1 input exceeds model.max_source_length=32 tokens" in err and "source_words_only keeps the rest" in err
    assert err.rstrip().endswith(": ids a"), err


def test_detox_and_evaluate_cut_inputs_where_the_model_was_trained(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint records its training's model.max_source_length (the tiny config's 32): without --config
    it is the limit; --set chooses another silently; a --config that differs wins, with a warning."""
    config, _ = trained
    ckpt = Path(_ckpt(trained))
    assert json.loads((ckpt / "raydetox_model.json").read_text())["max_source_length"] == 32
    mid = " ".join(["you are a stupid idiot"] * 8)  # over 32 tokens, under 64 and under 200
    src = tmp_path / "in.txt"
    src.write_text(f"{mid}\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    capsys.readouterr()
    assert main(["detox", "--model", str(ckpt), str(src), "--out", str(out)]) == 0
    assert "1 input exceeds model.max_source_length=32 tokens" in capsys.readouterr().err
    assert main(["detox", "--model", str(ckpt), str(src), "--out", str(out), "--set", "model.max_source_length=200"]) == 0
    assert "max_source_length" not in capsys.readouterr().err
    longer = tmp_path / "longer.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["model"]["max_source_length"] = 200
    longer.write_text(yaml.safe_dump(raw))
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"id": ["m"], "toxic": [mid], "neutral": ["you are wrong"]}).to_csv(pairs, index=False)
    assert main(["evaluate", "--model", str(ckpt), "--data", str(pairs), "--config", str(longer),
                 "--set", "data.default_lang=en"]) == 0
    err = capsys.readouterr().err
    assert (f"raydetox evaluate: warning: {ckpt} was trained with model.max_source_length=32, and {longer} sets 200: "
            "inputs are cut at 200 tokens") in err, err
    assert "exceeds" not in err
    # A record that is not a positive integer: one line naming the file and the key.
    bad = tmp_path / "bad-ckpt"
    shutil.copytree(ckpt, bad)
    meta = json.loads((bad / "raydetox_model.json").read_text())
    (bad / "raydetox_model.json").write_text(json.dumps({**meta, "max_source_length": "32"}))
    assert main(["detox", "--model", str(bad), str(src), "--out", str(out)]) == 2
    line = _one_error_line(capsys, "detox")
    assert f"{bad / 'raydetox_model.json'}: key 'max_source_length' must be a positive integer, got '32'" in line, line


def test_detox_reads_one_column_blank_lines_cr_line_ends_and_refuses_nul(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.csv"
    one.write_text("text\nhello idiot\n\nNone\nnull\nN/A\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(["detox", "--model", _ckpt(trained), str(one), "--column", "text", "--out", str(out)]) == 0
    back = read_table(out)
    assert back["id"].tolist() == ["1", "2", "3", "4", "5"] and back["input"].tolist()[1:3] == ["", "None"]
    assert back["output"].tolist()[1] == ""
    old_mac = tmp_path / "cr.txt"
    old_mac.write_bytes(b"one idiot\rtwo idiot\rthree\r")
    out = tmp_path / "out.txt"
    assert main(["detox", "--model", _ckpt(trained), str(old_mac), "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"ok line\nbad\x00line\n")
    capsys.readouterr()
    assert main(["detox", "--model", _ckpt(trained), str(nul), "--out", str(tmp_path / "nul-out.txt")]) == 2
    line = _one_error_line(capsys, "detox")
    assert f"error: {nul}: line 2: NUL character (\\x00) at position 3 of 'bad\\x00line'" in line, line
    array = tmp_path / "in.json"
    array.write_text(json.dumps([{"id": "x", "text": "you idiot"}, {"id": "y", "text": ""}]), encoding="utf-8")
    assert main(["detox", "--model", _ckpt(trained), str(array), "--column", "text", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == "id,input,output"


def test_detox_refuses_an_unknown_output_suffix_first_and_takes_any_case_of_lang(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = trained
    missing = tmp_path / "nope.txt"  # read first, it would be the error
    assert main(["detox", "--model", _ckpt(trained), str(missing), "--out", str(tmp_path / "out.xlsx")]) == 2
    line = _one_error_line(capsys, "detox")
    assert f"--out {tmp_path / 'out.xlsx'}: unsupported suffix '.xlsx'; supported: .tsv, .tab, .csv," in line, line
    assert ".parquet" in line and ".txt" in line and not (tmp_path / "out.xlsx").exists()
    src = tmp_path / "in.txt"
    src.write_text("you are a stupid idiot\n", encoding="utf-8")
    lexicon = ["--lexicon", str(sorted(run.rglob("lexicon.json"))[0])]
    outs = {}
    for lang in ("en", " EN "):
        outs[lang] = tmp_path / f"out-{lang.strip()}.txt"
        assert main(["detox", "--model", _ckpt(trained), str(src), "--lang", lang, *lexicon, "--out", str(outs[lang]),
                     "--decoding", "toxic_penalty=inf", "--decoding", "toxic_ban=every_piece"]) == 0, lang
    assert outs["en"].read_text(encoding="utf-8") == outs[" EN "].read_text(encoding="utf-8")


def test_evaluate_writes_skipped_rows_beside_its_output_and_warns_of_truncation(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = trained
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"id": ["p1", "p2", "p3", "p4"],
                  "toxic": ["you are a stupid idiot", "   ", LONG, "this is fucking great"],
                  "neutral": ["you are wrong", "hello", "you are wrong", "this is great"]}).to_csv(pairs, index=False)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--model", _ckpt(trained), "--data", str(pairs), "--config", str(config),
                 "--set", "data.default_lang=en", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    skipped = tmp_path / "scores.skipped.csv"
    assert (f"raydetox evaluate: warning: skipping 1 rows (empty_toxic: 1): ['p2']; every skipped row is in "
            f"{skipped}") in err, err
    # The tiny run's config: model.max_source_length 32.
    assert "1 input exceeds model.max_source_length=32 tokens" in err and err.count(": ids p3\n") == 1, err
    rows = pd.read_csv(skipped, keep_default_na=False)
    assert rows[["id", "reason"]].values.tolist() == [["p2", "empty_toxic"]]
    assert json.loads(out.read_text())["n"] == 3


def test_baselines_skipped_rows_file_and_all_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"toxic": ["", "you are a stupid idiot", "you ass"],
                  "neutral": ["hi", "you are wrong", ""]}).to_csv(pairs, index=False)
    out = tmp_path / "b.json"
    assert main(["baselines", "--data", str(pairs), "--set", "data.default_lang=en", "--out", str(out)]) == 0
    rows = pd.read_csv(tmp_path / "b.skipped.csv", keep_default_na=False)
    assert rows[["id", "reason"]].values.tolist() == [["pairs-1", "empty_toxic"], ["pairs-3", "empty_neutral"]]
    assert f"every skipped row is in {tmp_path / 'b.skipped.csv'}" in capsys.readouterr().err
    pd.DataFrame({"toxic": ["", " "], "neutral": ["hi", "yo"]}).to_csv(pairs, index=False)
    assert main(["baselines", "--data", str(pairs), "--set", "data.default_lang=en", "--out", str(out)]) == 2
    line = _one_error_line(capsys, "baselines")
    assert "no row can be scored: all 2 dropped (empty_toxic: 2)" in line and "b.skipped.csv" in line, line
    assert len(pd.read_csv(tmp_path / "b.skipped.csv")) == 2


def test_baselines_warns_when_the_references_only_repeat_the_inputs(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # TextDetox's test inputs: `neutral_sentence` is the toxic input again, a placeholder.
    inputs = pd.read_csv(shared_data / "textdetox_inputs" / "textdetox2024_test_inputs.tsv", sep="\t",
                         keep_default_na=False)
    inputs = inputs[inputs["lang"] == "en"].head(20)
    pairs = tmp_path / "inputs.tsv"
    inputs.to_csv(pairs, sep="\t", index=False)
    assert main(["baselines", "--data", str(pairs)]) == 0
    err = capsys.readouterr().err
    assert "warning: 20 of 20 rows have only references identical to their input" in err, err
    inputs.assign(neutral_sentence="a real rewrite").to_csv(pairs, sep="\t", index=False)
    assert main(["baselines", "--data", str(pairs)]) == 0
    assert "identical to their input" not in capsys.readouterr().err


@pytest.mark.parametrize(("schedule", "expected"), [
    ("", "--schedule '': no stages given; expected STAGE[:EPOCHS[:LR]] items separated by commas"),
    (" , ", "--schedule ' , ': no stages given"),
    ("easy:1:1e-3:5", "--schedule item 'easy:1:1e-3:5': 4 fields; expected STAGE:EPOCHS:LR (epochs and lr optional)"),
    ("easy:1,extreme:1", "--schedule item 'extreme:1': unknown stage 'extreme'; expected one of "
                         "['easy', 'medium', 'hard', 'full']"),
    ("easy:x", "--schedule item 'easy:x': epochs 'x' is not a number"),
    ("easy:1:0", "--schedule item 'easy:1:0': lr must be > 0 and finite (got 0.0)"),
])
def test_bad_schedule_is_one_line_naming_the_item(
    schedule: str, expected: str, exp_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Malformed data: the schedule is refused before it is read.
    args = ["train", str(exp_config), "--data", str(CORPUS / "unbalanced_quote.tsv"), "--out", str(tmp_path / "run")]
    assert main([*args, "--schedule", schedule]) == 2
    line = _one_error_line(capsys, "train")
    assert line.startswith(f"raydetox train: error: {expected}") and "pydantic" not in line, line


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    # The reader is gone before the command writes (`raydetox config | head -0`): no traceback, no bug report.
    proc = subprocess.Popen([sys.executable, "-m", "raydetox.cli", "config"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == "", err


def test_a_broken_pipe_elsewhere_stays_a_bug_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not stdout's reader gone (stdout is fine): a worker's or subprocess's pipe broke, which needs the traceback.
    def broken(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("raydetox.cli.cmd_config", broken)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("raydetox config: this is a bug")


def test_own_warnings_are_command_lines_not_python_warnings() -> None:
    """raydetox's own warnings print as the command's warning lines; a library's keep Python's format
    (and a caller recording warnings, as pytest.warns does, still records both)."""
    import raydetox.cli as cli

    with cli._own_warnings_as_lines("evaluate"):
        own = warnings.formatwarning("the lexicon has no terms\n for sw", UserWarning, cli.__file__, 9)
        library = warnings.formatwarning("deprecated", UserWarning, "/usr/lib/python3/site-packages/x.py", 3)
    assert own == "raydetox evaluate: warning: the lexicon has no terms for sw\n"
    assert library.startswith("/usr/lib/python3/site-packages/x.py:3: UserWarning: deprecated")
    assert warnings.formatwarning("x", UserWarning, cli.__file__, 9).startswith(cli.__file__)  # restored after
