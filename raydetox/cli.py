"""``raydetox`` command line: thin subcommands over the library (each maps to one module's entry point)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from raydetox import gc_policy
from raydetox.config import (
    STAGES,
    ConfigError,
    DecodingConfig,
    ExperimentConfig,
    StageConfig,
    check_printable,
    config_from_dict,
    load_config,
    parse_value,
    set_dotted,
)
from raydetox.errors import RaydetoxError, short
from raydetox.preflight import (
    RUN_SEARCH_DEPTH,
    check_job_path,
    check_model_dir,
    check_output_dir,
    check_output_file,
    check_paths,
    find_lexicon,
    run_folders_above,
    trained_max_source_length,
)

if TYPE_CHECKING:
    from raydetox.data.lexicon import Lexicon

DATA_ENV = "RAYDETOX_DATA"


def _parse_set(items: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``--set key.path=value`` pairs; values are parsed as YAML scalars/lists (see
    :func:`raydetox.config.parse_value`: control characters in a key or value are refused)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        origin = f"{option} {item!r}"
        if not sep or not key.strip():
            raise ConfigError(f"{origin}: expected KEY=VALUE (e.g. cleaning.min_chrf=5)")
        check_printable(key, f"{origin}: key")
        overrides[key.strip()] = parse_value(value, origin)
    return overrides


def _data_overrides(args: argparse.Namespace, overrides: dict[str, Any]) -> str:
    """Add ``--data`` (else ``RAYDETOX_DATA``) to ``overrides`` as ``data.source``, with its format
    detected anew; return the name of what gave the source (``--data``, the variable or ``data.source``)."""
    given = getattr(args, "data", None)
    if given is not None and not given.strip():
        raise ConfigError("--data: empty path (give the data file or folder, or leave the option out)")
    if given is None and os.environ.get(DATA_ENV) is not None and not os.environ[DATA_ENV].strip():
        raise ConfigError(f"environment variable {DATA_ENV} is set but empty (unset it, or give a data path)")
    data = given or os.environ.get(DATA_ENV)
    if data:
        from raydetox.data.io import DataError, detect_format

        overrides["data.source"] = data
        # The config's own data.format described its own source (sweep_mt5.yaml: hub; every
        # best_config.yaml: the prepared dir): a new source is detected anew. One that is neither a local
        # source nor a hub id is left undetected, for check_paths / the reader to refuse naming it.
        try:
            overrides.setdefault("data.format", detect_format(data))
        except DataError:
            overrides.setdefault("data.format", None)
    return "--data" if given else DATA_ENV if data else "data.source"


def _load(args: argparse.Namespace) -> ExperimentConfig:
    """The config of a prepare/train/sweep command, its paths checked before any work starts.

    Relative paths resolve against the working directory; inside a Ray job (a temporary copy of
    ``--working-dir``) relative outputs and inputs outside the copy are refused (see raydetox.preflight).
    """
    origin = str(args.config)
    overrides = _parse_set(args.set or [])
    data_key = _data_overrides(args, overrides)
    cfg = load_config(args.config, overrides)
    # A missing data path fails here, before data is read or Ray starts.
    check_paths(cfg, origin, data_key)
    if args.command == "sweep":
        from raydetox.sweep import sweep_paths

        sweep_paths(cfg, args.storage, origin)  # refuses a relative results path inside a Ray job
    else:
        out = getattr(args, "out", None)
        check_job_path(out or cfg.output_dir, "--out" if out else "output_dir", origin, output=True)
    return cfg


def _output_file(path: str, option: str = "--out") -> Path:
    """``path`` checked as a writable file and its missing folders created, before any work: an output
    path's folders are made as users expect, and a file in their way fails now, not after the work."""
    check_output_file(path, option)
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. made read-only or taken by a file since the check
        raise ConfigError(f"{option} {out}: cannot create its folder {out.parent}: {err.strerror or err}") from None
    return out


def _warn(command: str, message: str) -> None:
    print(f"raydetox {command}: warning: {message}", file=sys.stderr)


