"""Pipeline step 4, clean: drop unusable pairs, and report every dropped row with its reason.

Each row gets the FIRST matching reason in the fixed order of :data:`REASONS`; later rules only look at
rows the earlier ones kept. Nothing is lost silently: ``len(kept) + len(dropped) == len(pairs)`` and
every input id is in exactly one of them.

Tokens (shared with the difficulty step): casefolded runs of letters, marks and digits (``regex``
``\\p{L}\\p{M}\\p{N}``), except that Han, Hiragana and Katakana characters are one token each, since
Chinese and Japanese do not separate words by spaces. Token overlap is the size of the multiset
intersection divided by the longer token list (1.0 = same bag of words; it falls as words are deleted,
added or replaced; two empty lists overlap 1.0).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import regex
from sacrebleu.metrics import CHRF

from raydetox.config import CleaningConfig
from raydetox.data.langid import unidentified
from raydetox.data.io import is_missing
from raydetox.data.pairs import check_pairs, check_rows, text_key
from raydetox.data.split import SPLITS

if TYPE_CHECKING:
    from raydetox.data.lexicon import Lexicon

REASONS: tuple[str, ...] = (
    "empty_toxic",
    "empty_neutral",
    "unidentified_language",
    "too_long",
    "duplicate",
    "identical",
    "already_neutral",
    "still_toxic",
    "noisy",
)
"""Drop reasons, in the order the rules are applied (a row gets the first that matches)."""

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_TOKEN = regex.compile(rf"[{_CJK}]|[[\p{{L}}\p{{M}}\p{{N}}]--[{_CJK}]]+", regex.V1)
_FORMAT_CHARS = regex.compile(r"\p{Cf}+")


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty once whitespace and format characters (Unicode Cf: zero-width space and
    joiners, BOM, soft hyphen, bidi marks) are removed: nothing a reader sees, nothing to rewrite."""
    return not _FORMAT_CHARS.sub("", text).strip()


def tokenize(text: str) -> list[str]:
    """Casefolded word tokens of ``text``; CJK characters are tokens on their own (see module doc)."""
    return _TOKEN.findall(text.casefold())


