"""Offline toxicity judge: P(toxic) from hashed character n-gram TF-IDF + logistic regression (sklearn).

Why it exists: the lexicon drives cleaning, the toxic-token penalty and the ``delete`` reference system,
so scoring toxicity with it flatters all three (``delete`` scores 0 by construction). The judge learns
from labelled texts instead: the files of ``metrics.judge.sources`` and, with ``use_train_split``, the
train split of the prepared pairs (toxic side 1, neutral side and references 0). Character n-grams
within word edges (``char_wb``) need no tokenizer, so one model reads every script (Ge'ez, Devanagari,
Han, ...).

It never sees validation or test rows:

- a training text whose normalised form (:func:`normalize_text`) equals a validation, test or holdout
  text is dropped; so are blank texts, texts labelled both ways and repeated texts. Every drop is
  listed with its reason in ``dropped.csv`` beside the cached judge;
- after fitting (and after loading from the cache), :meth:`ToxicityJudge.assert_unseen` checks the
  kept training ids and text hashes against every held-out id and text and raises
  :class:`JudgeLeakError` on any overlap.

Cache: ``{cache_dir}/judge/{config hash}-{data hash}/`` (default ``~/.cache/raydetox``), keyed by the
judge config and the training and held-out texts, built in a temporary directory and renamed. The
model is stored with ``skops.io`` and loaded only when every type in the file is one of
:data:`TRUSTED_TYPES` (or trusted by skops by default): the project never loads pickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raydetox.cache import building, content_hash
from raydetox.config import ConfigError, ExperimentConfig, JudgeConfig, JudgeSourceConfig
from raydetox.data.io import DataError, FileTable, detect_format, lang_code_cells, read_file_table, text_cells
from raydetox.errors import ModelError
from raydetox.metrics import normalize_loose, normalize_whitespace, reference_systems

if TYPE_CHECKING:
    from raydetox.data.prepare import PreparedData

JUDGE = "judge"
MODEL_FILE = "judge.skops"
TRAINING_FILE = "training.parquet"
DROPPED_FILE = "dropped.csv"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
META_FILE = "judge.json"
POINTER_FILE = "judge_path.json"  # in a prepared data dir: which cached judge scores its runs
# Bump when the recipe changes in a way the config does not capture: old caches are not reused.
_VERSION = 1
TRAIN_SPLIT = "train_split"
HELD_OUT_SPLITS: tuple[str, ...] = ("validation", "test")

TRUSTED_TYPES: list[str] = [
    "sklearn.pipeline.Pipeline",
    "sklearn.feature_extraction.text.HashingVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int64",
]
"""Types a cached judge file may hold (skops refuses to load anything else)."""

_FILE_FORMATS = ("tsv", "csv", "jsonl", "parquet")
_LABELS = {"1": 1, "true": 1, "toxic": 1, "yes": 1, "0": 0, "false": 0, "neutral": 0, "no": 0, "non-toxic": 0}


class JudgeLeakError(AssertionError):
    """The judge's training set holds a validation/test/holdout id or text."""


def normalize_text(text: str) -> str:
    """The form under which two texts count as the same (leakage and duplicates): NFKC, case-folded,
    punctuation and symbols removed, whitespace collapsed; texts made only of symbols keep them."""
    return normalize_loose(text) or normalize_whitespace(unicodedata.normalize("NFKC", text).casefold())


def text_hash(text: str) -> str:
    """Hash of :func:`normalize_text` (what the judge keeps of each training text)."""
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------- sources


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def _labels(table: FileTable, col: str) -> list[int]:
    """0/1 labels of ``col`` (also true/false, toxic/neutral, yes/no); anything else names row and column."""
    out = []
    for i, v in enumerate(table.frame[col].tolist()):
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1)):
            out.append(int(v))
        elif isinstance(v, str) and v.strip().lower() in _LABELS:
            out.append(_LABELS[v.strip().lower()])
        else:
            raise DataError(f"{table.where(i, col)}: label must be 0/1 (or true/false, toxic/neutral), got {v!r}")
    return out