def _warn_truncated(command: str, tokenizer: Any, texts: Sequence[str], ids: Sequence[str], what: str,
                    cfg: ExperimentConfig) -> None:
    """Say how many ``texts`` exceed ``model.max_source_length`` tokens, naming the first few: the model
    sees only their first tokens, which :func:`raydetox.decoding.generate` cuts off without a word."""
    limit = cfg.model.max_source_length
    if not texts:
        return
    # Cut at limit + 1 (as generate cuts at limit, special tokens counted alike): a longer text then shows
    # without tokenizing a huge input in full.
    lengths = [len(ids_) for ids_ in tokenizer(list(texts), truncation=True, max_length=limit + 1)["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > limit]
    if not over:
        return
    shown = ", ".join(str(ids[i]) for i in over[:5]) + (", ..." if len(over) > 5 else "")
    rest = ("decoding.source_words_only keeps the rest of each as written, less its lexicon terms under a toxic "
            "penalty" if cfg.decoding.source_words_only else "the rest of each is not rewritten and is missing "
            "from its output")
    many = f"{len(over)} inputs exceed" if len(over) > 1 else "1 input exceeds"
    _warn(command, f"{many} model.max_source_length={limit} tokens and the model sees only the first {limit} "
                   f"({rest}): {what} {shown}")


def _optional_config(args: argparse.Namespace) -> ExperimentConfig:
    """``--config`` with ``--set``/``--decoding`` overrides, or the defaults with the overrides."""
    overrides = _parse_set(args.set or [])
    decoding = _parse_set(getattr(args, "decoding", None) or [], "--decoding")
    overrides.update({f"decoding.{k}": v for k, v in decoding.items()})
    if hasattr(args, "data"):  # evaluate, baselines: the pairs to score
        if _data_overrides(args, overrides) == "data.source":
            raise ConfigError(f"--data: give the pairs to score (a file, a folder or a hub id; or set {DATA_ENV})")
    if args.config:
        return load_config(args.config, overrides)
    raw: dict[str, Any] = {}
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return config_from_dict(raw, origin="--set")


def _trained_length(command: str, args: argparse.Namespace, cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the input length ``--model`` was trained with (recorded beside it), unless ``--set``
    gives one; with ``--config`` the config's stays, with a warning when the two differ."""
    recorded = trained_max_source_length(args.model)
    limit = cfg.model.max_source_length
    if recorded is None or recorded == limit or "model.max_source_length" in _parse_set(args.set or []):
        return cfg
    if args.config:
        _warn(command, f"{args.model} was trained with model.max_source_length={recorded}, and {args.config} "
                       f"sets {limit}: inputs are cut at {limit} tokens (--set model.max_source_length=N to choose)")
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_source_length=recorded))


def cmd_prepare(args: argparse.Namespace) -> int:
    from raydetox.data.prepare import prepare

    cfg = _load(args)
    out = Path(args.out or Path(cfg.output_dir) / cfg.name / "data")
    check_output_dir(out, "--out" if args.out else "output_dir")
    prepared = prepare(cfg, out)
    stages = ", ".join(f"{n}={len(f)}" for n, f in prepared.stages.items())
    print(
        f"prepared {len(prepared.stages['full']) + len(prepared.validation) + len(prepared.test)} kept pairs "
        f"({len(prepared.dropped)} dropped, see {out / 'dropped.csv'}) in {len(prepared.languages)} languages; "
        f"train stages: {stages}; validation={len(prepared.validation)} test={len(prepared.test)}"
    )
    print(f"report: {out / 'report.md'}")
    return 0


_SCHEDULE_FORM = "STAGE[:EPOCHS[:LR]] items separated by commas, e.g. easy:1:1e-3,full:1:2e-4"


def _parse_schedule(text: str) -> list[StageConfig]:
    """``easy:1:1e-3,medium:1:5e-4`` → stages (epochs and lr optional: ``easy,full:2``); every problem is
    one :class:`ConfigError` line naming the item."""
    from pydantic import ValidationError

    stages = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, *rest = (f.strip() for f in item.split(":"))
        if len(rest) > 2:  # a fourth field would be silently ignored
            raise ConfigError(f"--schedule item {item!r}: {len(rest) + 1} fields; expected STAGE:EPOCHS:LR "
                              "(epochs and lr optional)")
        if name not in STAGES:
            raise ConfigError(f"--schedule item {item!r}: unknown stage {name!r}; expected one of {list(STAGES)}")
        fields: dict[str, Any] = {"stage": name}
        for key, value in zip(("epochs", "lr"), rest):
            try:
                fields[key] = float(value)
            except ValueError:
                raise ConfigError(f"--schedule item {item!r}: {key} {value!r} is not a number "
                                  "(expected STAGE:EPOCHS:LR)") from None
        try:
            stages.append(StageConfig(**fields))
        except ValidationError as err:  # pydantic's own text is a multi-line dump with a URL
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))} {e['msg'].removeprefix('Value error, ')} "
                                 f"(got {short(e.get('input'))})" for e in err.errors())
            raise ConfigError(f"--schedule item {item!r}: {problems}") from None
    if not stages:
        raise ConfigError(f"--schedule {text!r}: no stages given; expected {_SCHEDULE_FORM}")
    return stages