def token_overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """|multiset intersection of tokens| / max(len(a), len(b)), in [0, 1]; 1.0 when both are empty."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    common = Counter(a) & Counter(b)
    return sum(common.values()) / longest


def _texts(table: pd.DataFrame, column: str) -> list[str]:
    """The column as Python strings, missing cells as ""; any other non-string cell is an error."""
    values = table[column].tolist()
    missing = [is_missing(v) for v in values]
    not_text = [not (isinstance(v, str) or m) for v, m in zip(values, missing)]
    check_rows(table, column, np.array(not_text, dtype=bool), lambda v: f"expected text, got {v!r}")
    return ["" if m else v for v, m in zip(values, missing)]


@dataclass
class CleanResult:
    """Kept rows (input columns unchanged), dropped rows with reason and detail, counts per language."""

    kept: pd.DataFrame
    dropped: pd.DataFrame
    counts: pd.DataFrame

    def summary(self) -> str:
        """One line: kept/total and the number of rows per drop reason (reasons with 0 rows omitted)."""
        totals = self.counts.sum()
        parts = [f"{r} {int(totals[r])}" for r in REASONS if totals.get(r, 0)]
        return f"kept {int(totals['kept'])}/{int(totals['total'])}; dropped: {', '.join(parts) or 'none'}"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``dropped.parquet``, ``dropped.csv`` and ``counts.csv`` under ``out_dir``; return paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "dropped_parquet": out / "dropped.parquet",
            "dropped_csv": out / "dropped.csv",
            "counts": out / "counts.csv",
        }
        self.dropped.to_parquet(paths["dropped_parquet"], index=False)
        self.dropped.to_csv(paths["dropped_csv"], index=False)
        self.counts.to_csv(paths["counts"])
        return paths


class _Marks:
    """Per-row first reason and detail; rules only see rows that no earlier rule dropped."""

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)
        self.detail = np.full(n, None, dtype=object)

    def alive(self) -> np.ndarray:
        return np.flatnonzero(pd.isna(self.reason))

    def drop(self, rows: np.ndarray | list[int], reason: str, details: Sequence[str] | str) -> None:
        rows = np.asarray(rows, dtype=int)
        self.reason[rows] = reason
        self.detail[rows] = details if isinstance(details, str) else np.asarray(details, dtype=object)


def _split_rank(table: pd.DataFrame) -> np.ndarray:
    """0/1/2 for train/validation/test (all 0 when there is no ``split`` column)."""
    if "split" not in table.columns:
        return np.zeros(len(table), dtype=int)
    rank = table["split"].map({s: i for i, s in enumerate(SPLITS)})
    check_rows(table, "split", rank.isna(), lambda v: (
        f"{v!r} is not one of {list(SPLITS)} (normalise it with split.split_pairs first)"
    ))
    return rank.to_numpy(dtype=int)


def _drop_duplicates(table: pd.DataFrame, marks: _Marks, keys: dict[int, tuple[str, str]]) -> None:
    """``keys``: each alive row's (toxic, neutral) :func:`~raydetox.data.pairs.text_key`."""
    alive = marks.alive()
    frame = pd.DataFrame(
        {
            "row": alive,
            "id": table["id"].to_numpy()[alive],
            "lang": table["lang"].to_numpy()[alive],
            "toxic": [keys[i][0] for i in alive],
            "neutral": [keys[i][1] for i in alive],
            "rank": _split_rank(table)[alive],
        }
    ).sort_values(["rank", "row"], kind="stable")
    keys = ["lang", "toxic", "neutral"]
    first = frame.groupby(keys, sort=False)["id"].transform("first")
    dup = frame.duplicated(keys, keep="first").to_numpy()
    details = [f"same (lang, toxic, neutral) as id {f}" for f in first.to_numpy()[dup]]
    rows = list(frame["row"].to_numpy()[dup])
    # A validation/test sentence whose toxic side is also a train sentence's (a split column or file
    # that put them apart): the model has trained on its input, so it does not measure generalisation.
    if "split" in table.columns:
        left = frame[~dup]
        train = left[left["rank"] == 0].drop_duplicates(["lang", "toxic"]).set_index(["lang", "toxic"])["id"]
        held = left[left["rank"] > 0]
        seen = [train.get((lang, text)) for lang, text in zip(held["lang"], held["toxic"])]
        rows += [r for r, s in zip(held["row"], seen) if s is not None]
        details += [f"same toxic text as train id {s}" for s in seen if s is not None]
    if rows:
        marks.drop(np.asarray(rows), "duplicate", details)


