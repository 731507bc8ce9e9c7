"""Does training beat the untrained base? One schedule trained, scored on validation only, beside the base.

Prepares the config's data (``--data``, ``--set``), trains its schedule (``--set 'schedule=[...]'``) from
the cached embedded base, then decodes the validation split — never the test split — with the trained
weights and with the untrained base under each ``--decoding`` setting (``key=value,key=value``; repeatable;
default: the config's decoding), both scored by the sweep's scorer (judge-based STA and J, copy rate,
chrF, degenerate share), beside the ``copy`` and ``delete`` systems and the ``kept (oracle)`` upper bound
of a deletion-only rewrite (each reference's kept source words: it reads the references). Appends one row per (system,
decoding) to ``--out/runs.csv`` under ``--label``, so that successive runs build one table, and per decoding the paired-bootstrap interval of trained −
untrained J over the same sentences to ``--out/paired.csv``; the untrained rows (scores and per-sentence
predictions) are computed once per decoding and base.

``--input delete`` makes the model read each sentence with its lexicon terms deleted (the ``delete``
reference system's output) in training and in decoding, for both systems; the scores still compare the
output with the original toxic sentence (copy rate, similarity, STA). The question it answers: does a
copy-prone base learn more from pairs whose input is already close to the target?

    OMP_NUM_THREADS=1 python benchmarks/train_vs_untrained.py --label lr3e-4 --set training.torch_threads=1 \\
        --set 'schedule=[{stage: full, epochs: 2, lr: 3.0e-4}]' --decoding '' --decoding no_repeat_ngram_size=3
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pandas as pd
import yaml
from quality import data_arguments, prepared_data  # benchmarks/, the script's own folder

from raydetox.cache import content_hash
from raydetox.config import DecodingConfig
from raydetox.data.prepare import PreparedData
from raydetox.decoding import generate
from raydetox.experiment import build_trainer, load_untrained, toxic_token_ids
from raydetox.judge import judge_for
from raydetox.targets import training_targets
from raydetox.metrics import get_scorer, reference_systems
from raydetox.modeling import resolve_base
from raydetox.pretraining_corpus import base_texts
from raydetox.results import write_predictions
from raydetox.stats import paired_bootstrap
from raydetox.trainer import score_outputs

SHOWN = ("j", "sta", "copy_rate", "chrf", "bertscore_f1", "degenerate_rate", "toxicity")


def decoding_setting(base: DecodingConfig, spec: str) -> DecodingConfig:
    """``base`` with the ``key=value,…`` of ``spec`` (YAML values: ``.inf``, ``null``); ``''`` = ``base``."""
    changes: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--decoding {spec!r}: expected key=value, got {item!r}")
        changes[key.strip()] = yaml.safe_load(value)
    return dataclasses.replace(base, **changes)


def deleted_inputs(prepared: PreparedData) -> PreparedData:
    """``prepared`` with every ``toxic`` sentence replaced by it without its lexicon terms, in a directory
    of its own (the trainer's per-stage scoring fits its own judge there: the data's judge has seen
    training sentences that, without their terms, are some validation sentences)."""
    def delete(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out["toxic"] = [prepared.lexicon.remove(t, lang) for t, lang in zip(frame["toxic"], frame["lang"])]
        return out

    out_dir = prepared.out_dir.parent / f"{prepared.out_dir.name}-input-delete"
    out_dir.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(prepared, out_dir=out_dir, stages={k: delete(v) for k, v in prepared.stages.items()},
                               validation=delete(prepared.validation), test=delete(prepared.test))


def main() -> None:
    parser = data_arguments(__doc__, "out/train-vs-untrained")
    parser.add_argument("--label", required=True, help="this run's name in runs.csv")
    parser.add_argument("--decoding", action="append", default=None, metavar="KEY=VALUE,...")
    parser.add_argument("--input", choices=("toxic", "delete"), default="toxic",
                        help="what the model reads: the toxic sentence, or it with its lexicon terms deleted")
    args = parser.parse_args()
    cfg, prepared, out = prepared_data(args)
    specs = args.decoding or [""]
    scorer = get_scorer(cfg.metrics, prepared.lexicon, judge=judge_for(cfg, prepared))
    pairs = prepared.validation
    model_data = prepared if args.input == "toxic" else deleted_inputs(prepared)
    inputs = list(model_data.validation["toxic"])
    # One base for both systems, the one of the original data whatever the model reads (built if needed).
    base_dir = resolve_base(cfg.model, texts=base_texts(cfg, prepared))
    train_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=base_dir, cache_dir=None))

    def rewrite(model: Any, tokenizer: Any, decoding: DecodingConfig) -> tuple[dict[str, float], pd.DataFrame]:
        outputs = generate(model, tokenizer, inputs, decoding, toxic_token_ids(prepared.lexicon, tokenizer, decoding),
                           cfg.model.max_source_length, lexicon=prepared.lexicon, langs=list(pairs["lang"]))
        return score_outputs(scorer, pairs, outputs)  # against the original toxic sentences

    rows: list[dict[str, Any]] = []
    trained_j: dict[str, pd.Series] = {}

    run_dir = out / "runs" / args.label
    t0 = time.perf_counter()
    trainer = build_trainer(train_cfg, model_data, run_dir)
    stages = trainer.run_schedule(list(cfg.schedule), resume=False)
    train_s = time.perf_counter() - t0
    for spec in specs:
        scores, predictions = rewrite(trainer.model, trainer.processing_class, decoding_setting(cfg.decoding, spec))
        trained_j[spec] = predictions["j"]
        rows.append({"label": args.label, "system": "trained", "decoding": spec, **{m: scores[m] for m in SHOWN},
                     "train_s": round(train_s, 1), "steps": sum(r.steps for r in stages),
                     "train_loss": stages[-1].train_loss})

    model, tokenizer = load_untrained(cfg, base_dir=base_dir)
    model.to(trainer.model.device)  # on the trained model's device (a GPU, where there is one)
    paired: list[dict[str, Any]] = []
    for spec in specs:
        decoding = decoding_setting(cfg.decoding, spec)
        # The untrained rows depend on the base, the validation rows and the decoding only: kept across runs.
        key = content_hash([str(model.name_or_path), list(pairs["id"]), dataclasses.asdict(decoding)]
                           + ([args.input] if args.input != "toxic" else []))[:16]
        cached = out / "untrained" / f"{key}.json"
        if not cached.with_suffix(".parquet").is_file():  # written last
            scores, predictions = rewrite(model, tokenizer, decoding)
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(scores, allow_nan=True))
            write_predictions(predictions, cached.with_suffix(".parquet"))
        scores = json.loads(cached.read_text())
        untrained_j = pd.read_parquet(cached.with_suffix(".parquet"))["j"]
        diff = paired_bootstrap(trained_j[spec].to_numpy(), untrained_j.to_numpy())
        paired.append({"label": args.label, "decoding": spec, "dj": diff.estimate, "dj_low": diff.low,
                       "dj_high": diff.high})
        rows.append({"label": args.label, "system": "untrained", "decoding": spec, **{m: scores[m] for m in SHOWN}})

    # The trivial systems on the same rows, for scale (no decoding: they do not generate), and an oracle
    # that reads the references: their kept source words, what a perfect deletion-only rewrite writes.
    systems = reference_systems(list(pairs["toxic"]), [list(r) for r in pairs["refs"]], list(pairs["lang"]),
                                prepared.lexicon)
    systems["kept (oracle)"] = training_targets(list(pairs["toxic"]), [r[0] for r in pairs["refs"]],
                                                "kept_source_words")
    for name, outputs in systems.items():
        scores, _ = score_outputs(scorer, pairs, outputs)
        rows.append({"label": args.label, "system": name, "decoding": "", **{m: scores[m] for m in SHOWN}})

    table = pd.DataFrame(rows)
    schedule = [dataclasses.asdict(s) for s in cfg.schedule]
    print(f"# {args.label}: {len(pairs)} validation rows, input {args.input}; schedule {schedule}")
    print(table.round(4).to_markdown(index=False))
    print(pd.DataFrame(paired).round(4).to_markdown(index=False))
    for name, frame in (("runs.csv", table), ("paired.csv", pd.DataFrame(paired))):
        path = out / name
        frame.to_csv(path, mode="a", header=not path.is_file(), index=False)


if __name__ == "__main__":
    main()