def cmd_train(args: argparse.Namespace) -> int:
    from raydetox.data.prepare import prepare
    from raydetox.experiment import run_training, score_reference_systems
    from raydetox.run_report import write_run_report
    from raydetox.trainer import baseline_schedule

    cfg = _load(args)
    out = Path(args.out or Path(cfg.output_dir) / cfg.name)
    # An empty --schedule '' is a mistake to name, not a request for the config's schedule.
    schedule = _parse_schedule(args.schedule) if args.schedule is not None else list(cfg.schedule)
    check_output_dir(out, "--out" if args.out else "output_dir")
    prepared = prepare(cfg, out / "data")
    runs = {"curriculum": run_training(cfg, prepared, out / "curriculum", schedule, resume=not args.no_resume)}
    if args.baseline:
        # The baseline is training without a curriculum: one full stage, never paced.
        unpaced = dataclasses.replace(cfg, curriculum=dataclasses.replace(cfg.curriculum, pacing="disjoint"))
        runs["baseline"] = run_training(
            unpaced, prepared, out / "baseline", baseline_schedule(schedule), resume=not args.no_resume
        )
    report = write_run_report(out, runs, score_reference_systems(cfg, prepared))
    for name, run in runs.items():
        m = run.test_metrics
        print(f"{name}: test copy_rate {m['test_copy_rate']:.3f} chrF {m['test_chrf']:.2f} "
              f"BERTScore {m['test_bertscore_f1']:.4f} J {m['test_j']:.4f}")
    print(f"report: {report}")
    return 0


def _lexicon(explicit: str | None, model_dir: str | None, decoding: DecodingConfig) -> Lexicon | None:
    """The lexicon for the toxic penalty: ``--lexicon``, else the one nearest above the model dir (a
    train run's or a sweep's ``data/lexicon.json``), said on stderr; None when there is none."""
    from raydetox.data.lexicon import Lexicon

    path = Path(explicit) if explicit else find_lexicon(model_dir) if model_dir else None
    if path is None:
        return None
    if not explicit and decoding.toxic_penalty > 0:
        print(f"lexicon for decoding.toxic_penalty: {path}", file=sys.stderr)
    return Lexicon.load(path)


def _find_judge(model_dir: Path):
    """The toxicity judge of the sweep or run a model comes from (its ``data/judge_path.json``), so that
    ``evaluate`` scores STA as the sweep did; ``None`` when there is none (STA from the lexicon)."""
    from raydetox.judge import recorded_judge

    return next((j for f in run_folders_above(model_dir) if (j := recorded_judge(f)) is not None), None)