def clean_pairs(
    pairs: pd.DataFrame, cfg: CleaningConfig, lexicon: Lexicon | None = None, drop_unidentified: bool = True
) -> CleanResult:
    """Apply the cleaning rules of ``cfg`` (see :data:`REASONS` for their order) to a pairs table.

    ``empty_toxic`` / ``empty_neutral``: the side is blank (:func:`is_blank`: only whitespace and
    zero-width/format characters).

    ``unidentified_language``: the language identifier left the row ``und`` (its ``lang_confidence`` is
    under ``data.min_lang_confidence``); ``drop_unidentified=False`` (``data.keep_unidentified``) keeps it.

    ``too_long``: the toxic or neutral text is longer than ``cfg.max_chars`` characters.
    ``already_neutral`` and ``still_toxic`` need ``lexicon``; without one they are skipped with a warning.
    Rows of a language the lexicon has no entry for are matched against no terms, with one warning
    naming those languages and their row counts (:meth:`~raydetox.data.lexicon.Lexicon.warn_unknown`).
    ``noisy`` compares the neutral side with the toxic side: sentence chrF (sacrebleu, neutral as the
    hypothesis), token overlap, and the character length ratio len(neutral) / len(toxic).
    """
    check_pairs(pairs)
    table = pairs.reset_index(drop=True)
    n = len(table)
    toxic = _texts(table, "toxic")
    neutral = _texts(table, "neutral")
    langs = table["lang"].astype(str).tolist()
    marks = _Marks(n)

    marks.drop([i for i in range(n) if is_blank(toxic[i])], "empty_toxic", "toxic text is empty")
    alive = marks.alive()
    marks.drop([i for i in alive if is_blank(neutral[i])], "empty_neutral", "neutral text is empty")
    if lexicon is not None:
        lexicon.warn_unknown(langs, "pairs", stacklevel=3)  # names the caller: the step that brought them

    if drop_unidentified:
        undetermined = unidentified(table).to_numpy()
        rows = [i for i in marks.alive() if undetermined[i]]
        marks.drop(rows, "unidentified_language", [
            f"language identifier's best guess {table['lang_guess'].iat[i]!r} has probability "
            f"{table['lang_confidence'].iat[i]:.2f}, under data.min_lang_confidence" for i in rows
        ])

    if cfg.max_chars is not None:
        # Before the costly rules: chrF on a megabyte-long cell takes seconds.
        rows, details = [], []
        for i in marks.alive():
            side, text = max((("toxic", toxic[i]), ("neutral", neutral[i])), key=lambda s: len(s[1]))
            if len(text) > cfg.max_chars:
                rows.append(i)
                details.append(f"{side} text has {len(text)} characters > cleaning.max_chars {cfg.max_chars}")
        marks.drop(rows, "too_long", details)

    # Both sides as the same-text view (NFC, casefolded, spacing and format characters aside), once.
    keys = {i: (text_key(toxic[i]), text_key(neutral[i])) for i in marks.alive()}
    if cfg.drop_duplicates:
        _drop_duplicates(table, marks, keys)

    if cfg.drop_identical:
        same = [i for i in marks.alive() if keys[i][0] == keys[i][1]]
        marks.drop(same, "identical", "neutral == toxic after whitespace/case normalisation")

    tokens_t = {i: tokenize(toxic[i]) for i in marks.alive()}
    tokens_n = {i: tokenize(neutral[i]) for i in marks.alive()}
    overlap = {i: token_overlap(tokens_t[i], tokens_n[i]) for i in marks.alive()}

    lexicon_rules = [r for r, on in (("already_neutral", cfg.drop_already_neutral),
                                     ("still_toxic", cfg.drop_still_toxic)) if on]
    if lexicon is None and lexicon_rules:
        warnings.warn(f"clean_pairs: no lexicon given, rule(s) {lexicon_rules} skipped", stacklevel=2)
    elif lexicon is not None:
        if cfg.drop_already_neutral:
            threshold = cfg.already_neutral_overlap
            rows = [
                i for i in marks.alive()
                if overlap[i] >= threshold and not lexicon.is_toxic(toxic[i], langs[i])
            ]
            marks.drop(
                rows, "already_neutral",
                [f"no lexicon term in toxic; token overlap {overlap[i]:.2f} >= {threshold:g}" for i in rows],
            )
        if cfg.drop_still_toxic:
            rows, details = [], []
            for i in marks.alive():
                had = {t.casefold() for t in lexicon.find(toxic[i], langs[i])}
                if not had:
                    continue
                kept_terms = sorted(had & {t.casefold() for t in lexicon.find(neutral[i], langs[i])})
                if kept_terms:
                    rows.append(i)
                    details.append(f"neutral keeps lexicon term(s): {', '.join(kept_terms)}")
            marks.drop(rows, "still_toxic", details)

    if cfg.drop_noisy:
        chrf = CHRF()  # one metric object: its setup is the costly part, scoring reuses it
        rows, details = [], []
        for i in marks.alive():
            score = chrf.sentence_score(neutral[i], [toxic[i]]).score
            ratio = len(neutral[i].strip()) / len(toxic[i].strip())
            if score < cfg.min_chrf:
                detail = f"chrF {score:.1f} < {cfg.min_chrf:g}"
            elif overlap[i] < cfg.min_token_overlap:
                detail = f"token overlap {overlap[i]:.2f} < {cfg.min_token_overlap:g}"
            elif not cfg.min_length_ratio <= ratio <= cfg.max_length_ratio:
                bounds = f"[{cfg.min_length_ratio:g}, {cfg.max_length_ratio:g}]"
                detail = f"length ratio {ratio:.2f} outside {bounds}"
            else:
                continue
            rows.append(i)
            details.append(detail)
        marks.drop(rows, "noisy", details)

    dropped_mask = ~pd.isna(marks.reason)
    kept = table.loc[~dropped_mask].reset_index(drop=True)
    report_cols = ["id", "lang"] + (["split"] if "split" in table.columns else [])
    dropped = table.loc[dropped_mask, report_cols].copy()
    dropped["reason"] = marks.reason[dropped_mask].astype(str)
    dropped["toxic"] = table.loc[dropped_mask, "toxic"]
    dropped["neutral"] = table.loc[dropped_mask, "neutral"]
    dropped["detail"] = marks.detail[dropped_mask].astype(str)
    dropped = dropped.reset_index(drop=True)
    return CleanResult(kept=kept, dropped=dropped, counts=_counts(table, marks.reason))


