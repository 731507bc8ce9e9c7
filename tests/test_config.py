"""Config loading: every experiment YAML validates; bad keys and values name the key and the file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from raydetox.cli import _load, build_parser, main
from raydetox.config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    dump_config,
    load_config,
    parse_value,
)
from raydetox.data.io import load_pairs
from raydetox.preflight import check_paths

REPO = Path(__file__).resolve().parents[1]
LANGS = ["am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh"]


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.schedule
    check_paths(cfg, str(path))  # hub ids and {lang} word lists: nothing local to be missing


def test_defaults_and_roundtrip(tmp_path: Path) -> None:
    cfg = config_from_dict({"lora": None, "decoding": {"toxic_penalty": math.inf}})
    assert cfg.lora is None
    assert [s.stage for s in cfg.schedule] == ["easy", "medium", "hard", "full"]
    dump_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def _config_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    """The config file written from ``text`` and the ConfigError that loading it must raise."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


@pytest.mark.parametrize(
    "text, key, words",
    [
        ("data:\n  sorce: x\n", "data.sorce", "unknown key"),
        ("bogus: 1\n", "bogus", "unknown key"),
        ("training:\n  batch_size: many\n", "training.batch_size", "integer"),
        ("schedule:\n  - {stage: easyy}\n", "schedule.0.stage", "unknown stage"),
        ("schedule:\n  - {stage: easy, epochs: 0}\n", "schedule.0.epochs", "> 0"),
        ("schedule:\n  - {stage: easy, lr: -1.0e-4}\n", "schedule.0.lr", "> 0"),
        ("schedule: []\n", "schedule", "at least one stage"),
        ("split:\n  train: 0.5\n", "split", "sum to 1"),
        ("sweep:\n  copy_penalty: []\n", "sweep.copy_penalty", "at least one value"),
        ("sweep:\n  orderings: [[easy, extreme]]\n", "sweep.orderings", "unknown stage"),
        ("curriculum:\n  quantiles: [0.7, 0.3]\n", "curriculum.quantiles", "increasing"),
        # unknown keys and wrong types, in every kind of section
        ("sweep:\n  orderingz: [[easy]]\n", "sweep.orderingz", "unknown key"),
        ("schedule:\n  - {stage: easy, epochz: 1}\n", "schedule.0.epochz", "unknown key"),
        ("schedule:\n  - {stage: easy, lr: fast}\n", "schedule.0.lr", "number"),
        ("sweep:\n  toxic_penalty: 0.5\n", "sweep.toxic_penalty", "list"),
        ("data:\n  languages: en\n", "data.languages", "list"),
        ("data:\n  expand_refs: maybe\n", "data.expand_refs", "boolean"),
        ("cleaning: [1, 2]\n", "cleaning", "CleaningConfig"),
        # an ordering naming an unknown stage, however the orderings are given
        ("sweep:\n  orderings: [[]]\n", "sweep.orderings", "at least one stage"),
        ("sweep:\n  permute_stages: [easy, extreme]\n", "sweep.permute_stages", "unknown stage(s) ['extreme']"),
        ("sweep:\n  permute_stages: [easy, easy]\n", "sweep.permute_stages", "listed twice"),
        ("sweep:\n  permute_stages: []\n", "sweep.permute_stages", "at least one stage"),
        # non-positive epochs or lr, in the schedule and in the sweep grid
        ("schedule:\n  - {stage: easy, epochs: -1}\n", "schedule.0.epochs", "> 0"),
        ("schedule:\n  - {stage: easy, epochs: .inf}\n", "schedule.0.epochs", "finite"),
        ("schedule:\n  - {stage: easy, lr: 0}\n", "schedule.0.lr", "> 0"),
        ("sweep:\n  epochs: [1.0, 0]\n", "sweep.epochs", "> 0 and finite, got [0.0]"),
        ("sweep:\n  lr: [1.0e-4, -1.0e-4]\n", "sweep.lr", "> 0 and finite, got [-0.0001]"),
        ("sweep:\n  epochs: []\n", "sweep.epochs", "at least one value"),
        ("sweep:\n  lr: []\n", "sweep.lr", "at least one value"),
        # empty or negative penalty grids
        ("sweep:\n  toxic_penalty: []\n", "sweep.toxic_penalty", "at least one value"),
        ("sweep:\n  copy_penalty: [0.0, -2.0]\n", "sweep.copy_penalty", ">= 0 (inf bans), got [-2.0]"),
        ("decoding:\n  toxic_penalty: -1\n", "decoding.toxic_penalty", ">= 0"),
        ("sweep:\n  lora_r: []\n", "sweep.lora_r", "at least one value"),
        ("sweep:\n  lora_r: [0, 8]\n", "sweep.lora_r", "> 0"),
        ("sweep:\n  num_samples: 0\n", "sweep.num_samples", ">= 1"),
        # data and cleaning values the loader would otherwise trip on later
        ("data:\n  default_lang: english\n", "data.default_lang", "not a language code"),
        ("data:\n  languages: [en, 'de/at']\n", "data.languages", "not language codes: ['de/at']"),
        ("cleaning:\n  max_chars: 0\n", "cleaning.max_chars", ">= 1"),
        # ranges, NaN and bound order, checked when the file is loaded (issue 10)
        ("split:\n  seed: -1\n", "split.seed", "greater than or equal to 0"),
        ("seed: 4294967296\n", "seed", "less than or equal to 4294967295"),
        ("lexicon:\n  min_count: -5\n", "lexicon.min_count", "greater than or equal to 1"),
        ("lexicon:\n  smoothing: 0\n", "lexicon.smoothing", "greater than 0"),
        ("cleaning:\n  min_token_overlap: -0.1\n", "cleaning.min_token_overlap", "greater than or equal to 0"),
        ("cleaning:\n  already_neutral_overlap: 1.5\n", "cleaning.already_neutral_overlap", "less than or equal to 1"),
        ("cleaning:\n  min_chrf: .nan\n", "cleaning.min_chrf", "finite number"),
        ("cleaning:\n  min_length_ratio: .nan\n", "cleaning.min_length_ratio", "finite number"),
        ("cleaning:\n  min_length_ratio: 3\n  max_length_ratio: 1\n", "cleaning.min_length_ratio",
         "must be < cleaning.max_length_ratio (3 >= 1)"),
        ("curriculum:\n  quantiles: [0.0, 0.5]\n", "curriculum.quantiles", "strictly between 0 and 1"),
        ("curriculum:\n  quantiles: [.nan, 0.5]\n", "curriculum.quantiles.0", "finite number"),
        ("curriculum:\n  overlap_weight: 0\n  toxicity_weight: 0\n  length_weight: 0\n",
         "curriculum.overlap_weight", "all 0"),
        ("training:\n  batch_size: 0\n", "training.batch_size", "must be >= 1, got 0"),
        ("training:\n  warmup_ratio: 2\n", "training.warmup_ratio", "within [0, 1]"),
        ("training:\n  weight_decay: .nan\n", "training.weight_decay", "finite number"),
        ("decoding:\n  toxic_penalty: .nan\n", "decoding.toxic_penalty", ">= 0"),
        ("decoding:\n  num_beams: 0\n", "decoding.num_beams", "greater than or equal to 1"),
        ("sweep:\n  toxic_penalty: [0, .nan]\n", "sweep.toxic_penalty", "got [nan]"),
        ("sweep:\n  copy_rate_bound: -0.5\n", "sweep.copy_rate_bound", "greater than or equal to 0"),
        ("sweep:\n  orderings: [[easy, hard, easy]]\n", "sweep.orderings", "['easy'] listed twice"),
        ("sweep:\n  orderings: []\n", "sweep.orderings", "at least one ordering"),
        ("sweep:\n  seeds: [0, 1, 0]\n", "sweep.seeds", "seed(s) [0] listed twice"),
        ("data:\n  languages: []\n", "data.languages", "at least one"),
        ("data:\n  languages: [en, EN]\n", "data.languages", "listed twice"),
        ("data:\n  neutral_columns: []\n", "data.neutral_columns", "at least one"),
        ("data:\n  min_lang_confidence: 1.5\n", "data.min_lang_confidence", "less than or equal to 1"),
        ("lora:\n  target_modules: []\n", "lora.target_modules", "at least 1 item"),
        ("model:\n  max_source_length: 0\n", "model.max_source_length", "greater than or equal to 1"),
        ("ray:\n  num_workers: 0\n", "ray.num_workers", "greater than or equal to 1"),
        # names that would put results (and --overwrite's deletions) outside the storage folder
        ("name: ../..\n", "name", "plain folder name"),
        ("name: /tmp/elsewhere\n", "name", "plain folder name"),
        ("name: a/b\n", "name", "plain folder name"),
        ("name: ''\n", "name", "plain folder name"),
        ("ray:\n  name: ..\n", "ray.name", "plain folder name"),
        ('name: "a\\nb"\n', "name", "printable text"),
        ("lexicon:\n  min_log_odds: -50\n", "lexicon.min_log_odds", "greater than or equal to 0"),
        ("data:\n  source: ''\n", "data.source", "at least 1 character"),
        # keys that another key would silently override or make meaningless
        ("sweep:\n  orderings: [[easy, full]]\n  permute_stages: [easy, hard]\n", "sweep.permute_stages", "not both"),
        ("lora: null\nsweep:\n  lora_r: [4, 8]\n", "sweep.lora_r", "lora is null"),
        ("lexicon:\n  learn: false\ndecoding:\n  toxic_penalty: 2.0\n", "decoding.toxic_penalty", "builds no lexicon"),
        ("lexicon:\n  learn: false\nsweep:\n  toxic_penalty: [0, .inf]\n", "sweep.toxic_penalty", "builds no lexicon"),
        # a boolean where a number belongs: pydantic alone reads it as 1
        ("schedule:\n  - {stage: easy, epochs: true}\n", "schedule.0.epochs", "expected a number, got a boolean"),
        # YAML 1.1's on/yes are text under YAML 1.2: still no number
        ("schedule:\n  - {stage: easy, epochs: on}\n", "schedule.0.epochs", "unable to parse string as a number"),
        ("data:\n  max_rows_per_lang: true\n", "data.max_rows_per_lang", "expected a number, got a boolean"),
        ("sweep:\n  lr: [false, 1.0e-3]\n", "sweep.lr.0", "expected a number, got a boolean"),
        ("sweep:\n  lr: [yes, 1.0e-3]\n", "sweep.lr.0", "unable to parse string as a number"),
        # YAML 1.1's sexagesimal integer is text under YAML 1.2
        ("seed: 1:20\n", "seed", "unable to parse string as an integer"),
        ("decoding:\n  toxic_penalty: true\n", "decoding.toxic_penalty", "expected a number, got a boolean"),
        ("training:\n  gradient_accumulation_steps: true\n", "training.gradient_accumulation_steps",
         "expected a number, got a boolean"),
        # HF training arguments: their shape, ranges, NaN and names, at load rather than inside a trial
        ("training:\n  hf_args: [1]\n", "training.hf_args", "expected a mapping of Seq2SeqTrainingArguments"),
        ("training:\n  max_grad_norm: .nan\n", "training.max_grad_norm", "finite number"),
        ("training:\n  gradient_accumulation_steps: 0\n", "training.gradient_accumulation_steps", "must be >= 1"),
        ("training:\n  adam_beta1: 5\n", "training.adam_beta1", "must be within [0, 1)"),
        ("training:\n  optim: bogus\n", "training.optim", "unknown optimizer"),
        ("training:\n  lr_scheduler: bogus\n", "training.lr_scheduler", "unknown learning-rate scheduler"),
        # cut points outside difficulty's [0, 1]; grid values given twice
        ("curriculum:\n  cut_points: [100, 200]\n", "curriculum.cut_points", "within [0, 1], the range of difficulty"),
        ("sweep:\n  lr: [1.0e-3, 0.001]\n", "sweep.lr", "value(s) [0.001] listed twice"),
        ("sweep:\n  toxic_penalty: [0, .inf, .inf]\n", "sweep.toxic_penalty", "value(s) [inf] listed twice"),
        ("sweep:\n  orderings: [[easy, full], [easy, full]]\n", "sweep.orderings", "listed twice"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, key: str, words: str) -> None:
    path, msg = _config_error(tmp_path, text)
    assert str(path) in msg and f"'{key}'" in msg and words in msg and "\n" not in msg


def test_hf_arguments_are_kept_as_hf_types_not_as_yaml_text(tmp_path: Path) -> None:
    """A quoted ``"1e-6"`` is text, and a quoted ``"false"`` is text that Python finds true: both reach HF
    converted (bf16 stays off, the optimizer gets a number)."""
    cfg = load_config(_write(tmp_path, 'training:\n  adam_epsilon: "1e-6"\n  bf16: "false"\n  optim: adafactor\n'))
    assert cfg.training.hf_args == {"adam_epsilon": 1e-6, "bf16": False, "optim": "adafactor"}
    assert type(cfg.training.hf_args["adam_epsilon"]) is float and cfg.training.hf_args["bf16"] is False


def test_configs_read_yaml_1_2_scalars(tmp_path: Path) -> None:
    """YAML 1.2's scalars, not YAML 1.1's (which PyYAML implements): a leading zero is not octal, a
    date or ``on`` in a text field stays text, ``1e-4`` is a number; written configs read back equal
    with either reader."""
    text = ("name: 2026-12-01\nseed: 010\nray:\n  name: 'on'\nschedule:\n  - {stage: full, epochs: 1_0, lr: 1e-4}\n"
            "lexicon:\n  learn: off\ntraining:\n  adam_epsilon: 1e-8\n")
    cfg = load_config(_write(tmp_path, text))
    assert (cfg.name, cfg.seed, cfg.ray.name) == ("2026-12-01", 10, "on")
    assert (cfg.schedule[0].epochs, cfg.schedule[0].lr) == (10, 1e-4) and cfg.lexicon.learn is False
    assert cfg.training.hf_args["adam_epsilon"] == 1e-8
    assert load_config(_write(tmp_path, "seed: 0o17\n")).seed == 15  # YAML 1.2's octal is explicit
    assert parse_value("1e-3", "--set") == 1e-3 and parse_value("on", "--set") == "on"
    dump_config(cfg, tmp_path / "again.yaml")
    written = (tmp_path / "again.yaml").read_text()
    assert load_config(tmp_path / "again.yaml") == cfg
    assert yaml.safe_load(written)["name"] == "2026-12-01"  # quoted: a YAML 1.1 reader gets text, not a date


def test_overrides_are_named_when_they_make_the_file_wrong(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 0\nschedule:\n  - {stage: full, epochs: 1, lr: 1.0e-3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {"seed": -1})
    assert str(err.value).startswith(f"{path} with overrides of seed: key 'seed': "), err.value
    assert load_config(path, {"schedule.0.lr": 2e-3}).schedule[0].lr == 2e-3  # an item of a list
    for dotted, words in (("a..b", "an empty key between dots"), (".seed", "an empty key between dots"),
                          ("schedule.3.lr", "'3' is not an index of a list of 1 item(s)")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_config(path, {dotted: 1})
    bad = _write(tmp_path, "seed: -1\n")  # wrong as written: the file's own message, not the override's
    with pytest.raises(ConfigError) as err:
        load_config(bad, {"name": "x"})
    assert str(err.value).startswith(f"{bad}: key 'seed'"), err.value


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "data: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    "text, where, words",
    [
        ("data: [unclosed\n", "line 2, column 1", "expected ',' or ']'"),
        ("a: b\n  c: d\n", "line 2, column 4", "mapping values are not allowed here"),
        ("name: x\n\tseed: 1\n", "line 2, column 1", "found character '\\t'"),
        ("name: x\x07\n", "line 1, column 8", "character '\\x07' is not allowed"),
        # PyYAML keeps the last of two equal keys without a word: here it is an error
        ("data:\n  source: a.tsv\n  format: tsv\n  source: b.tsv\n", "line 4, column 3",
         "duplicate key 'source' (first given at line 2)"),
        ("seed: 1\nname: x\nseed: 2\n", "line 3, column 1", "duplicate key 'seed' (first given at line 1)"),
    ],
)
def test_yaml_errors_are_one_line_with_line_and_column(tmp_path: Path, text: str, where: str, words: str) -> None:
    path, msg = _config_error(tmp_path, text)
    assert msg.startswith(f"{path}: invalid YAML at {where}: "), msg
    assert words in msg and "\n" not in msg


def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[" * 5000 + "]" * 5000 + "\n")  # PyYAML composes recursively
    with pytest.raises(ConfigError, match=rf"^{path}: invalid YAML: collections nested too deeply to parse$"):
        load_config(path)


def test_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    # "<<: *base" then the same key is the YAML way to override a merged value, not a duplicate.
    path = _write(tmp_path, "cleaning:\n  <<: {min_chrf: 5.0, drop_noisy: false}\n  min_chrf: 7.0\n")
    assert load_config(path).cleaning.min_chrf == 7.0


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", "false\n"])
def test_top_level_not_a_mapping_is_one_line_even_with_overrides(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, text)
    for overrides in (None, {"data.source": "x.tsv"}, {"seed": 1}):
        with pytest.raises(ConfigError, match=rf"^{path}: expected a mapping .* at the top level, got \w+$"):
            load_config(path, overrides)
    # The CLI path: --data and --set are overrides applied to the parsed file.
    assert main(["prepare", str(path), "--data", str(tmp_path), "--set", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "top level" in err, err


def test_override_through_a_non_mapping_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "cleaning: 5\n")
    with pytest.raises(ConfigError, match=rf"^{path}: override 'cleaning.min_chrf': key 'cleaning' is a int"):
        load_config(path, {"cleaning.min_chrf": 1.0})


def test_several_bad_keys_are_reported_on_one_line(tmp_path: Path) -> None:
    _, msg = _config_error(tmp_path, "split:\n  seed: -1\nlexicon:\n  min_count: -5\n")
    assert "\n" not in msg and "'split.seed'" in msg and "'lexicon.min_count'" in msg


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    # A python-object tag must be refused by the safe loader, never executed.
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


def test_overrides_apply_dotted_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "cleaning:\n  min_chrf: 10\n")
    cfg = load_config(path, {"cleaning.min_chrf": 5.0, "data.source": "x/y"})
    assert cfg.cleaning.min_chrf == 5.0 and cfg.data.source == "x/y"
    with pytest.raises(ConfigError, match="'cleaning.min_chrff'"):
        load_config(path, {"cleaning.min_chrff": 1})


def test_valid_grids_and_codes_pass() -> None:
    cfg = config_from_dict(
        {"sweep": {"toxic_penalty": [0.0, math.inf], "permute_stages": ["easy", "hard"], "lr": [1e-4, 5e-4]},
         "data": {"default_lang": "EN", "languages": ["en", "pt-BR"]}, "cleaning": {"max_chars": None}}
    )
    assert cfg.sweep.toxic_penalty == [0.0, math.inf]
    assert cfg.data.default_lang == "en" and cfg.data.languages == ["en", "pt-br"]


# ------------------------------------------------------------------------------------------ paths


def _exp(tmp_path: Path, data: str, extra: str = "") -> Path:
    return _write(tmp_path, f"output_dir: {tmp_path / 'runs'}\ndata:\n  default_lang: en\n{data}{extra}")


@pytest.mark.parametrize(
    "data, extra, key, words",
    [
        ("  source: {tmp}/no/pairs.tsv\n", "", "data.source", "no/pairs.tsv: file or directory not found"),
        ("  source: {tmp}/gone\n  format: dir\n", "", "data.source", "gone: file or directory not found"),
        ("  source: {tmp}/pairs.tsv\n", "split:\n  split_file: {tmp}/splits.csv\n", "split.split_file",
         "splits.csv: file not found"),
        ("  source: {tmp}/pairs.tsv\n", "lexicon:\n  wordlists: ['{tmp}/{{lang}}.txt', '{tmp}/bad.txt']\n",
         "lexicon.wordlists.1", "bad.txt: word list not found"),
        # the labelled files of the judge and the embedded base's extra texts: checked up front as well
        ("  source: {tmp}/pairs.tsv\n",
         "metrics:\n  judge:\n    sources:\n      - {{path: '{tmp}/no_judge.tsv', toxic_columns: [t], lang: en}}\n",
         "metrics.judge.sources.0.path", "no_judge.tsv: file or directory not found"),
        ("  source: {tmp}/pairs.tsv\n", "model:\n  embedded:\n    sources:\n      - {{source: '{tmp}/no_texts.tsv'}}\n",
         "model.embedded.sources.0.source", "no_texts.tsv: file or directory not found"),
    ],
)
def test_missing_paths_name_file_and_key(tmp_path: Path, data: str, extra: str, key: str, words: str) -> None:
    (tmp_path / "pairs.tsv").write_text("toxic\tneutral\na\tb\n")
    path = _exp(tmp_path, data.format(tmp=tmp_path), extra.format(tmp=tmp_path))
    cfg = load_config(path)  # the file itself is valid: paths are checked apart, where they are read
    with pytest.raises(ConfigError) as info:
        check_paths(cfg, str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: key '{key}': ") and words in msg, msg


def test_existing_paths_and_hub_ids_pass(tmp_path: Path) -> None:
    (tmp_path / "pairs.tsv").write_text("toxic\tneutral\na\tb\n")
    check_paths(load_config(_exp(tmp_path, f"  source: {tmp_path}/pairs.tsv\n")))
    check_paths(config_from_dict({"data": {"source": "someone/some_dataset"}}))  # the hub loader's business


@pytest.mark.parametrize("command", ["prepare", "sweep"])
def test_cli_missing_data_path_is_one_line_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _exp(tmp_path, f"  source: {tmp_path}/missing.tsv\n")
    code = main([command, str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"raydetox {command}: error: {path}: key 'data.source': {tmp_path}/missing.tsv: file or directory not "
        "found (and not a hub id 'owner/name')\n"
    )
    assert not (tmp_path / "runs").exists()  # nothing prepared, no sweep directory, no Ray


def test_ray_executor_resolution_and_the_one_worker_rule() -> None:
    assert config_from_dict({}).ray.in_trial()  # auto, one worker: the trial trains itself
    assert not config_from_dict({"ray": {"num_workers": 2}}).ray.in_trial()
    assert not config_from_dict({"ray": {"executor": "ray_train"}}).ray.in_trial()
    with pytest.raises(ConfigError, match="key 'ray'.*needs ray.num_workers 1"):
        config_from_dict({"ray": {"executor": "trial", "num_workers": 2}}, origin="x.yaml")


# ----------------------------------------------------------------------------------- HF training arguments


def test_training_section_takes_hf_arguments_and_they_reach_the_trainer(tmp_path: Path) -> None:
    from raydetox.experiment import training_arguments

    path = _exp(tmp_path, "", extra="training:\n  batch_size: 4\n  gradient_accumulation_steps: 3\n"
                                  "  max_grad_norm: 0.5\n  optim: adafactor\n  label_smoothing_factor: 0.1\n")
    cfg = load_config(path)
    assert cfg.training.batch_size == 4
    assert cfg.training.hf_args == {"gradient_accumulation_steps": 3, "max_grad_norm": 0.5, "optim": "adafactor",
                                    "label_smoothing_factor": 0.1}
    args = training_arguments(cfg, tmp_path / "run")
    assert (args.gradient_accumulation_steps, args.max_grad_norm, args.label_smoothing_factor) == (3, 0.5, 0.1)
    assert args.optim.value == "adafactor" and args.per_device_train_batch_size == 4
    # Written back where a user writes them, and read back to the same config.
    dump_config(cfg, tmp_path / "again.yaml")
    text = (tmp_path / "again.yaml").read_text()
    assert "hf_args" not in text and "  gradient_accumulation_steps: 3" in text
    assert load_config(tmp_path / "again.yaml") == cfg


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("learning_rate: 0.001", r"key 'training.learning_rate': set by raydetox; use schedule\[i\].lr"),
        ("per_device_train_batch_size: 8", "key 'training.per_device_train_batch_size': set by raydetox; use training.batch_size"),
        ("report_to: wandb", "key 'training.report_to': set by raydetox"),
        ("gradient_accumulation_steps: two", "key 'training.gradient_accumulation_steps': Input should be a valid integer"),
        ("no_such_argument: 1", "key 'training.no_such_argument': unknown key"),
        ("extra_loss: contrastive", "key 'training.extra_loss': unknown extra loss 'contrastive'"),
    ],
)
def test_training_keys_are_checked_when_the_config_loads(tmp_path: Path, line: str, message: str) -> None:
    path = _exp(tmp_path, "", extra=f"training:\n  {line}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_config_command_lists_hf_arguments_and_owned_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--section", "training"]) == 0
    out = capsys.readouterr().out
    assert "training.batch_size: int = 16" in out
    assert "training.bf16: bool = False" in out and "training.gradient_accumulation_steps: int = 1" in out
    assert "training.learning_rate: owned; use schedule[i].lr" in out
    assert main(["config", "--section", "nope"]) == 2


def test_config_command_lists_nested_sections_key_by_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--section", "model"]) == 0
    out = capsys.readouterr().out
    assert "model.embedded.max_steps: int = 1200" in out and "model.embedded.mix.copy: float = 1.0" in out
    assert "model.embedded.device: Literal['cpu', 'cuda'] = 'cpu'" in out
    assert "EmbeddedBaseConfig(" not in out  # no section as one repr line
    assert main(["config", "--section", "metrics"]) == 0
    assert "metrics.judge.cache_dir" in capsys.readouterr().out


def test_data_override_detects_its_own_format(mpd_dir: Path) -> None:
    # sweep_mt5.yaml sets data.format: hub for its hub source; --data with a local directory must not be
    # sent to the hub loader (it would lose the languages of the file names).
    config = REPO / "experiments" / "sweep_mt5.yaml"
    cfg = _load(build_parser().parse_args(["prepare", str(config), "--data", str(mpd_dir)]))
    assert (cfg.data.source, cfg.data.format) == (str(mpd_dir), "dir")
    assert load_pairs(cfg.data).groupby("lang").size().to_dict() == {lang: 400 for lang in LANGS}
    # A format given with --set wins over detection.
    args = ["prepare", str(config), "--data", str(mpd_dir), "--set", "data.format=saved"]
    assert _load(build_parser().parse_args(args)).data.format == "saved"