def _eval_pairs(args: argparse.Namespace, cfg: ExperimentConfig, lexicon: Lexicon | None):
    """Pairs for evaluate/baselines, and the lexicon (given, found above the model, else learned).

    Rows that cannot be scored are said on stderr and, with ``--out``, written to ``OUT.skipped.csv``
    (id, lang, reason, detail, texts; as prepare's ``dropped.csv``) beside the scores."""
    from raydetox.data.clean import clean_pairs
    from raydetox.data.io import DataError, load_pairs
    from raydetox.data.lexicon import Lexicon

    pairs = load_pairs(cfg.data)
    if lexicon is not None:  # languages the training pairs lacked: the word lists it was built with
        lexicon = lexicon.for_languages(pairs["lang"])
    else:
        lexicon = Lexicon.learn(pairs, cfg.lexicon, base_dir=Path.cwd())
        if cfg.decoding.toxic_penalty > 0:
            print("lexicon for decoding.toxic_penalty: learned from the evaluation pairs (pass --lexicon to use "
                  "the training lexicon)", file=sys.stderr)
    # Empty or over-long texts can't be scored; they are reported, not silently skipped.
    cleaned = clean_pairs(pairs, dataclasses.replace(cfg.cleaning, drop_duplicates=False, drop_identical=False,
                                                      drop_already_neutral=False, drop_still_toxic=False,
                                                      drop_noisy=False), lexicon)
    skipped = None
    if args.out:  # written even when empty: a file of an earlier run never stands for this one
        skipped = Path(args.out).with_suffix(".skipped.csv")
        cleaned.dropped.to_csv(skipped, index=False)
    if len(cleaned.dropped):
        reasons = ", ".join(f"{r}: {n}" for r, n in cleaned.dropped["reason"].value_counts().items())
        where = f"; every skipped row is in {skipped}" if skipped else "; --out writes every skipped row beside it"
        if cleaned.kept.empty:
            raise DataError(f"{cfg.data.source}: no row can be scored: all {len(cleaned.dropped)} dropped ({reasons}){where}")
        ids = cleaned.dropped["id"].tolist()
        _warn(args.command, f"skipping {len(ids)} rows ({reasons}): {ids[:10]}{'...' if len(ids) > 10 else ''}"
                            f"{where}")
    from raydetox.metrics import normalize_whitespace

    kept = cleaned.kept
    placeholders = sum(
        all(normalize_whitespace(r) == normalize_whitespace(toxic) for r in refs if r.strip())
        for toxic, refs in zip(kept["toxic"], kept["refs"])
    )
    if placeholders:  # TextDetox's test inputs repeat the input as their "neutral" side
        _warn(args.command, f"{placeholders} of {len(kept)} rows have only references identical to their input (a "
                            "file of toxic inputs?): on them exact_match, BLEU, chrF and J measure copying; "
                            "`raydetox analyze --confirm --holdout FILE` scores such rows without references")
    return kept, lexicon


def _print_scores(name: str, scores: dict[str, float], out: str | None) -> None:
    import json

    from raydetox.results import SUMMARY_METRICS

    print(name + ": " + " ".join(f"{m}={scores.get(m, float('nan')):.4f}" for m in SUMMARY_METRICS))
    if out:
        Path(out).write_text(json.dumps(scores, indent=1, allow_nan=True))


