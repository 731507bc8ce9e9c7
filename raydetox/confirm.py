"""Confirmation on untouched data: does the schedule chosen on validation hold up on the test split?

Selection (objective, ASHA, best row) reads validation rows only. This step runs after it, once: the
selected row's variant (the checkpoint of every seed that ran it), the baseline's best row decoded as the chosen row is, the
``untrained`` base model with the selected row's decoding, and the ``copy`` and ``delete`` reference
systems generate for the sweep's prepared test split (``RESULTS_DIR/data/stages/test.parquet``, which
no selection step reads) and for every holdout pairs file given, and are scored sentence by sentence
with the sweep's own :class:`~raydetox.metrics.Scorer`.

- Scores per system and language (and ``all``): the primary metric J, copy rate, corpus chrF and BLEU,
  BERTScore, STA, similarity to the input and the degenerate share, each with a 95% bootstrap interval
  over sentences (BLEU: point estimate only). Seeds are pooled per sentence (the mean of a sentence's
  scores over the seeds; chrF over all seeds' outputs); with several seeds the spread across seeds is
  reported too (mean and t-interval).
- Paired-bootstrap intervals of best − baseline, best − untrained and best − delete on J and the copy
  rate (STA and copy rate for a set without references; J over the rows with one, STA and copy rate over
  every row, for a set where only some have one), each with a plain verdict.
- Rows without references (a holdout of toxic inputs only, or whose reference merely repeats its input)
  are scored only on what needs no reference: copy rate, STA, similarity to the input, degenerate share.
  Their J, chrF, BLEU and BERTScore are NaN; nothing stands in for the missing reference.

The baseline and ``untrained`` are reference points and always reported; when either beats the chosen
schedule on the test split, the report says plainly that no schedule beat it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sacrebleu.metrics import CHRF

from raydetox.compat import score_from_stats, sentence_stats
from raydetox.config import DataConfig, DecodingConfig, ExperimentConfig
from raydetox.data.io import DataError, load_pairs
from raydetox.data.lexicon import Lexicon
from raydetox.errors import ResultsError
from raydetox.judge import recorded_judge
from raydetox.metrics import Scorer, get_scorer, normalize_whitespace, ref_streams, reference_systems, resolve_device
from raydetox.results import CONFIRMATION_FILES, DATA_DIR, UNTRAINED
from raydetox.selection import (
    baseline_mask,
    best_config,
    checkpoint_of,
    decoded_alike,
    seed_of,
    seed_rows,
    untrained_mask,
)
from raydetox.stats import (
    DECISION_WIDTH,
    Interval,
    Verdict,
    bootstrap_interval,
    paired_bootstrap,
    seed_summary,
    verdict,
)

TEST_SPLIT = "stages/test.parquet"
BEST, BASELINE, COPY, DELETE = "best", "baseline", "copy", "delete"
# What the chosen schedule is compared with, in the order the report lists them.
COMPARED_WITH: tuple[str, ...] = (BASELINE, UNTRAINED, DELETE)
PRIMARY = "j"
# Sentence-score column of Scorer.sentence_scores → (label, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "j": ("J", True),
    "copy": ("copy rate", False),
    "chrf": ("chrF", True),
    "bleu": ("BLEU", True),
    "bertscore_f1": ("BERTScore", True),
    "sta": ("STA", True),
    "sim": ("similarity to input", True),
    "degenerate": ("degenerate share", False),
}
# Metrics compared pairwise: with references, and for rows without any.
PAIRED_WITH_REFS: tuple[str, ...] = (PRIMARY, "copy")
PAIRED_WITHOUT_REFS: tuple[str, ...] = ("sta", "copy")
# Bootstrap resamples per interval. Hundreds of intervals are drawn (system × language × metric) and
# corpus chrF is a Python statistic; 2,000 resamples put the Monte Carlo error of a 95% endpoint well
# below the sampling width of the interval itself (Efron & Tibshirani recommend ≥ 1,000 for BCa).
N_RESAMPLES = 2000
SENTENCE_COLUMNS: tuple[str, ...] = (
    "copy", "copy_loose", "exact", "chrf", "bertscore_f1", "bertscore_src_f1", "sim", "toxicity", "judge_toxicity",
    "sta", "j",
    "degenerate", "length_ratio",
)
TABLE_COLUMNS: tuple[str, ...] = (
    "dataset", "kind", "system", "lang", "metric", "estimate", "low", "high", "n", "std", "outcome", "text",
)

_CHRF = CHRF()  # sacrebleu's defaults, as raydetox.metrics.Scorer


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Rows to confirm on: the test split or a holdout file. ``pairs`` has id, lang, toxic and refs
    (a list per row; empty when the row has no reference)."""

    name: str
    source: Path
    pairs: pd.DataFrame
    notes: tuple[str, ...] = ()

    @property
    def has_refs(self) -> np.ndarray:
        return self.pairs["refs"].map(len).to_numpy() > 0


