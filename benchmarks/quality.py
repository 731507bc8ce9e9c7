"""Quality benchmark: baseline vs curriculum (and decoding penalties) vs the copy and delete systems.

Trains the baseline schedule (one ``full`` stage) and a curriculum schedule on multilingual ParaDetox
with the embedded base, then scores, on the same test split with the same code: each trained model
under a small grid of decoding penalties, and the copy/delete reference systems. Prints the overall
table and per-language tables of copy-rate, BLEU, chrF, BERTScore, toxicity and J.

    python benchmarks/quality.py --data ../shared/data/multilingual_paradetox [--config experiments/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import pandas as pd
import yaml

from raydetox.config import ExperimentConfig, load_config
from raydetox.data.prepare import PreparedData, prepare
from raydetox.experiment import build_trainer, score_reference_systems
from raydetox.results import SUMMARY_METRICS
from raydetox.trainer import baseline_schedule

PER_LANG = ("copy_rate", "bleu", "chrf", "bertscore_f1", "toxicity", "j")


def data_arguments(doc: str, out: str) -> argparse.ArgumentParser:
    """The arguments every quality benchmark takes: config, data, output dir and config overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/quickstart.yaml")
    parser.add_argument("--data", default="../shared/data/multilingual_paradetox")
    parser.add_argument("--out", default=out)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser


def prepared_data(args: argparse.Namespace) -> tuple[ExperimentConfig, PreparedData, Path]:
    """The config (with ``--data`` and ``--set``), the data it prepares under ``--out``, and ``--out``."""
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    cfg = load_config(args.config, {"data.source": args.data, **overrides})
    out = Path(args.out)
    return cfg, prepare(cfg, out / "data"), out


def main() -> None:
    parser = data_arguments(__doc__, "out/bench-quality")
    parser.add_argument("--toxic-penalty", type=float, nargs="+", default=[0.0, 2.0, float("inf")])
    parser.add_argument("--copy-penalty", type=float, nargs="+", default=[0.0, 2.0])
    args = parser.parse_args()
    cfg, prepared, out = prepared_data(args)
    systems: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    for name, schedule in (("baseline", baseline_schedule(cfg.schedule)), ("curriculum", list(cfg.schedule))):
        t0 = time.perf_counter()
        trainer = build_trainer(cfg, prepared, out / name)
        trainer.run_schedule(schedule, resume=True)
        timings[name] = time.perf_counter() - t0
        for toxic, copy in itertools.product(args.toxic_penalty, args.copy_penalty):
            decoding = dataclasses.replace(cfg.decoding, toxic_penalty=toxic, copy_penalty=copy)
            scores, _ = trainer.generate_and_score(prepared.test, decoding=decoding, prefix="test_")
            systems[f"{name} tox={toxic:g} copy={copy:g}"] = scores
    systems.update(score_reference_systems(cfg, prepared))

    overall = pd.DataFrame(
        {name: {m: s[f"test_{m}"] for m in SUMMARY_METRICS} for name, s in systems.items()}
    ).T
    print(f"# Quality on the test split ({len(prepared.test)} pairs, 9 languages); training seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(overall.round(4).to_markdown())
    langs = sorted(prepared.test["lang"].unique())
    picks = ["baseline tox=0 copy=0", "curriculum tox=0 copy=0", _best(overall), "copy", "delete"]
    for metric in PER_LANG:
        table = pd.DataFrame(
            {name: {lang: systems[name].get(f"test_{metric}/{lang}") for lang in langs} for name in dict.fromkeys(picks)}
        )
        print(f"\n## {metric} per language")
        print(table.round(4).to_markdown())
    out.mkdir(parents=True, exist_ok=True)
    overall.to_csv(out / "overall.csv")
    (out / "systems.json").write_text(json.dumps(systems, indent=1, allow_nan=True))


def _best(overall: pd.DataFrame, bound: float = 0.25) -> str:
    """The trained setting with the best chrF among those copying at most ``bound`` of the inputs."""
    trained = overall.drop(index=["copy", "delete"])
    feasible = trained[trained["copy_rate"] <= bound]
    return str((feasible if len(feasible) else trained)["chrf"].idxmax())


if __name__ == "__main__":
    main()