def _warn_lexicon_sta(command: str, why: str) -> None:
    """STA falls back to the lexicon, which also drives the toxic penalty and ``delete``: say so, since it
    rates delete's outputs non-toxic by construction and flatters J."""
    _warn(command, f"STA (and J) from the lexicon ({why}, no metrics.toxicity_classifier): it rates the lexicon's "
                   "own deletions non-toxic by construction, so J is higher than a sweep's judge gives")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from raydetox.decoding import generate
    from raydetox.experiment import toxic_token_ids
    from raydetox.metrics import get_scorer
    from raydetox.modeling import load_trained

    cfg = _optional_config(args)
    check_model_dir(args.model)  # before any data is read: a wrong path costs one line
    cfg = _trained_length("evaluate", args, cfg)
    if args.out:
        _output_file(args.out)
    lexicon = _lexicon(args.lexicon, args.model, cfg.decoding)
    model, tokenizer = load_trained(args.model)
    pairs, lexicon = _eval_pairs(args, cfg, lexicon)
    _warn_truncated("evaluate", tokenizer, list(pairs["toxic"]), list(pairs["id"]), "ids", cfg)
    outputs = generate(model, tokenizer, list(pairs["toxic"]), cfg.decoding,
                       toxic_token_ids=toxic_token_ids(lexicon, tokenizer, cfg.decoding), max_source_length=cfg.model.max_source_length,
                       progress=True, lexicon=lexicon)
    judge = None if cfg.metrics.toxicity_classifier else _find_judge(Path(args.model))
    if judge is None and not cfg.metrics.toxicity_classifier:
        _warn_lexicon_sta("evaluate", f"no judge recorded in a run folder above {args.model}")
    scores, sentences = get_scorer(cfg.metrics, lexicon, judge=judge).score_with_sentences(
        list(pairs["toxic"]), outputs, [list(r) for r in pairs["refs"]], list(pairs["lang"])
    )
    _print_scores(args.model, scores, args.out)
    if args.out:  # the per-sentence outputs beside the scores, as a sweep keeps them for every row
        from raydetox.results import predictions_frame, write_predictions

        path = write_predictions(predictions_frame(pairs, outputs, sentences),
                                 Path(args.out).with_suffix(".predictions.parquet"))
        print(f"predictions: {path}")
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from raydetox.metrics import get_scorer, reference_systems

    cfg = _optional_config(args)
    if args.out:
        _output_file(args.out)
    pairs, lexicon = _eval_pairs(args, cfg, _lexicon(args.lexicon, None, cfg.decoding))
    refs = [list(r) for r in pairs["refs"]]
    # A --lexicon from a run's data/ brings that run's judge, as evaluate finds it above a model.
    judge = None if cfg.metrics.toxicity_classifier or not args.lexicon else _find_judge(Path(args.lexicon).parent)
    if judge is None and not cfg.metrics.toxicity_classifier:
        _warn_lexicon_sta("baselines", "no judge recorded beside --lexicon" if args.lexicon else "no --lexicon of a run")
    scorer = get_scorer(cfg.metrics, lexicon, judge=judge)
    systems = reference_systems(list(pairs["toxic"]), refs, list(pairs["lang"]), lexicon)
    all_scores = {}
    for name, outputs in systems.items():
        all_scores[name] = scorer.score(list(pairs["toxic"]), outputs, refs, list(pairs["lang"]))
        _print_scores(name, all_scores[name], None)
    if args.out:
        import json

        Path(args.out).write_text(json.dumps(all_scores, indent=1, allow_nan=True))
    return 0


def cmd_detox(args: argparse.Namespace) -> int:
    from raydetox.decoding import generate
    from raydetox.detox import output_format, read_inputs, write_outputs
    from raydetox.experiment import toxic_token_ids
    from raydetox.modeling import load_trained

    cfg = _optional_config(args)
    check_model_dir(args.model)
    cfg = _trained_length("detox", args, cfg)
    lexicon = _lexicon(args.lexicon, args.model, cfg.decoding)
    if lexicon is None and cfg.decoding.toxic_penalty > 0:
        # Without a lexicon the penalty would push down no token at all: say so instead.
        raise ConfigError(
            f"key 'decoding.toxic_penalty': {cfg.decoding.toxic_penalty:g} needs a lexicon, and none was found "
            f"in {args.model} or up to {RUN_SEARCH_DEPTH} folders above it (lexicon.json or data/lexicon.json); "
            "pass --lexicon FILE"
        )
    # Codes as the data loader reads them (EN and en are one language).
    lang = None if args.lang is None else args.lang.strip().lower()
    if lang is not None and (lexicon is None or lang not in lexicon.languages):
        known = f"the lexicon has {lexicon.languages}" if lexicon is not None else "no lexicon was found"
        raise ConfigError(f"--lang {args.lang!r}: not a language of the lexicon ({known})")
    fmt = output_format(args.column is not None, args.out)  # an unknown suffix fails before any work
    if args.out:
        _output_file(args.out)
    inputs = read_inputs(args.input, args.column)
    model, tokenizer = load_trained(args.model)
    # A blank input has nothing to rewrite: its output is empty (the model would invent one for it).
    todo = [i for i, text in enumerate(inputs.texts) if text.strip()]
    texts = [inputs.texts[i] for i in todo]
    _warn_truncated("detox", tokenizer, texts, [inputs.ids[i] for i in todo],
                    "ids" if inputs.table else "lines", cfg)
    generated = generate(model, tokenizer, texts, cfg.decoding,
                         toxic_token_ids=toxic_token_ids(lexicon, tokenizer, cfg.decoding) if lexicon else None,
                         max_source_length=cfg.model.max_source_length, lexicon=lexicon,
                         langs=None if lang is None else [lang] * len(texts))
    outputs = [""] * len(inputs.texts)
    for i, output in zip(todo, generated, strict=True):
        outputs[i] = output
    write_outputs(inputs, outputs, Path(args.out) if args.out else sys.stdout, fmt)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from raydetox.sweep import run_sweep, sweep_paths

    cfg = _load(args)
    storage, name, _ = sweep_paths(cfg, args.storage)
    if "://" not in storage:
        check_output_dir(storage, "--storage" if args.storage else "ray.storage_path")
    results = run_sweep(
        cfg, resume=args.resume, storage_path=args.storage, address=args.address, overwrite=args.overwrite
    )
    errors = [r for r in results if r.error]
    print(f"sweep finished: {len(results)} trials ({len(errors)} errored); results in {storage}/{name}")
    print(f"analyse with: raydetox analyze {storage}/{name}")
    return 1 if errors else 0


