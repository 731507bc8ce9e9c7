"""The data pipeline as one step: load → split → lexicon → clean → difficulty → buckets → stage datasets.

``prepare`` writes everything a training run needs into one directory, and ``load_prepared`` reads it
back, so trainers and Ray workers never repeat the cleaning or the scoring.

Order matters: the split comes first so the lexicon is learned from training pairs only (the
toxicity metric must not have seen the test set), and bucket thresholds come from the train split.
A language whose rows are all in validation/test (or whose train rows cleaning dropped) is prepared for
evaluation only: its word lists are loaded, its rows cleaned, scored and bucketed against themselves
(:func:`~raydetox.data.stages.assign_buckets`), and the report lists it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raydetox.config import STAGES, CleaningConfig, ExperimentConfig, dump_config
from raydetox.data.clean import CleanResult, clean_pairs, clean_train_apart
from raydetox.data.difficulty import score_difficulty
from raydetox.data.io import CAPPED, LANGUAGES_LEFT_OUT, DataError, load_pairs
from raydetox.data.lexicon import Lexicon
from raydetox.data.split import split_pairs
from raydetox.data.stages import assign_buckets, stage_subsets

EVAL_SPLITS: tuple[str, ...] = ("validation", "test")


@dataclass
class PreparedData:
    """Stage subsets of the train split, the evaluation splits, the lexicon, and where they live."""

    out_dir: Path
    stages: dict[str, pd.DataFrame]
    validation: pd.DataFrame
    test: pd.DataFrame
    lexicon: Lexicon
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def languages(self) -> list[str]:
        return sorted(self.stages["full"]["lang"].unique())

    def require_training_splits(self) -> None:
        """Raise :class:`DataError` (naming the prepared dir and the counts) unless the train, validation
        and test splits all hold rows: training evaluates every stage on validation, the report and the
        confirmation score test."""
        counts = {"train": len(self.stages["full"]), "validation": len(self.validation), "test": len(self.test)}
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise DataError(
                f"{self.out_dir}: the {' and '.join(empty)} split{'s hold' if len(empty) > 1 else ' holds'} no rows "
                f"after cleaning ({counts}); "
                "training needs all three: give more rows (data.max_rows_per_lang), other split fractions "
                "(split.*), or mark them in data.split_column (see dropped.csv for what cleaning removed)"
            )


def _stage_path(out_dir: Path, name: str) -> Path:
    return out_dir / "stages" / f"{name}.parquet"


def prepare(
    cfg: ExperimentConfig, out_dir: str | Path, source: str | None = None, train_cleaning: CleaningConfig | None = None
) -> PreparedData:
    """Run the whole data pipeline for ``cfg`` and write its outputs under ``out_dir``.

    Writes ``stages/{easy,medium,hard,full,validation,test}.parquet``, ``pairs.parquet`` (every kept row
    with its split, scores and bucket), ``dropped.parquet``/``dropped.csv`` (every dropped row with its
    reason), ``counts.csv``, ``lexicon.json``, ``config.yaml``, ``report.md`` and ``difficulty.png``;
    ``manifest.json`` last, as the mark of success. When cleaning keeps no pair, or no train pair, only the
    dropped rows and counts are written and a :class:`DataError` names the drop reasons (a split with no
    train row at all is one too); a language with no train pair left is kept for evaluation only, with a
    warning (module doc). ``train_cleaning`` cleans the
    train split's rows with other rules than ``cfg.cleaning`` (a cleaning ablation): the validation and
    test rows stay those of ``cfg.cleaning``.
    """
    out = Path(out_dir)
    (out / "stages").mkdir(parents=True, exist_ok=True)
    # A manifest left by an earlier run would claim success for this one until it is rewritten.
    (out / "manifest.json").unlink(missing_ok=True)
    t0 = time.perf_counter()

    src = source if source is not None else cfg.data.source
    pairs = load_pairs(cfg.data, source)
    capped = pairs.attrs.get(CAPPED, [])
    languages_left_out = pairs.attrs.get(LANGUAGES_LEFT_OUT, {})
    # load_pairs has put data.split_column's values into "split" (under that name).
    pairs = split_pairs(pairs, cfg.split, split_column="split" if cfg.data.split_column else None)
    train = pairs[pairs["split"] == "train"]
    if train.empty:
        raise DataError(f"{src}: no train rows: the split puts all {len(pairs)} rows in validation/test")
    # Word lists for every language of the data (evaluation-only ones too); learned terms from train only.
    lexicon = Lexicon.learn(train, cfg.lexicon, base_dir=Path.cwd(), languages=sorted(set(pairs["lang"])))
    drop_unidentified = not cfg.data.keep_unidentified
    cleaned: CleanResult = (
        clean_pairs(pairs, cfg.cleaning, lexicon, drop_unidentified=drop_unidentified) if train_cleaning is None
        else clean_train_apart(pairs, cfg.cleaning, train_cleaning, lexicon, drop_unidentified=drop_unidentified)
    )
    if cleaned.kept.empty:
        paths = cleaned.write(out)
        reasons = ", ".join(f"{r} {n}" for r, n in cleaned.dropped["reason"].value_counts().items())
        raise DataError(
            f"{src}: no pair kept: all {len(pairs)} rows dropped ({reasons}); each with its reason in "
            f"{paths['dropped_csv']}"
        )
    kept_train = cleaned.kept["split"] == "train"
    if not kept_train.any():
        paths = cleaned.write(out)
        gone = cleaned.dropped[cleaned.dropped["split"] == "train"]
        reasons = ", ".join(f"{r} {n}" for r, n in gone["reason"].value_counts().items())
        raise DataError(
            f"{src}: no training pair kept: cleaning dropped all {len(gone)} train rows ({reasons}) of language(s) "
            f"{', '.join(sorted(set(train['lang'])))}; each with its reason in {paths['dropped_csv']}"
        )
    eval_only = sorted(set(cleaned.kept["lang"]) - set(cleaned.kept.loc[kept_train, "lang"]))
    if eval_only:
        warnings.warn(
            f"{src}: language(s) {', '.join(eval_only)} have no training pair (validation/test rows only): "
            "prepared for evaluation only", stacklevel=2,
        )
    scored = score_difficulty(cleaned.kept, cfg.curriculum, lexicon)
    table = assign_buckets(scored, cfg.curriculum)
    stages = stage_subsets(table)

    table.to_parquet(out / "pairs.parquet", index=False)
    for name, frame in stages.items():
        frame.to_parquet(_stage_path(out, name), index=False)
    evals = {s: table[table["split"] == s].reset_index(drop=True) for s in EVAL_SPLITS}
    for name, frame in evals.items():
        frame.to_parquet(_stage_path(out, name), index=False)
    cleaned.write(out)
    lexicon.save(out / "lexicon.json")
    dump_config(cfg, out / "config.yaml")

    prepared = PreparedData(out, stages, evals["validation"], evals["test"], lexicon, cleaned.dropped)
    write_report(prepared, table, cleaned, n_input=len(pairs), seconds=time.perf_counter() - t0,
                 identified=identified_counts(pairs), capped=capped, languages_left_out=languages_left_out)
    return prepared


def load_prepared(out_dir: str | Path) -> PreparedData:
    """Read back what :func:`prepare` wrote (no recomputation)."""
    out = Path(out_dir)
    missing = [p for p in (_stage_path(out, n) for n in (*STAGES, *EVAL_SPLITS)) if not p.is_file()]
    if missing or not (out / "lexicon.json").is_file():
        raise DataError(
            f"{out}: not a prepared data directory (missing {missing or ['lexicon.json']}); "
            "run `raydetox prepare` first"
        )
    stages = {n: pd.read_parquet(_stage_path(out, n)) for n in STAGES}
    validation, test = (pd.read_parquet(_stage_path(out, n)) for n in EVAL_SPLITS)
    dropped_path = out / "dropped.parquet"
    dropped = pd.read_parquet(dropped_path) if dropped_path.is_file() else pd.DataFrame()
    return PreparedData(out, stages, validation, test, Lexicon.load(out / "lexicon.json"), dropped)


def _plot_difficulty(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = table[table["split"] == "train"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for bucket in ("easy", "medium", "hard"):
        values = train.loc[train["bucket"] == bucket, "difficulty"]
        ax.hist(values, bins=30, alpha=0.6, label=f"{bucket} (n={len(values)})")
    ax.set_xlabel("difficulty (per-language rank-weighted)")
    ax.set_ylabel("training pairs")
    ax.set_title("Curriculum difficulty of training pairs by bucket")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def identified_counts(pairs: pd.DataFrame) -> pd.Series | None:
    """Rows per language the identifier gave (``und`` included), or None when no row was identified."""
    if "lang_confidence" not in pairs.columns:
        return None
    counts = pairs.loc[pairs["lang_confidence"].notna(), "lang"].value_counts().sort_index()
    return counts.rename("rows").rename_axis("identified language")


def write_report(
    prepared: PreparedData,
    table: pd.DataFrame,
    cleaned: CleanResult,
    n_input: int,
    seconds: float,
    identified: pd.Series | None = None,
    capped: list[dict[str, Any]] | None = None,
    languages_left_out: dict[str, int] | None = None,
) -> Path:
    """Markdown report: counts per language, per drop reason, per split and stage; difficulty histogram;
    the languages identified from the text (``identified``, see :func:`identified_counts`); the rows
    ``data.max_rows_per_lang`` left out before all this (``capped``: :data:`raydetox.data.io.CAPPED`)
    and those of languages ``data.languages`` left out (``languages_left_out``, rows per language);
    the languages without training pairs; the templated word lists not found."""
    out = prepared.out_dir
    capped = capped or []
    languages_left_out = languages_left_out or {}
    eval_only = sorted(set(table["lang"]) - set(prepared.languages))
    missing = prepared.lexicon.missing_wordlists
    _plot_difficulty(table, out / "difficulty.png")
    per_stage = pd.DataFrame(
        {name: frame.groupby("lang").size() for name, frame in prepared.stages.items()}
    ).fillna(0).astype(int)
    per_split = table.groupby(["lang", "split"]).size().unstack(fill_value=0)
    reasons = cleaned.dropped.groupby("reason").size().rename("rows").to_frame()
    lex = pd.Series(prepared.lexicon.summary(), name="terms").to_frame()
    lex.index.name = "lang"
    lines = [
        "# raydetox prepare report",
        "",
        f"- input pairs: {n_input}; kept: {len(cleaned.kept)}; dropped: {len(cleaned.dropped)} "
        f"(kept + dropped = {len(cleaned.kept) + len(cleaned.dropped)})",
        *([f"- left out before that by data.languages: {sum(languages_left_out.values())} rows of other "
           "languages (" + ", ".join(f"{k} {v}" for k, v in languages_left_out.items()) + ")"]
          if languages_left_out else []),
        *([f"- left out before that by data.max_rows_per_lang: {sum(r['left_out'] for r in capped)} rows "
           "(see below)"] if capped else []),
        f"- languages: {', '.join(prepared.languages)}",
        *([f"- evaluation-only languages (no training pair): {', '.join(eval_only)}"] if eval_only else []),
        f"- time: {seconds:.1f} s",
        "- dropped rows with their reasons: `dropped.csv` / `dropped.parquet`",
        "",
        "## Cleaning: counts per language and reason",
        "",
        cleaned.counts.to_markdown(),
        "",
        "## Dropped rows per reason",
        "",
        reasons.to_markdown() if len(reasons) else "(none)",
        "",
        *([
            "## Languages identified from the text (no language column, file name or default)",
            "",
            "py3langid; `und` = probability under `data.min_lang_confidence` (dropped as "
            "`unidentified_language` unless `data.keep_unidentified`).",
            "",
            identified.to_frame().to_markdown(),
            "",
        ] if identified is not None else []),
        *([
            "## Rows left out by data.max_rows_per_lang",
            "",
            "The first rows of each language (with a split column, of each of its splits, in proportion to "
            "the splits' sizes) were kept; these were never read further:",
            "",
            pd.DataFrame(capped).fillna("").to_markdown(index=False),
            "",
        ] if capped else []),
        "## Kept pairs per language and split",
        "",
        per_split.to_markdown(),
        "",
        *([
            "## Languages for evaluation only",
            "",
            "No training pair (none in the split, or cleaning dropped them): their validation/test rows are "
            "scored and bucketed against their own rows; no curriculum stage holds them.",
            "",
            per_split.loc[eval_only].to_markdown(),
            "",
        ] if eval_only else []),
        "## Curriculum stages (train split) per language",
        "",
        per_stage.to_markdown(),
        "",
        "## Lexicon terms per language",
        "",
        lex.to_markdown(),
        "",
        *([
            "## Word lists not found",
            "",
            "Templated (`{lang}`) word lists of `lexicon.wordlists` missing for a language: its terms are "
            "only the learned ones and those of its other lists.",
            "",
            *[f"- `{path}`" for path in missing],
            "",
        ] if missing else []),
        "## Difficulty",
        "",
        "![difficulty histogram](difficulty.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "input": n_input,
                "kept": len(cleaned.kept),
                "dropped": len(cleaned.dropped),
                "stages": {n: len(f) for n, f in prepared.stages.items()},
                "validation": len(prepared.validation),
                "test": len(prepared.test),
                "languages": prepared.languages,
                **({"identified_languages": identified.to_dict()} if identified is not None else {}),
            },
            indent=2,
        )
    )
    return path