def clean_train_apart(
    pairs: pd.DataFrame,
    cfg: CleaningConfig,
    train_cfg: CleaningConfig,
    lexicon: Lexicon | None = None,
    drop_unidentified: bool = True,
) -> CleanResult:
    """The train split's rows as :func:`clean_pairs` with ``train_cfg`` leaves them, every other row as
    with ``cfg``: an ablation of cleaning that keeps the evaluation rows of the cleaned data exactly
    (both passes see the whole table, so a duplicate of a train row is dropped from evaluation alike)."""
    if "split" not in pairs.columns:
        raise ValueError("clean_train_apart: the pairs have no 'split' column (split them first)")
    table = pairs.reset_index(drop=True)
    evaluated = clean_pairs(table, cfg, lexicon, drop_unidentified)
    trained = clean_pairs(table, train_cfg, lexicon, drop_unidentified)
    train_ids = set(table.loc[table["split"] == "train", "id"].astype(str))

    def pick(frame: pd.DataFrame, train: bool) -> pd.DataFrame:
        return frame[frame["id"].astype(str).isin(train_ids) == train]

    # Kept rows in the input's order, as clean_pairs keeps them.
    kept_ids = set(pick(trained.kept, True)["id"].astype(str)) | set(pick(evaluated.kept, False)["id"].astype(str))
    kept = table[table["id"].astype(str).isin(kept_ids)].reset_index(drop=True)
    dropped = pd.concat([pick(trained.dropped, True), pick(evaluated.dropped, False)], ignore_index=True)
    reason = pd.Series(np.nan, index=table.index, dtype=object)
    by_id = dict(zip(dropped["id"].astype(str), dropped["reason"]))
    reason[:] = [by_id.get(i, np.nan) for i in table["id"].astype(str)]
    return CleanResult(kept=kept, dropped=dropped, counts=_counts(table, reason.to_numpy()))


def _counts(table: pd.DataFrame, reason: np.ndarray) -> pd.DataFrame:
    """Rows = language, columns = every reason (in rule order) + kept + total."""
    status = pd.Series(reason, dtype=object).fillna("kept")
    counts = pd.crosstab(table["lang"].astype(str).to_numpy(), status.to_numpy())
    counts = counts.reindex(columns=[*REASONS, "kept"], fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.index.name = "lang"
    counts.columns.name = None
    return counts.astype(int)