def _type_name(tp: Any) -> str:
    import typing

    if typing.get_args(tp):  # list[SourceConfig], Literal['cpu', 'cuda'], int | None: the whole form
        return str(tp).replace("typing.", "").replace("raydetox.config.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _print_keys(prefix: str, value: Any) -> None:
    """One line per key of the config dataclass ``value``; a nested section (``model.embedded``, its
    ``mix``; ``sweep.ablations``, which defaults to null) is listed key by key under its own prefix."""
    import typing

    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):
        if f.name == "hf_args":
            continue
        key, default = f"{prefix}.{f.name}", getattr(value, f.name)
        if dataclasses.is_dataclass(default):
            _print_keys(key, default)
            continue
        print(f"{key}: {_type_name(hints[f.name])} = {default!r}")
        nested = [t for t in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(t)]
        if default is None and nested:  # an optional section: its keys, with the defaults they get once set
            try:
                _print_keys(key, nested[0]())
            except (TypeError, ValueError):  # a section with required keys: its line above says its type
                pass


def cmd_config(args: argparse.Namespace) -> int:
    """List every config key (section.key, type, default); ``training`` also lists the HF arguments."""
    sections = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    wanted = [args.section] if args.section else list(sections)
    unknown = [w for w in wanted if w not in sections]
    if unknown:
        raise ConfigError(f"config --section {unknown[0]!r}: not a section; sections are {list(sections)}")
    defaults = ExperimentConfig()
    for name in wanted:
        value = getattr(defaults, name)
        if not dataclasses.is_dataclass(value):
            print(f"{name}: {_type_name(sections[name].type)} = {value!r}")
            continue
        _print_keys(name, value)
        if name == "training":
            from raydetox.training_args import OWNED_ARGUMENTS, argument_types, settable_arguments

            types = argument_types()
            print("# every Hugging Face Seq2SeqTrainingArguments field below is also a training key:")
            for key, f in settable_arguments().items():
                default = f.default if f.default is not dataclasses.MISSING else "(factory)"
                helptext = " ".join(str(f.metadata.get("help", "")).split())[:100]
                print(f"training.{key}: {_type_name(types[key])} = {default!r}  # {helptext}")
            print("# HF arguments raydetox owns (refused under training:), and where to set them instead:")
            for key, where in OWNED_ARGUMENTS.items():
                print(f"training.{key}: owned; use {where}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from raydetox.analysis import analyze
    from raydetox.data.io import DataError

    # Before the analysis: a file in the --out path's way, or a holdout that is not there, fails now.
    if args.out:
        check_output_dir(args.out, "--out")
    for holdout in args.holdout or ():
        if not Path(holdout).is_file():
            raise DataError(f"--holdout {holdout}: {'is not a file' if Path(holdout).exists() else 'not found'}")
    report = analyze(args.results_dir, args.out, confirm=args.confirm, holdouts=args.holdout or ())
    print(report.summary())
    return 0


def _add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("config", help="experiment YAML (see experiments/)")
    if data:
        p.add_argument("--data", help=f"data source path or hub id (overrides data.source; env {DATA_ENV})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raydetox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="load, clean, score and split the data; write stage datasets + report")
    _add_common(p)
    p.add_argument("--out", help="output directory (default: OUTPUT_DIR/NAME/data)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("config", help="list every config key with its type and default")
    p.add_argument("--section", help="one section, e.g. training (also lists every settable HF argument)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "train", help="run one schedule in-process (optionally beside the baseline)",
        epilog="The config's training: section also takes every Hugging Face Seq2SeqTrainingArguments field "
               "raydetox does not own (bf16, gradient_accumulation_steps, optim, ...): "
               "`raydetox config --section training` lists them.")
    _add_common(p)
    p.add_argument("--out", help="run directory (default: OUTPUT_DIR/NAME)")
    p.add_argument("--schedule", help="override the schedule, e.g. easy:1:1e-3,medium:1:1e-3,full:1:2e-4")
    p.add_argument("--baseline", action="store_true", help="also train the baseline (one full stage)")
    p.add_argument("--no-resume", action="store_true", help="ignore finished stages in the run directory")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (
        ("evaluate", cmd_evaluate, "score a trained model on a pairs file"),
        ("baselines", cmd_baselines, "score the copy and delete reference systems on a pairs file"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "evaluate":
            p.add_argument("--model", required=True, help="trained model or adapter dir")
        p.add_argument("--data", help=f"pairs file/dir or hub id (env {DATA_ENV})")
        p.add_argument("--config", help="experiment YAML for data/decoding/metrics settings")
        p.add_argument("--lexicon", help="lexicon.json (default: the nearest lexicon.json or data/lexicon.json "
                                         "above the model, up to 5 folders up, else learned from --data)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
        p.add_argument("--decoding", action="append", metavar="KEY=VALUE",
                       help="decoding setting, e.g. toxic_penalty=.inf (same as --set decoding.KEY=VALUE)")
        p.add_argument("--out", help="write the scores as JSON (its folders are created), the rows that cannot "
                                     "be scored beside it (OUT with suffix .skipped.csv: id, lang, reason) and, "
                                     "evaluate, the per-sentence predictions (suffix .predictions.parquet)")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "detox", help="rewrite sentences with a trained model (one output record per input)",
        epilog="Plain text in, plain text out: one output a line, a line break inside an output written as \\n "
               "(a backslash as \\\\, a carriage return as \\r). A table in (--column) gives a table out: "
               "columns id (the input's id/idx column, else its row number), input, output; CSV unless --out "
               "ends in .tsv/.tab, .jsonl/.ndjson/.json or .parquet/.pq (any case; another suffix than those, .csv "
               "or .txt is refused). A blank "
               "input gives an empty output; inputs longer than model.max_source_length tokens (without "
               "--config: the length the model was trained with, recorded beside it) are named on stderr (the "
               "model sees only their first tokens).")
    p.add_argument("--model", required=True, help="trained model or adapter dir")
    p.add_argument("input", help="text file (one sentence a line) or a CSV/TSV/JSONL/parquet table with --column")
    p.add_argument("--column", help="column (JSONL: key) holding the sentences of a table input")
    p.add_argument("--config", help="experiment YAML for decoding settings")
    p.add_argument("--lexicon", help="lexicon.json for the toxic-token penalty (default: the nearest "
                                     "lexicon.json or data/lexicon.json above the model, up to 5 folders up)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--decoding", action="append", metavar="KEY=VALUE", help="decoding setting, e.g. num_beams=4")
    p.add_argument("--lang", help="the inputs' language: the lexicon's terms of that language only are matched "
                                  "(every_piece, source_words_only; default: every language's, as one list)")
    p.add_argument("--out", help="output file (default: stdout; its folders are created); its suffix chooses "
                                 "the format")
    p.set_defaults(func=cmd_detox)

    p = sub.add_parser("sweep", help="Ray Tune sweep over schedules and decoding penalties")
    _add_common(p)
    p.add_argument("--address", help="Ray cluster address (default: local in-process Ray; env RAY_ADDRESS)")
    p.add_argument("--storage", help="results storage path or URI (default: ray.storage_path or OUTPUT_DIR/sweeps)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (Tuner.restore)")
    p.add_argument("--overwrite", action="store_true", help="delete a previous sweep of the same name first")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("analyze", help="sweep results → DataFrame, best schedule, plots, report")
    p.add_argument("results_dir", help="the sweep's results directory (STORAGE/NAME)")
    p.add_argument("--out", help="where to write the analysis (default: RESULTS_DIR/analysis)")
    p.add_argument("--confirm", action="store_true",
                   help="after selection, score the best variant, baseline, untrained base, copy and delete on the "
                        "test split (and --holdout files) with bootstrap intervals")
    p.add_argument("--holdout", action="append", metavar="PATH",
                   help="also confirm on this pairs file (repeatable; implies --confirm)")
    p.set_defaults(func=cmd_analyze)
    return parser


# Ray's errors that say the machine or cluster failed (memory, disk, a process or node died), as opposed
# to an exception raised by code running inside Ray (RayTaskError wraps those: its cause is looked at).
_RAY_RESOURCE_ERRORS = (
    "OutOfMemoryError", "OutOfDiskError", "ObjectStoreFullError", "WorkerCrashedError", "NodeDiedError",
    "LocalRayletDiedError", "RaySystemError", "ActorDiedError", "ActorUnavailableError", "OwnerDiedError",
    "ObjectLostError",
)


def ray_resource_error(err: BaseException) -> BaseException | None:
    """The Ray resource failure behind ``err`` (itself, its cause chain, or a RayTaskError's cause), or None."""
    if "ray" not in sys.modules:
        return None
    import ray.exceptions

    kinds = tuple(getattr(ray.exceptions, name) for name in _RAY_RESOURCE_ERRORS if hasattr(ray.exceptions, name))
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kinds):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


def _bug(command: str, err: Exception) -> int:
    """Report an exception that is no input problem (call inside its ``except``): the traceback, and
    whether the machine (a Ray resource failure, exit 3) or raydetox (a bug, exit 1) failed."""
    traceback.print_exc()
    resource = ray_resource_error(err)
    if resource is not None:
        print(f"raydetox {command}: Ray failed: {type(resource).__name__}: "
              f"{str(resource).strip().splitlines()[0] if str(resource).strip() else ''} — a problem of the "
              "machine or cluster (memory, disk, a dead worker or node), not of your input or of raydetox: "
              "free the resource (or lower ray.max_concurrent_trials / batch sizes) and rerun with --resume",
              file=sys.stderr)
        return 3
    print(f"raydetox {command}: this is a bug in raydetox, not a problem with your input: please "
          "report it with the traceback above", file=sys.stderr)
    return 1


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real file behind stdout
        return False


@contextlib.contextmanager
def _own_warnings_as_lines(command: str) -> Iterator[None]:
    """Show raydetox's own warnings (a language without a word list, one the lexicon lacks) as
    ``raydetox CMD: warning: ...`` lines like the command's other warnings, not as Python's two lines
    of source location and code; libraries' warnings keep their format."""
    package = str(Path(__file__).resolve().parent)
    # The format, not the display: a caller recording warnings (pytest.warns) still records them.
    default = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None):  # noqa: ANN001 (warnings' hook)
        if str(filename).startswith(package) and issubclass(category, UserWarning):
            return f"raydetox {command}: warning: {' '.join(str(message).split())}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatted
    try:
        yield
    finally:  # catch_warnings restores the filters and showwarning only
        warnings.formatwarning = default


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raydetox`` console script."""
    gc_policy.relax_young_generation()
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if not sys.stderr.isatty():
        # In a log (CI, a Ray job, `make quickstart > log`) a progress bar writes a fragment per update.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        with _own_warnings_as_lines(args.command):
            code = func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError as err:
        if not _stdout_gone():  # another pipe broke (a worker's, a subprocess's): not the reader's doing
            return _bug(args.command, err)
        # The reader of stdout went away (`raydetox config | head -1`): stop quietly, as Unix tools do.
        # Python's recipe: point stdout at devnull, so that the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except RaydetoxError as err:
        # An input problem: one line naming the file/row/column/key, no traceback.
        message = " ".join(line.strip() for line in str(err).splitlines())
        print(f"raydetox {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as err:  # not an input problem: raydetox broke, and the traceback is what a fix needs
        return _bug(args.command, err)


if __name__ == "__main__":
    sys.exit(main())