@dataclasses.dataclass(frozen=True)
class Run:
    """One system generating: a checkpoint (or the base model, or a reference system) and its decoding."""

    system: str
    decoding: DecodingConfig | None = None
    checkpoint: Path | None = None
    trial_id: str | None = None
    seed: Any = None


@dataclasses.dataclass(frozen=True, eq=False)
class Selection:
    """What was chosen on validation: the sweep's results table and experiment, its best row and the
    baseline's row (``None`` without a baseline trial)."""

    results_dir: Path
    experiment: ExperimentConfig
    df: pd.DataFrame
    best: pd.Series
    baseline: pd.Series | None


@dataclasses.dataclass
class Confirmation:
    """What :func:`confirm` computed and wrote."""

    selection: Selection
    table: pd.DataFrame
    predictions: pd.DataFrame
    runs: list[Run]
    sets: list[EvalSet]
    paths: dict[str, Path]
    notes: list[str]


# ------------------------------------------------------------------------------------------------ data


def load_test_split(results_dir: str | os.PathLike[str]) -> EvalSet:
    """The sweep's prepared test split (``RESULTS_DIR/data/stages/test.parquet``), read alone."""
    path = Path(results_dir) / DATA_DIR / TEST_SPLIT
    if not path.is_file():
        raise ResultsError(f"{path}: the sweep's test split is missing (raydetox sweep prepares it)")
    frame = pd.read_parquet(path, columns=["id", "lang", "toxic", "refs"])
    refs = [[r for r in row if isinstance(r, str) and r.strip()] for row in frame["refs"]]
    return EvalSet("test", path, frame.assign(refs=refs).reset_index(drop=True))


def load_holdout(path: str | os.PathLike[str]) -> EvalSet:
    """A holdout pairs file (any format :func:`raydetox.data.io.load_pairs` reads, columns detected).

    A reference identical to its input is a placeholder, not a rewrite (TextDetox's test inputs repeat
    the input in ``neutral_sentence``): it is dropped, and such rows count as rows without references.
    Rows with an empty input cannot be rewritten and are left out (and said so).
    """
    path = Path(path)
    try:
        pairs = load_pairs(DataConfig(), str(path))
    except DataError as err:
        if "no reference column" not in str(err):
            raise
        # analyze has no --set for data.neutral_columns: say what the file itself needs.
        found = str(err).removesuffix("; set data.toxic_column and data.neutral_columns")
        raise DataError(f"{found}; a holdout of toxic inputs only still needs a reference column, with empty cells "
                        "(e.g. an empty neutral_sentence, as TextDetox's test inputs have one)") from None
    notes = []
    empty = pairs["toxic"].str.strip() == ""
    if empty.any():
        notes.append(f"{int(empty.sum())} rows with an empty input left out: {pairs.loc[empty, 'id'].tolist()[:5]}")
    pairs = pairs[~empty].reset_index(drop=True)
    if pairs.empty:
        raise DataError(f"{path}: holdout has no row with an input to rewrite")
    placeholder = 0
    refs = []
    for toxic, row in zip(pairs["toxic"], pairs["refs"]):
        kept = [r for r in row if r.strip() and normalize_whitespace(r) != normalize_whitespace(toxic)]
        placeholder += len(kept) < len([r for r in row if r.strip()])
        refs.append(kept)
    if placeholder:
        notes.append(f"{placeholder} rows had a reference identical to the input: not used as a reference")
    frame = pd.DataFrame({"id": pairs["id"], "lang": pairs["lang"], "toxic": pairs["toxic"], "refs": refs})
    return EvalSet(f"holdout:{path.name}", path, frame, tuple(notes))