def read_source(spec: JudgeSourceConfig, index: int, base_dir: Path) -> pd.DataFrame:
    """Labelled texts of one source: columns id, source, where, lang, text, label (one row per text)."""
    key = f"metrics.judge.sources.{index}"
    path = _resolve(spec.path, base_dir)
    if not path.is_file():
        raise ConfigError(f"key '{key}.path': {path}: file not found")
    try:
        fmt = spec.format or detect_format(str(path))
        if fmt not in _FILE_FORMATS:
            raise DataError(f"{path}: format {fmt!r} is not a file format; expected one of {list(_FILE_FORMATS)}")
        table = read_file_table(path, fmt)
        columns = [str(c) for c in table.frame.columns]
        named = {
            "toxic_columns": spec.toxic_columns,
            "neutral_columns": spec.neutral_columns,
            "text_column": [spec.text_column] if spec.text_column else [],
            "label_column": [spec.label_column] if spec.label_column else [],
            "lang_column": [spec.lang_column] if spec.lang_column else [],
        }
        for name, cols in named.items():
            missing = [c for c in cols if c not in columns]
            if missing:
                raise ConfigError(f"key '{key}.{name}': column(s) {missing} not in {path}; columns: {columns}")
        n = len(table.frame)
        langs = np.array(lang_code_cells(table, spec.lang_column) if spec.lang_column else [spec.lang] * n)
        rows = np.arange(n)
        if spec.max_rows_per_lang is not None:
            rows = pd.Series(rows).groupby(langs).head(spec.max_rows_per_lang).sort_values().to_numpy()
        if spec.text_column:
            layout = [(spec.text_column, np.array(_labels(table, spec.label_column)))]  # type: ignore[arg-type]
        else:
            layout = [(c, np.ones(n, int)) for c in spec.toxic_columns]
            layout += [(c, np.zeros(n, int)) for c in spec.neutral_columns]
        frames = []
        for col, labels in layout:
            texts = np.array(text_cells(table, col), dtype=object)
            frames.append(
                pd.DataFrame(
                    {
                        "id": [f"{path.name}:{i + 1}:{col}" for i in rows],
                        "source": spec.path,
                        "where": [table.where(i, col) for i in rows],
                        "lang": langs[rows],
                        "text": texts[rows],
                        "label": labels[rows],
                    }
                )
            )
    except DataError as err:
        raise DataError(f"key '{key}': {err}") from err
    return pd.concat(frames, ignore_index=True)


def train_split_rows(prepared: PreparedData) -> pd.DataFrame:
    """Labelled texts of the prepared train split: toxic side 1, neutral side and references 0."""
    train = prepared.stages["full"]
    rows: list[tuple[str, str, str, str, int]] = []
    for pair_id, lang, toxic, neutral, refs in zip(
        train["id"], train["lang"], train["toxic"], train["neutral"], train["refs"]
    ):
        rows.append((pair_id, f"id {pair_id}, toxic", lang, toxic, 1))
        for k, ref in enumerate(dict.fromkeys([neutral, *list(refs)])):
            rows.append((pair_id, f"id {pair_id}, reference {k + 1}", lang, ref, 0))
    frame = pd.DataFrame(rows, columns=["id", "where", "lang", "text", "label"])
    frame.insert(1, "source", TRAIN_SPLIT)
    return frame


