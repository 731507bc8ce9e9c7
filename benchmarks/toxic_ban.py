"""Toxic-term processors side by side: ``toxic_ban: first_token`` vs ``every_piece`` on a copy-prone base.

Decodes validation rows of the prepared data (never the test split) with the cached embedded base, once
per setting, and scores each with the sweep's own scorer: degenerate share (n-gram loops), copy rate,
lexicon toxicity, judged STA, chrF and J (judge-based STA × similarity × chrF). Prints the table and each
setting's ratio to ``first_token``; writes it, and a few outputs per setting, under ``--out``.

    python benchmarks/toxic_ban.py --data ../shared/data/multilingual_paradetox [--rows 200]
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
from quality import data_arguments, prepared_data  # benchmarks/, the script's own folder

from raydetox.decoding import generate
from raydetox.pretraining_corpus import cache_root, find_cached_base
from raydetox.experiment import toxic_token_ids
from raydetox.judge import judge_for
from raydetox.metrics import get_scorer
from raydetox.modeling import load_trained

SHOWN = ("degenerate_rate", "copy_rate", "toxicity", "sta", "chrf", "bertscore_f1", "j")


def newest_embedded_base(root: Path) -> Path:
    """The newest built embedded base under ``root`` (a dir whose ``build_report.json`` exists)."""
    built = sorted((p.parent for p in root.glob("*/build_report.json")), key=lambda p: p.stat().st_mtime)
    if not built:
        raise SystemExit(f"no built embedded base under {root} (run `make quickstart` or a sweep once)")
    return built[-1]


def validation_rows(pairs: pd.DataFrame, n: int) -> pd.DataFrame:
    """About ``n`` validation rows, the same share of every language (in split order)."""
    per_lang = max(1, n // pairs["lang"].nunique())
    return pairs.groupby("lang", sort=True, group_keys=False).head(per_lang).reset_index(drop=True)


def main() -> None:
    parser = data_arguments(__doc__, "out/bench-toxic-ban")
    parser.add_argument("--model", type=Path, default=None,
                        help="default: the cached embedded base of the config, else the newest cached one")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--toxic-penalty", type=float, default=float("inf"))
    parser.add_argument("--bonus", type=float, nargs="+", default=[0.0, 2.0, 4.0],
                        help="decoding.toxic_continuation_bonus values tried with every_piece")
    args = parser.parse_args()
    cfg, prepared, out = prepared_data(args)
    pairs = validation_rows(prepared.validation, args.rows)
    # The base this config builds (what its sweeps start from), else the newest one built.
    model_dir = args.model or find_cached_base(cfg.model.embedded, cfg.model.cache_dir) or newest_embedded_base(
        cache_root(cfg.model.cache_dir))
    model, tokenizer = load_trained(model_dir)
    scorer = get_scorer(cfg.metrics, prepared.lexicon, judge=judge_for(cfg, prepared))
    base = cfg.decoding
    settings = {"no ban": dataclasses.replace(base, toxic_penalty=0.0),
                "first_token": dataclasses.replace(base, toxic_penalty=args.toxic_penalty, toxic_ban="first_token")}
    for bonus in args.bonus:
        settings[f"every_piece bonus={bonus:g}"] = dataclasses.replace(
            base, toxic_penalty=args.toxic_penalty, toxic_ban="every_piece", toxic_continuation_bonus=bonus)
    rows, samples = {}, []
    for name, decoding in settings.items():
        t0 = time.perf_counter()
        outputs = generate(model, tokenizer, list(pairs["toxic"]), decoding,
                           toxic_token_ids=toxic_token_ids(prepared.lexicon, tokenizer, decoding),
                           max_source_length=cfg.model.max_source_length, lexicon=prepared.lexicon)
        seconds = time.perf_counter() - t0
        scores, sentences = scorer.score_with_sentences(list(pairs["toxic"]), outputs, [list(r) for r in pairs["refs"]],
                                                        list(pairs["lang"]))
        rows[name] = {**{m: scores[m] for m in SHOWN}, "decode_s": seconds}
        shown = sentences.assign(input=list(pairs["toxic"]), output=outputs, setting=name)
        samples.append(shown[shown["toxicity"] > 0].head(3)[["setting", "input", "output"]] if "toxicity" in shown
                       else shown.head(3)[["setting", "input", "output"]])
    table = pd.DataFrame(rows).T
    ratios = table[list(SHOWN)].div(table.loc["first_token", list(SHOWN)]).add_suffix(" ÷ first_token")
    print(f"# Toxic-term processors, toxic_penalty {args.toxic_penalty:g}: {len(pairs)} validation rows "
          f"({pairs['lang'].nunique()} languages), base {model_dir}")
    print(table.round(4).to_markdown())
    print()
    print(ratios.round(3).to_markdown())
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "toxic_ban.csv")
    pd.concat(samples).to_csv(out / "samples.csv", index=False)


if __name__ == "__main__":
    main()