# ------------------------------------------------------------------------------------------------ systems


def _checkpoint_runs(
    results_dir: Path, df: pd.DataFrame, row: pd.Series, system: str, decoding: DecodingConfig, notes: list[str]
) -> list[Run]:
    runs = []
    for _, seed_row in seed_rows(df, row).iterrows():
        path = checkpoint_of(results_dir, seed_row)
        if path is None:
            notes.append(f"{system}: trial {seed_row['trial_id']} (seed {seed_of(seed_row)}) has no checkpoint on disk "
                         f"for stage {int(seed_row['stage_index'])} (removed by checkpoint retention): left out")
            continue
        runs.append(Run(system, decoding, path, str(seed_row["trial_id"]), seed_of(seed_row)))
    if not runs:
        # best_config.yaml is the best row's schedule: it re-trains that row, not a reference point.
        how = ("re-train it with best_config.yaml" if system == BEST else
               f"re-run the sweep (--overwrite) with a higher training.keep_checkpoints to keep the {system}'s")
        raise ResultsError(
            f"{results_dir}: no checkpoint on disk for the {system} row (trial {row['trial_id']}, stage "
            f"{int(row['stage_index'])}): checkpoint retention removed it; {how}"
        )
    return runs


def systems(chosen: Selection) -> tuple[list[Run], list[str]]:
    """The runs to confirm (best's seeds, baseline's seeds, untrained, copy, delete) and notes on what
    was left out."""
    results_dir, experiment, df, best, baseline = (
        chosen.results_dir, chosen.experiment, chosen.df, chosen.best, chosen.baseline)
    notes: list[str] = []
    best_decoding = best_config(experiment, best).decoding
    best_is_untrained = bool(untrained_mask(best.to_frame().T).iloc[0])
    if best_is_untrained:
        notes.append("the objective picked the untrained base itself: no schedule beat the untrained base on validation")
        runs = [Run(BEST, best_decoding)]
    else:
        runs = _checkpoint_runs(results_dir, df, best, BEST, best_decoding, notes)
    best_is_baseline = bool(baseline_mask(best.to_frame().T).iloc[0])
    if best_is_baseline:
        notes.append("the objective picked the baseline trial itself: no schedule beat the baseline on validation")
    elif baseline is not None:
        # Decoded as the chosen row is, whatever the validation row's penalties: best − baseline then
        # compares schedules even where the sweep never decoded the baseline that way.
        if not decoded_alike(baseline, best):
            notes.append(f"the baseline's validation row is decoded with toxic {float(baseline['toxic_penalty']):g}, "
                         f"copy {float(baseline['copy_penalty']):g} (the sweep has none with the chosen row's "
                         "penalties); here its checkpoint is decoded as the chosen row is")
        runs += _checkpoint_runs(results_dir, df, baseline, BASELINE, best_decoding, notes)
    else:
        notes.append("no baseline trial in this sweep (sweep.include_baseline: false)")
    runs += [] if best_is_untrained else [Run(UNTRAINED, best_decoding)]
    runs += [Run(COPY), Run(DELETE)]
    return runs, notes


def _generate(
    run: Run, sets: Sequence[EvalSet], experiment: ExperimentConfig, lexicon: Lexicon, base_dir: str | None
) -> list[list[str]]:
    """Outputs of ``run`` for each set, in row order (``untrained`` from ``base_dir``, the sweep's recorded
    base, when there is one)."""
    if run.system in (COPY, DELETE):
        return [
            reference_systems(list(s.pairs["toxic"]), list(s.pairs["refs"]), list(s.pairs["lang"]), lexicon)[run.system]
            for s in sets
        ]
    from raydetox.decoding import generate
    from raydetox.experiment import load_untrained, toxic_token_ids
    from raydetox.modeling import load_trained

    assert run.decoding is not None, run
    if run.checkpoint is not None:
        model, tokenizer = load_trained(run.checkpoint)
    else:
        model, tokenizer = load_untrained(experiment, base_dir=base_dir)
    model = model.to(resolve_device())
    ids = toxic_token_ids(lexicon, tokenizer, run.decoding)
    return [
        generate(model, tokenizer, list(s.pairs["toxic"]), run.decoding, toxic_token_ids=ids,
                 max_source_length=experiment.model.max_source_length, lexicon=lexicon, langs=list(s.pairs["lang"]))
        for s in sets
    ]