def held_out_rows(prepared: PreparedData, exclude: pd.DataFrame | Sequence[str] | None = None) -> pd.DataFrame:
    """Every text the judge must not see: columns id, split, text, norm (:func:`normalize_text`).

    Validation and test rows (also those cleaning dropped: they belong to those splits all the same)
    and ``exclude``: a pairs table (its ids and texts) or plain texts, as split ``holdout``.
    """
    frames = []
    dropped = prepared.dropped
    for split in HELD_OUT_SPLITS:
        pairs = [getattr(prepared, split)]
        if len(dropped) and "split" in dropped.columns:
            pairs.append(dropped.loc[dropped["split"] == split, ["id", "toxic", "neutral"]])
        frames += [_pair_texts(p, split) for p in pairs if len(p)]
    if isinstance(exclude, pd.DataFrame):
        frames.append(_pair_texts(exclude, "holdout"))
    elif exclude is not None:
        frames.append(pd.DataFrame({"id": None, "split": "holdout", "text": list(exclude)}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "split", "text"])
    out = out[out["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    out["norm"] = out["text"].map(normalize_text)
    return out[["id", "split", "text", "norm"]].reset_index(drop=True)


def _pair_texts(pairs: pd.DataFrame, split: str) -> pd.DataFrame:
    """(id, split, text) for every text (toxic, neutral, references) of each row of a pairs table."""
    missing = [c for c in ("toxic", "neutral") if c not in pairs.columns]
    if missing:
        raise KeyError(f"judge: {split} pairs table lacks column(s) {missing}; has {list(pairs.columns)}")
    ids = pairs["id"] if "id" in pairs.columns else [None] * len(pairs)
    refs = pairs["refs"] if "refs" in pairs.columns else [()] * len(pairs)
    rows = [
        (pair_id, split, text)
        for pair_id, toxic, neutral, row_refs in zip(ids, pairs["toxic"], pairs["neutral"], refs)
        for text in (toxic, neutral, *(() if row_refs is None else list(row_refs)))
    ]
    return pd.DataFrame(rows, columns=["id", "split", "text"])


def training_rows(
    cfg: JudgeConfig, prepared: PreparedData, held_out: pd.DataFrame, base_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, dropped) training texts; dropped rows carry ``reason`` and ``detail``.

    Reasons, first that applies: ``empty``, ``held_out_<split>`` (equals a validation/test/holdout
    text), ``conflicting_labels`` (the same text labelled 1 and 0), ``duplicate`` (first copy kept).
    """
    frames = [read_source(spec, i, base_dir) for i, spec in enumerate(cfg.sources)]
    if cfg.use_train_split:
        frames.append(train_split_rows(prepared))
    rows = pd.concat(frames, ignore_index=True)
    rows["norm"] = rows["text"].map(normalize_text)
    reason = pd.Series(None, index=rows.index, dtype=object)
    detail = pd.Series("", index=rows.index, dtype=object)

    blank = rows["text"].str.strip() == ""
    reason[blank] = "empty"
    first_held = held_out.drop_duplicates("norm").set_index("norm")
    hit = reason.isna() & rows["norm"].isin(first_held.index)
    matched = first_held.loc[rows.loc[hit, "norm"]]
    reason[hit] = ("held_out_" + matched["split"]).to_numpy()
    detail[hit] = [f"same text as {s} id {i}" if i else f"same text as a {s} text" for s, i in
                   zip(matched["split"], matched["id"])]

    alive = reason.isna()
    n_labels = rows[alive].groupby("norm")["label"].transform("nunique")
    conflict = n_labels.index[n_labels > 1]
    reason[conflict] = "conflicting_labels"
    detail[conflict] = "labelled both toxic and neutral across the sources"

    alive = reason.isna()
    dup = rows[alive].duplicated("norm")
    dup = dup.index[dup]
    first = rows[alive].drop_duplicates("norm").set_index("norm")["id"]
    reason[dup] = "duplicate"
    detail[dup] = ["same text as " + str(i) for i in first.loc[rows.loc[dup, "norm"]]]

    dropped = rows[reason.notna()].assign(reason=reason, detail=detail)
    kept = rows[reason.isna()].reset_index(drop=True)
    if kept["label"].nunique() < 2:
        raise DataError(
            f"metrics.judge: after dropping held-out, blank and duplicate texts the training set has "
            f"{len(kept)} texts of label(s) {sorted(kept['label'].unique())}; it needs toxic and neutral texts"
        )
    return kept, dropped[["id", "source", "where", "lang", "label", "reason", "detail", "text"]].reset_index(drop=True)


def _weights(kept: pd.DataFrame, balance: str) -> np.ndarray:
    """Sample weights giving every (language, label) group (or label) the same total weight."""
    if balance == "none":
        return np.ones(len(kept))
    keys = kept["label"].astype(str) if balance == "label" else kept["lang"] + "/" + kept["label"].astype(str)
    counts = keys.map(keys.value_counts())
    return (len(kept) / (keys.nunique() * counts)).to_numpy(dtype=float)


# ------------------------------------------------------------------------------------------------ judge


def _assert_unseen(
    train_ids: frozenset, train_hashes: frozenset, ids: Iterable[str | None], texts: Iterable[str], path: Path | None
) -> None:
    leaked_ids = sorted({i for i in ids if i is not None} & train_ids)
    leaked_texts = [t for t in dict.fromkeys(texts) if text_hash(t) in train_hashes]
    if leaked_ids or leaked_texts:
        raise JudgeLeakError(
            f"judge{f' {path}' if path else ''}: trained on held-out data: "
            f"{len(leaked_ids)} id(s) {leaked_ids[:5]}, {len(leaked_texts)} text(s) {leaked_texts[:3]}"
        )


class ToxicityJudge:
    """A fitted sklearn pipeline giving P(toxic), and what it was trained on (ids and text hashes)."""

    def __init__(self, pipeline: Any, training: pd.DataFrame, path: Path | None = None):
        self.pipeline = pipeline
        self.training = training  # id, source, lang, label, text_hash, weight: no raw text
        self.path = path
        self._ids = frozenset(training["id"])
        self._hashes = frozenset(training["text_hash"])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(toxic) per text, shape ``(len(texts),)``; a blank text is 0 (it says nothing toxic)."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"judge: texts[{i}] must be a string, got {type(t).__name__}: {t!r}")
        probs = np.zeros(len(texts), dtype=np.float64)
        rows = [i for i, t in enumerate(texts) if t.strip()]
        if rows:
            toxic = list(self.pipeline.classes_).index(1)
            probs[rows] = self.pipeline.predict_proba([texts[i] for i in rows])[:, toxic]
        return probs

    def evaluate(
        self, texts: Sequence[str], labels: Sequence[int], langs: Sequence[str] | None = None
    ) -> dict[str, float]:
        """``accuracy`` (threshold 0.5), ``roc_auc`` (NaN with one class) and ``n``, overall and per
        language as ``{metric}/{lang}`` when ``langs`` is given."""
        from sklearn.metrics import accuracy_score, roc_auc_score

        y = np.asarray(labels, dtype=int)
        if len(y) != len(texts) or (langs is not None and len(langs) != len(texts)):
            n_langs = None if langs is None else len(langs)
            raise ValueError(f"judge.evaluate: {len(texts)} texts, {len(y)} labels, {n_langs} langs")
        p = self.predict_proba(texts)
        groups = [("", np.arange(len(y)))]
        if langs is not None:
            lang_arr = np.asarray(langs)
            groups += [(f"/{lang}", np.flatnonzero(lang_arr == lang)) for lang in sorted(set(langs))]
        out: dict[str, float] = {}
        for suffix, rows in groups:
            yy, pp = y[rows], p[rows]
            auc = roc_auc_score(yy, pp) if len(set(yy)) == 2 else float("nan")
            out[f"accuracy{suffix}"] = float(accuracy_score(yy, pp >= 0.5)) if len(yy) else float("nan")
            out[f"roc_auc{suffix}"] = float(auc)
            out[f"n{suffix}"] = float(len(yy))
        return out

    def assert_unseen(self, ids: Iterable[str | None] = (), texts: Iterable[str] = ()) -> None:
        """Raise :class:`JudgeLeakError` when a given id or text (normalised) is in the training set."""
        _assert_unseen(self._ids, self._hashes, ids, texts, self.path)

    def seen_texts(self, texts: Iterable[str]) -> int:
        """How many of ``texts`` (normalised as for the leakage guard) the judge was trained on."""
        return sum(text_hash(t) in self._hashes for t in texts)

    def save(self, directory: Path) -> None:
        """Write the model (skops, no pickle) and the training provenance into ``directory``."""
        import skops.io as sio

        sio.dump(self.pipeline, directory / MODEL_FILE)
        self.training.to_parquet(directory / TRAINING_FILE, index=False)

    @classmethod
    def load(cls, directory: str | Path) -> ToxicityJudge:
        """Read a judge that :meth:`save` wrote; refuses a model file holding an untrusted type."""
        import skops.io as sio

        directory = Path(directory)
        model = directory / MODEL_FILE
        found = sio.get_untrusted_types(file=model)
        untrusted = sorted(set(found) - set(TRUSTED_TYPES))
        if untrusted:
            raise ModelError(f"{model}: holds types outside raydetox.judge.TRUSTED_TYPES: {untrusted}; not loaded")
        pipeline = sio.load(model, trusted=found)
        return cls(pipeline, pd.read_parquet(directory / TRAINING_FILE), directory)


def _pipeline(cfg: JudgeConfig) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    # Hashing instead of TfidfVectorizer's vocabulary: same test AUC here (0.926 vs 0.924), and skops
    # stores a vocabulary entry by entry (~650 bytes each) and numpy-int entries even quadratically.
    hashing = HashingVectorizer(
        analyzer=cfg.analyzer,
        ngram_range=tuple(cfg.ngram_range),
        n_features=cfg.n_features,
        alternate_sign=False,
        norm=None,
    )
    return Pipeline(
        [
            ("hashing", hashing),
            ("tfidf", TfidfTransformer(sublinear_tf=True)),
            ("clf", LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, solver="liblinear", random_state=cfg.seed)),
        ]
    )


def fit_judge(cfg: JudgeConfig, kept: pd.DataFrame) -> ToxicityJudge:
    """Fit the pipeline on ``kept`` training texts (columns id, source, lang, text, label)."""
    weights = _weights(kept, cfg.balance)
    pipeline = _pipeline(cfg)
    pipeline.fit(kept["text"].tolist(), kept["label"].to_numpy(), clf__sample_weight=weights)
    training = kept[["id", "source", "lang", "label"]].assign(
        text_hash=kept["text"].map(text_hash), weight=weights
    )
    return ToxicityJudge(pipeline, training.reset_index(drop=True))


# ------------------------------------------------------------------------------------------------ build


def _judge_config(cfg: ExperimentConfig | JudgeConfig) -> JudgeConfig:
    return cfg.metrics.judge if isinstance(cfg, ExperimentConfig) else cfg


def _cache_root(cache_dir: str | None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else Path.home() / ".cache" / "raydetox"
    return root / JUDGE


def judge_cache_path(cfg: JudgeConfig, kept: pd.DataFrame, held_out: pd.DataFrame) -> Path:
    """Directory of the judge for this config, training set and held-out set."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    config_hash = content_hash({"version": _VERSION, "config": settings})[:12]
    data_hash = content_hash(
        {
            # Order-free: the same data read in another order reuses the cache.
            "train": sorted(zip(kept["text"], kept["label"].astype(int).tolist(), kept["lang"], kept["id"])),
            "held_out": sorted(zip(held_out["norm"], held_out["split"], held_out["id"].astype(str))),
        }
    )[:12]
    return _cache_root(cfg.cache_dir) / f"{config_hash}-{data_hash}"


def build_judge(
    cfg: ExperimentConfig | JudgeConfig,
    prepared: PreparedData,
    exclude: pd.DataFrame | Sequence[str] | None = None,
    base_dir: str | Path | None = None,
) -> ToxicityJudge:
    """Fit (or load from the cache) the judge of ``cfg`` (``metrics.judge``) for ``prepared``.

    Trains on the configured sources plus the train split, minus every text equal to a validation/test
    text or to ``exclude`` (a holdout pairs table or texts). Beside the cached model it writes
    ``dropped.csv`` (every dropped training text with its reason), ``training.parquet`` (ids and text
    hashes), ``report.json``/``report.md`` (training counts; accuracy and ROC-AUC on the test split per
    language; mean P(toxic) of the copy and delete systems and the references). Relative source paths
    are read from ``base_dir`` (default: the working directory). Raises :class:`JudgeLeakError` if
    the fitted or cached judge saw a held-out id or text.
    """
    judge = _judge_dir(cfg, prepared, exclude, base_dir, load=True)[1]
    assert judge is not None  # loaded, or fitted by this call
    return judge


def _judge_dir(
    cfg: ExperimentConfig | JudgeConfig,
    prepared: PreparedData,
    exclude: pd.DataFrame | Sequence[str] | None,
    base_dir: str | Path | None,
    load: bool,
) -> tuple[Path, ToxicityJudge | None]:
    """(cache dir, judge): fitted into the cache if missing (the fitted judge is returned), else the
    cached one checked for held-out data by :func:`_checked` (loaded only with ``load``)."""
    jcfg = _judge_config(cfg)
    held_out = held_out_rows(prepared, exclude)
    kept, dropped = training_rows(jcfg, prepared, held_out, Path(base_dir) if base_dir else Path.cwd())
    final = judge_cache_path(jcfg, kept, held_out)
    if not (final / META_FILE).is_file():
        with building(final, META_FILE) as tmp:
            if tmp is not None:
                return final, _fit_into(tmp, final, jcfg, kept, held_out, prepared, dropped)
    return final, _checked(final, held_out, load)


def _checked(directory: Path, held_out: pd.DataFrame, load: bool) -> ToxicityJudge | None:
    """The cached judge in ``directory``, checked for ``held_out`` ids and texts (the file on disk is what
    gets used): loaded with ``load``, else checked from its training record alone (no skops, no
    sklearn) and ``None``."""
    if load:
        judge = ToxicityJudge.load(directory)
        judge.assert_unseen(held_out["id"], held_out["text"])
        return judge
    training = pd.read_parquet(directory / TRAINING_FILE, columns=["id", "text_hash"])
    _assert_unseen(frozenset(training["id"]), frozenset(training["text_hash"]), held_out["id"], held_out["text"],
                   directory)
    return None


def _fit_into(
    tmp: Path, final: Path, jcfg: JudgeConfig, kept: pd.DataFrame, held_out: pd.DataFrame,
    prepared: PreparedData, dropped: pd.DataFrame,
) -> ToxicityJudge:
    """Fit the judge and write it, its dropped rows and its report into ``tmp`` (renamed to ``final``)."""
    t0 = time.perf_counter()
    judge = fit_judge(jcfg, kept)
    seconds = time.perf_counter() - t0
    judge.assert_unseen(held_out["id"], held_out["text"])  # before anything is cached
    judge.save(tmp)
    dropped.to_csv(tmp / DROPPED_FILE, index=False)
    report = judge_report(judge, prepared, dropped, seconds)
    (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    (tmp / REPORT_MD).write_text(report_markdown(report), encoding="utf-8")
    meta = {"config": dataclasses.asdict(jcfg), "fit_seconds": seconds, "n_train": len(kept)}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    judge.path = final
    return judge


# ----------------------------------------------------------------------------------------------- report


def judge_report(judge: ToxicityJudge, prepared: PreparedData, dropped: pd.DataFrame, seconds: float) -> dict[str, Any]:
    """Training counts per source/language/label, drops per reason, test-split quality per language,
    and mean P(toxic) (judge) / toxic share (lexicon) of the copy and delete systems and the references."""
    test = prepared.test
    langs = test["lang"].tolist()
    texts = test["toxic"].tolist() + test["neutral"].tolist()
    quality = judge.evaluate(texts, [1] * len(test) + [0] * len(test), langs + langs)
    systems = reference_systems(test["toxic"].tolist(), [[n] for n in test["neutral"]], langs, prepared.lexicon)
    systems["references"] = test["neutral"].tolist()
    toxicity: dict[str, dict[str, float]] = {}
    for name, outputs in systems.items():
        frame = pd.DataFrame(
            {
                "lang": langs,
                "judge": judge.predict_proba(outputs),
                "lexicon": [float(prepared.lexicon.is_toxic(o, lang)) for o, lang in zip(outputs, langs)],
            }
        )
        toxicity[name] = {"judge": float(frame["judge"].mean()), "lexicon": float(frame["lexicon"].mean())}
        for lang, part in frame.groupby("lang"):
            toxicity[name][f"judge/{lang}"] = float(part["judge"].mean())
            toxicity[name][f"lexicon/{lang}"] = float(part["lexicon"].mean())
    training = judge.training
    counts = training.groupby(["source", "lang", "label"]).size()
    return {
        "fit_seconds": round(seconds, 2),
        "n_train": len(training),
        "training_counts": [
            {"source": s, "lang": lang, "label": int(label), "n": int(n)} for (s, lang, label), n in counts.items()
        ],
        "dropped": {str(k): int(v) for k, v in dropped.groupby("reason").size().items()},
        "test": quality,
        "reference_systems": toxicity,
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: what to read to know how far to trust the judge."""
    counts = pd.DataFrame(report["training_counts"])
    counts = counts.pivot_table(index=["source", "label"], columns="lang", values="n", fill_value=0, aggfunc="sum")
    test = report["test"]
    langs = sorted(k.split("/", 1)[1] for k in test if k.startswith("n/"))
    quality = pd.DataFrame(
        {scope: [test[f"{m}{suffix}"] for m in ("n", "accuracy", "roc_auc")]
         for scope, suffix in [("all", "")] + [(lang, f"/{lang}") for lang in langs]},
        index=["n", "accuracy", "roc_auc"],
    ).T
    systems = pd.DataFrame(
        {
            f"{name} ({scorer})": {scope: values[f"{scorer}{suffix}"]
                                   for scope, suffix in [("all", "")] + [(lang, f"/{lang}") for lang in langs]}
            for name, values in report["reference_systems"].items()
            for scorer in ("judge", "lexicon")
        }
    )
    dropped = pd.Series(report["dropped"], name="rows", dtype=int).to_frame()
    return "\n".join(
        [
            "# raydetox toxicity judge",
            "",
            f"- training texts: {report['n_train']}; fit time: {report['fit_seconds']} s",
            "- dropped training texts with their reasons: `dropped.csv`",
            "",
            "## Quality on the prepared test split (toxic side = 1, first reference = 0)",
            "",
            quality.to_markdown(floatfmt=".3f"),
            "",
            "## Mean toxicity on the test split: judge P(toxic) vs lexicon hit rate",
            "",
            "The lexicon builds the delete system, so it rates delete's outputs non-toxic by construction; "
            "the judge does not use the lexicon.",
            "",
            systems.to_markdown(floatfmt=".3f"),
            "",
            "## Training texts per source, label (1 = toxic) and language",
            "",
            counts.to_markdown(),
            "",
            "## Dropped training texts per reason",
            "",
            dropped.to_markdown() if len(dropped) else "(none)",
            "",
        ]
    )


def recorded_judge(prepared_dir: str | Path) -> ToxicityJudge | None:
    """The judge a prepared data dir's runs were scored with (its pointer file), or ``None``."""
    path = _recorded_judge_dir(prepared_dir)
    return ToxicityJudge.load(path) if path is not None else None


def _recorded_judge_dir(prepared_dir: str | Path) -> Path | None:
    pointer = Path(prepared_dir) / POINTER_FILE
    if not pointer.is_file():
        return None
    path = Path(json.loads(pointer.read_text(encoding="utf-8"))["path"])
    return path if (path / META_FILE).is_file() else None


def ensure_judge(cfg: ExperimentConfig, prepared: PreparedData) -> Path | None:
    """The dir of the judge that scores STA for runs on ``prepared`` (built once per prepared data dir,
    checked for held-out data, its pointer left there), without loading it; ``None`` when
    ``metrics.toxicity_classifier`` (an HF classifier) judges instead.

    The sweep's driver calls it (relative source paths are read from its working directory), so trials
    load the cached model instead of re-reading the sources, and the driver never imports sklearn.
    """
    found = _pointed_judge(cfg, prepared, load=False)
    return None if found is None else found[0]


def judge_for(cfg: ExperimentConfig, prepared: PreparedData) -> ToxicityJudge | None:
    """The judge that scores STA for runs on ``prepared`` (see :func:`ensure_judge`), loaded; ``None``
    when ``metrics.toxicity_classifier`` (an HF classifier) judges instead."""
    found = _pointed_judge(cfg, prepared, load=True)
    return None if found is None else found[1]


def _pointed_judge(
    cfg: ExperimentConfig, prepared: PreparedData, load: bool
) -> tuple[Path, ToxicityJudge | None] | None:
    """(dir, judge) of the judge ``prepared``'s pointer names (written here when missing); the judge is
    loaded only with ``load`` (or when this call fitted it)."""
    if cfg.metrics.toxicity_classifier:
        return None
    path = _recorded_judge_dir(prepared.out_dir)
    if path is not None:
        return path, _checked(path, held_out_rows(prepared), load)
    path, judge = _judge_dir(cfg, prepared, None, None, load)
    (Path(prepared.out_dir) / POINTER_FILE).write_text(json.dumps({"path": str(path)}), encoding="utf-8")
    return path, judge