# ------------------------------------------------------------------------------------------------ scoring


def _sentence_scores(scorer: Scorer, pairs: pd.DataFrame, outputs: list[str], has_refs: np.ndarray) -> pd.DataFrame:
    """Per-sentence scores: rows with references scored fully, the others on what needs no reference."""
    parts = []
    for with_refs in (True, False):
        rows = np.flatnonzero(has_refs == with_refs)
        if not len(rows):
            continue
        sources = [pairs["toxic"].iloc[i] for i in rows]
        outs = [outputs[i] for i in rows]
        langs = [pairs["lang"].iloc[i] for i in rows]
        if with_refs:
            part = scorer.sentence_scores(sources, outs, [pairs["refs"].iloc[i] for i in rows], langs)
        else:
            part = scorer.reference_free_scores(sources, outs, langs)
        parts.append(part.set_axis(rows))
    return pd.concat(parts).sort_index()[list(SENTENCE_COLUMNS)]


def _chrf_stats(pairs: pd.DataFrame, outputs: list[str], has_refs: np.ndarray) -> np.ndarray:
    """sacrebleu's chrF n-gram statistics per sentence (NaN rows without references): summed over any
    set of rows they give that set's corpus chrF."""
    width = 3 * (_CHRF.char_order + _CHRF.word_order)
    stats = np.full((len(outputs), width), np.nan)
    rows = np.flatnonzero(has_refs)
    if len(rows):
        refs = [list(pairs["refs"].iloc[i]) for i in rows]
        stats[rows] = sentence_stats(_CHRF, [outputs[i] for i in rows], ref_streams(refs))
    return stats


def _corpus_chrf(rows: np.ndarray) -> float:
    return score_from_stats(_CHRF, rows.sum(axis=0))


def _bleu(scorer: Scorer, s: EvalSet, outputs: Sequence[list[str]]) -> dict[str, float]:
    """Corpus BLEU overall (``all``) and per language of the rows with references, the seeds' outputs
    pooled, exactly as the sweep's rows compute it (NaN where no row has a reference)."""
    rows = np.flatnonzero(s.has_refs)
    if not len(rows):
        return {}
    sub, copies = s.pairs.iloc[rows], len(outputs)
    outs = [o[i] for o in outputs for i in rows]
    scores = scorer.score(list(sub["toxic"]) * copies, outs, list(sub["refs"]) * copies, list(sub["lang"]) * copies)
    return {k.partition("/")[2] or "all": v for k, v in scores.items() if k.partition("/")[0] == "bleu"}


def _interval_row(name: str, system: str, lang: str, metric: str, value: Interval | None, **extra: Any) -> dict:
    if value is None:
        return {"dataset": name, "system": system, "lang": lang, "metric": metric, "estimate": math.nan,
                "low": math.nan, "high": math.nan, "n": 0, **extra}
    return {"dataset": name, "system": system, "lang": lang, "metric": metric, "estimate": value.estimate,
            "low": value.low, "high": value.high, "n": value.n, **extra}


def compare(
    a: np.ndarray, b: np.ndarray, metric: str, other: str, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[Interval | None, Verdict | None]:
    """Paired-bootstrap interval of (chosen schedule − ``other``) on ``metric`` over the sentences both
    score, and its :func:`raydetox.stats.verdict`; ``(None, None)`` when no sentence has both."""
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return None, None
    label, higher = METRICS[metric]
    diff = paired_bootstrap(a[both], b[both], n_resamples=n_resamples, seed=seed)
    said = verdict(diff, label, "the chosen schedule", other, higher_is_better=higher,
                   max_width=DECISION_WIDTH.get(metric))
    return diff, dataclasses.replace(said, text=said.text[:1].upper() + said.text[1:])


def _summarise(
    s: EvalSet,
    preds: pd.DataFrame,
    chrf_stats: dict[str, dict[str | None, np.ndarray]],  # system → trial id (None: no trial) → stats
    bleu_of: dict[str, dict[str, float]],
    n_resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Score, difference and seed rows of one evaluation set.

    ``preds`` holds the set's predictions with their sentence scores (column ``row``: the row of the
    set); ``chrf_stats`` the chrF statistics per system and seed (its trial); ``bleu_of`` corpus BLEU per system
    and language (``all`` overall).
    """
    rows: list[dict[str, Any]] = []
    langs = s.pairs["lang"].to_numpy()
    groups = [("all", np.ones(len(langs), dtype=bool))] + [(lang, langs == lang) for lang in sorted(set(langs))]
    present = list(dict.fromkeys(preds["system"]))
    # Seeds pooled per sentence: the variant's expected score of the sentence.
    pooled = {
        system: preds[preds["system"] == system].groupby("row", sort=True)[list(SENTENCE_COLUMNS)].mean()
        for system in present
    }
    options = {"n_resamples": n_resamples, "seed": seed}
    for system in present:
        values = pooled[system]
        for lang, mask in groups:
            for metric in METRICS:
                if metric == "bleu":
                    est = bleu_of[system].get(lang, math.nan)
                    rows.append(_interval_row(s.name, system, lang, metric, None, kind="score", estimate=est,
                                              n=int((mask & s.has_refs).sum()) if not math.isnan(est) else 0))
                    continue
                if metric == "chrf":
                    chosen = sum(chrf_stats[system].values())[mask & s.has_refs]
                    value = bootstrap_interval(chosen, _corpus_chrf, **options) if len(chosen) else None
                else:
                    col = values[metric].to_numpy()[mask]
                    col = col[np.isfinite(col)]
                    value = bootstrap_interval(col, **options) if len(col) else None
                rows.append(_interval_row(s.name, system, lang, metric, value, kind="score"))
    paired = PAIRED_WITH_REFS if s.has_refs.all() else PAIRED_WITHOUT_REFS
    if s.has_refs.any() and not s.has_refs.all():  # mixed: J where a reference exists, STA on every row
        paired = tuple(dict.fromkeys((*PAIRED_WITH_REFS, *PAIRED_WITHOUT_REFS)))
    for other in (o for o in COMPARED_WITH if o in pooled and BEST in pooled):
        for lang, mask in groups:
            for metric in paired:
                a, b = (pooled[x][metric].to_numpy()[mask] for x in (BEST, other))
                diff, said = compare(a, b, metric, other, **options)
                rows.append(_interval_row(s.name, f"{BEST} − {other}", lang, metric, diff, kind="difference",
                                          outcome=said.outcome if said else None, text=said.text if said else None))
    seed_metrics = [m for m in METRICS if m in SENTENCE_COLUMNS]
    for system in present:
        if len(chrf_stats[system]) < 2:
            continue
        mine = preds[preds["system"] == system]
        means = mine.groupby("trial_id", sort=False)[seed_metrics].mean()
        # chrF per seed as the rows report it: the corpus score of that seed's outputs.
        means["chrf"] = [_corpus_chrf(chrf_stats[system][trial][s.has_refs]) if s.has_refs.any() else math.nan
                         for trial in means.index]
        summary = seed_summary(means.reset_index().assign(system=system), "system", seed_metrics)
        for rec in summary.to_dict("records"):
            rows.append({"dataset": s.name, "kind": "seeds", "system": system, "lang": "all", "metric": rec["metric"],
                         "estimate": rec["mean"], "low": rec["low"], "high": rec["high"], "n": rec["n"],
                         "std": rec["std"]})
    return rows


# ------------------------------------------------------------------------------------------------ entry


def confirm(
    chosen: Selection,
    out_dir: str | os.PathLike[str],
    holdouts: Sequence[str | os.PathLike[str]] = (),
    n_resamples: int = N_RESAMPLES,
    bootstrap_seed: int = 0,
) -> Confirmation:
    """Generate and score every system on the test split and the holdouts, after selection.

    Writes
    ``confirmation.csv`` / ``.parquet`` (one row per dataset × kind × system × language × metric:
    ``score`` rows with bootstrap intervals, ``difference`` rows with paired intervals and verdicts,
    ``seeds`` rows with the t-interval across seeds) and ``confirmation_predictions.parquet`` (every
    system's output for every row, with its sentence scores) into ``out_dir``.
    """
    results_dir, experiment, out_dir = chosen.results_dir, chosen.experiment, Path(out_dir)
    sets = [load_test_split(results_dir)]
    names: set[str] = {"test"}
    for path in holdouts:
        holdout = load_holdout(path)
        name, k = holdout.name, 2
        while name in names:  # two holdouts of the same file name
            name, k = f"{holdout.name}#{k}", k + 1
        names.add(name)
        sets.append(dataclasses.replace(holdout, name=name))
    lexicon = Lexicon.load(results_dir / DATA_DIR / "lexicon.json")
    judge = None if experiment.metrics.toxicity_classifier else recorded_judge(results_dir / DATA_DIR)
    scorer = get_scorer(experiment.metrics, lexicon, judge=judge)
    runs, notes = systems(chosen)
    from raydetox.pretraining_corpus import EMBEDDED, recorded_base

    base_dir = recorded_base(results_dir / DATA_DIR)  # the base the sweep's trials started from
    if any(r.system == UNTRAINED for r in runs) and experiment.model.name_or_path == EMBEDDED and base_dir is None:
        notes.append("untrained: the sweep recorded no base (it predates data/base_path.json); the newest "
                     "cached embedded base of its config stands in, which may not be the one its trials used")
    notes += [f"{s.name}: {note}" for s in sets for note in s.notes]
    # Holdouts may hold languages the training pairs did not: their word lists where the lexicon's exist.
    lexicon = lexicon.for_languages(pd.concat([s.pairs["lang"] for s in sets]))
    for s in sets:
        unknown = lexicon.warn_unknown(s.pairs["lang"], f"{s.name} rows")
        if unknown:
            notes.append(f"{s.name}: the lexicon has no terms for {', '.join(f'{k} ({n} rows)' for k, n in unknown.items())}: "
                         "delete copies those rows and no toxic term is banned there")
    if judge is not None:
        test = sets[0].pairs
        judge.assert_unseen(test["id"], test["toxic"])  # the judge never trained on the test split
        for s in sets[1:]:
            seen = judge.seen_texts(s.pairs["toxic"])
            if seen:
                notes.append(f"{s.name}: the toxicity judge was trained on {seen} of its {len(s.pairs)} input texts "
                             "(a judge source overlaps this holdout): its STA there is not independent")

    frames: list[pd.DataFrame] = []
    outputs_of: dict[tuple[str, str], list[list[str]]] = {}
    chrf_stats: dict[str, dict[str, dict[str | None, np.ndarray]]] = {s.name: {} for s in sets}
    for run in runs:
        seed = None if run.seed is None else str(run.seed)
        for s, outputs in zip(sets, _generate(run, sets, experiment, lexicon, base_dir)):
            scores = _sentence_scores(scorer, s.pairs, outputs, s.has_refs)
            frames.append(pd.DataFrame({
                "dataset": s.name, "system": run.system, "trial_id": run.trial_id, "seed": seed,
                "checkpoint": None if run.checkpoint is None else str(run.checkpoint),
                "row": np.arange(len(s.pairs)), "id": s.pairs["id"], "lang": s.pairs["lang"],
                "input": s.pairs["toxic"], "output": outputs, "references": s.pairs["refs"],
            }).join(scores))
            outputs_of.setdefault((s.name, run.system), []).append(outputs)
            chrf_stats[s.name].setdefault(run.system, {})[run.trial_id] = _chrf_stats(s.pairs, outputs, s.has_refs)
    predictions = pd.concat(frames, ignore_index=True)

    rows: list[dict[str, Any]] = []
    for s in sets:
        preds = predictions[predictions["dataset"] == s.name]
        systems_here = list(dict.fromkeys(preds["system"]))
        bleu = {name: _bleu(scorer, s, outputs_of[(s.name, name)]) for name in systems_here}
        rows += _summarise(s, preds, chrf_stats[s.name], bleu, n_resamples, bootstrap_seed)
    table = pd.DataFrame.from_records(rows).reindex(columns=list(TABLE_COLUMNS))

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in CONFIRMATION_FILES.items()}
    table.to_csv(paths["csv"], index=False)
    table.to_parquet(paths["parquet"], index=False)
    predictions.drop(columns="row").to_parquet(paths["predictions"], index=False, compression="zstd")
    return Confirmation(chosen, table, predictions.drop(columns="row"), runs, sets, paths, notes)


# ------------------------------------------------------------------------------------------------ report


def _cell(rec: pd.Series | None, signed: bool = False) -> str:
    if rec is None or pd.isna(rec["estimate"]):
        return ""
    fmt = "{:+.3f}" if signed else "{:.3f}"
    text = fmt.format(rec["estimate"])
    if pd.notna(rec["low"]) and pd.notna(rec["high"]):
        text += f" [{fmt.format(rec['low'])}, {fmt.format(rec['high'])}]"
    return text


def _run_line(runs: list[Run], system: str, row: pd.Series | None) -> str:
    mine = [r for r in runs if r.system == system]
    if not mine or row is None:
        return ""
    decoding = mine[0].decoding
    assert decoding is not None
    head = (f"- `{system}`: trial `{row['trial_id']}` ({row.get('ordering', '')}), after stage "
            f"{int(row['stage_index'])}, {row['phase']} row, toxic_penalty {decoding.toxic_penalty:g}, "
            f"copy_penalty {decoding.copy_penalty:g}")
    if mine[0].checkpoint is None:
        return f"{head}; no checkpoint: the untrained base model"
    if len(mine) == 1:
        return f"{head}; checkpoint `{mine[0].checkpoint}`"
    seeds = "; ".join(f"seed {r.seed}: `{r.checkpoint}`" for r in mine)
    return f"{head}; {len(mine)} seeds pooled per sentence ({seeds})"


def _no_schedule_beat(conf: Confirmation, name: str) -> list[str]:
    """Item 7's plain sentences: a reference point that beats the chosen schedule on the test split."""
    table = conf.table
    lines = []
    for other in (BASELINE, UNTRAINED):
        hit = table[(table["dataset"] == name) & (table["kind"] == "difference") & (table["lang"] == "all")
                    & (table["system"] == f"{BEST} − {other}") & (table["metric"] == PRIMARY)]
        if hit.empty:
            continue
        rec = hit.iloc[0]
        label = METRICS[PRIMARY][0]
        if rec["outcome"] == "worse":
            lines.append(f"**No schedule beat the {other} on the {name} split**: the {other} scores significantly "
                         f"higher on {label} than the chosen schedule.")
        elif rec["estimate"] < 0:
            lines.append(f"**No schedule is shown to beat the {other} on the {name} split**: the {other} scores "
                         f"higher on {label} (difference {rec['estimate']:+.3g}), though not significantly.")
    return lines


def confirmation_markdown(conf: Confirmation) -> str:
    """The report section of a confirmation: systems, per-dataset tables with intervals, verdicts."""
    label = METRICS[PRIMARY][0]
    test = conf.sets[0]
    parts = [
        "## Confirmation on untouched data",
        "",
        f"The best row was chosen on validation rows only. Here it and the reference points generate for the "
        f"sweep's test split (`{test.source}`, {len(test.pairs)} sentences that no selection step reads)"
        + (" and the holdout files given" if len(conf.sets) > 1 else "") + ". "
        f"Primary metric: **{label}** (mean over sentences of STA × similarity to the input × chrF/100). "
        "Intervals are 95% bootstrap intervals over sentences; differences are paired (both systems "
        "resampled on the same sentences). Copy rate and degenerate share: lower is better. "
        f"A difference whose interval contains 0 but is wider than {DECISION_WIDTH[PRIMARY]:g} ({label}) is "
        "called undecided, as is any with fewer than 30 sentences; where fewer than 30 sentences differ "
        "between two systems, a difference counts only if a sign-flip test on them agrees (p < 0.05). "
        "A system with several seeds is scored per sentence as the mean over its seeds' checkpoints: the "
        "intervals say how far the verdicts hold for other sentences, for these checkpoints, not for "
        "re-training with other seeds (the spread across seeds is in the last table).",
        "",
        "Systems:",
        "",
        _run_line(conf.runs, BEST, conf.selection.best),
    ]
    if any(r.system == BASELINE for r in conf.runs):
        parts.append(_run_line(conf.runs, BASELINE, conf.selection.baseline))
    parts += [
        f"- `{UNTRAINED}`: the base model (`model.name_or_path: {conf.selection.experiment.model.name_or_path}`) with the best row's decoding",
        f"- `{COPY}`: the input unchanged; `{DELETE}`: the input with the lexicon's toxic terms removed",
        "",
    ]
    parts += [f"- note: {note}" for note in conf.notes] + ([""] if conf.notes else [])
    table = conf.table
    for s in conf.sets:
        part = table[table["dataset"] == s.name]
        scores = part[part["kind"] == "score"]
        n_refs = int(s.has_refs.sum())
        parts += [f"### {s.name}: {len(s.pairs)} sentences, {n_refs} with references", ""]
        if n_refs < len(s.pairs):
            parts += [f"{len(s.pairs) - n_refs} sentences have no reference: they are scored on copy rate, STA, "
                      "similarity to the input and degenerate share only.", ""]
        overall = scores[scores["lang"] == "all"].set_index(["system", "metric"])
        systems_here = list(dict.fromkeys(scores["system"]))
        grid = pd.DataFrame(
            {METRICS[m][0]: [_cell(overall.loc[(sys, m)]) for sys in systems_here] for m in METRICS},
            index=pd.Index(systems_here, name="system"),
        )
        parts += [grid.to_markdown(), ""]
        diffs = part[part["kind"] == "difference"]
        overall_diffs = diffs[diffs["lang"] == "all"]
        if len(overall_diffs):
            parts += ["Verdicts (all languages):", ""]
            parts += [f"- {t}" for t in overall_diffs["text"].dropna()]
            parts += [""]
        parts += [f"- {line}" for line in _no_schedule_beat(conf, s.name)]
        metric = PRIMARY if n_refs else "copy"
        per_lang = scores[(scores["metric"] == metric) & (scores["lang"] != "all")]
        if len(per_lang):
            by_lang = per_lang.set_index(["lang", "system"])
            langs = list(dict.fromkeys(per_lang["lang"]))
            grid = pd.DataFrame({sys: [_cell(by_lang.loc[(lang, sys)]) for lang in langs] for sys in systems_here},
                                index=pd.Index(langs, name="lang"))
            lang_diffs = diffs[(diffs["metric"] == metric) & (diffs["lang"] != "all")].set_index(["lang", "system"])
            for name in dict.fromkeys(diffs["system"]):
                grid[name] = [
                    f"{_cell(lang_diffs.loc[(lang, name)], signed=True)} {lang_diffs.loc[(lang, name), 'outcome']}"
                    if (lang, name) in lang_diffs.index else "" for lang in langs
                ]
            parts += ["", f"{METRICS[metric][0]} per language (per-language verdicts need ≥ 30 sentences):", "",
                      grid.to_markdown(), ""]
        seeds = part[part["kind"] == "seeds"]
        if len(seeds):
            seeds = seeds.assign(label=[METRICS[m][0] for m in seeds["metric"]])
            shown = seeds.assign(
                value=[f"{r.estimate:.3f} ± {r.std:.3f} [{r.low:.3f}, {r.high:.3f}] (n={int(r.n)})"
                       for r in seeds.itertuples()]
            ).pivot(index="system", columns="label", values="value")
            parts += ["Across seeds (mean ± std, 95% t-interval):", "", shown.to_markdown(), ""]
    parts += [f"Tables: `{conf.paths['csv'].name}`, per-sentence outputs: `{conf.paths['predictions'].name}`.", ""]
    return "\n".join(parts)
