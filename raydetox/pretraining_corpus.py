"""What the embedded base is pretrained on, what it must never see, and where it is cached.

Light on purpose (no torch or transformers): a sweep's driver uses it to find the cached base of its
data before any trial starts; :mod:`raydetox.embedded_base` builds a base that is not there yet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from raydetox.cache import content_hash
from raydetox.config import ConfigError, DataConfig, EmbeddedBaseConfig, ExperimentConfig
from raydetox.data.io import DataError, load_pairs
from raydetox.data.lexicon import Lexicon
from raydetox.errors import PretrainingLeakError
from raydetox.judge import held_out_rows

if TYPE_CHECKING:
    from raydetox.data.prepare import PreparedData

EMBEDDED = "embedded"
BUILD_REPORT = "build_report.json"  # written last: a base dir with it is complete
BASE_POINTER = "base_path.json"  # in a sweep's prepared data dir: the embedded base its trials start from
BASE_FILES = ("model.safetensors", "spiece.model", "tokenizer.json")  # what decides a base's outputs
# Bump when the build recipe (raydetox.embedded_base) changes in a way the config does not capture:
# old caches are not reused.
_BUILD_VERSION = 7
TRAIN = "train"  # source of the train split's texts and pairs (the only ones held out for the report)


# ----------------------------------------------------------------------------------------------- corpus


def corpus_texts(pairs: pd.DataFrame, source: str = "train") -> pd.DataFrame:
    """Every distinct text of a pairs table (toxic, neutral and ``refs`` sides) in first-seen order, as
    rows (text, lang, source); ``lang`` is ``und`` when the table has no language column."""
    missing = [c for c in ("toxic", "neutral") if c not in pairs.columns]
    if missing:
        raise KeyError(f"pairs table lacks column(s) {missing}; has {list(pairs.columns)}")
    texts: dict[str, str] = {}

    def add(value: Any, row: Any, column: str, lang: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"pairs row {row!r}, column {column!r}: expected str, got {type(value).__name__}")
        if value.strip():
            texts.setdefault(value, lang)

    n = len(pairs)
    langs = pairs["lang"] if "lang" in pairs.columns else ["und"] * n
    for row, toxic, neutral, refs, lang in zip(
        pairs.index, pairs["toxic"], pairs["neutral"], pairs["refs"] if "refs" in pairs.columns else [None] * n, langs
    ):
        add(toxic, row, "toxic", lang)
        add(neutral, row, "neutral", lang)
        if refs is not None and not (isinstance(refs, float) and math.isnan(refs)):
            for ref in refs:
                add(ref, row, "refs", lang)
    return pd.DataFrame({"text": list(texts), "lang": list(texts.values()), "source": source})


def _frame(rows: Any, columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


TEXT_COLUMNS: tuple[str, ...] = ("text", "lang", "source")
PAIR_COLUMNS: tuple[str, ...] = ("toxic", "neutral", "lang", "source")


@dataclass
class PretrainingCorpus:
    """What the embedded base pretrains on, and what it must never see.

    ``texts`` (columns text, lang, source): copy/denoise texts; those of source :data:`TRAIN` are the
    pool the copy-fidelity texts are held out from, and the only ones the tokenizer is trained on.
    ``pairs`` (toxic, neutral, lang, source): real rewrites; :data:`TRAIN` ones give the held-out edit
    pairs. ``lexicon``: terms inserted by the deletion objective. ``forbidden``: evaluation texts
    (validation, test, holdout), dropped wherever they occur and asserted absent.
    """

    texts: pd.DataFrame
    pairs: pd.DataFrame = field(default_factory=lambda: _frame([], PAIR_COLUMNS))
    lexicon: Lexicon | None = None
    forbidden: list[str] = field(default_factory=list)

    @classmethod
    def of_texts(cls, texts: Sequence[str], lang: str = "und") -> PretrainingCorpus:
        """Plain training texts (one language label), no pairs, no lexicon: copy and denoise only."""
        return cls(_frame([(t, lang, TRAIN) for t in texts], TEXT_COLUMNS))

    def with_sources(self, sources: pd.DataFrame) -> PretrainingCorpus:
        """This corpus plus the rows of :func:`read_pretraining_sources` (all texts; differing pairs)."""
        if sources.empty:
            return self
        texts = pd.concat(
            [self.texts]
            + [sources[[c, "lang", "source"]].rename(columns={c: "text"}) for c in ("toxic", "neutral")],
            ignore_index=True,
        )
        rewrites = sources[sources["toxic"] != sources["neutral"]][list(PAIR_COLUMNS)]
        return dataclasses.replace(self, texts=texts, pairs=pd.concat([self.pairs, rewrites], ignore_index=True))


def read_pretraining_sources(sources: Sequence[DataConfig]) -> pd.DataFrame:
    """Rows (toxic, neutral, lang, source) of every ``model.embedded.sources`` entry, read like ``data:``;
    one row per reference. A source that cannot be read is an error naming its key."""
    frames = []
    for i, spec in enumerate(sources):
        try:
            pairs = load_pairs(spec)
        except (DataError, ConfigError) as err:
            raise type(err)(f"key 'model.embedded.sources.{i}': {err}") from err
        rows = [
            (toxic, neutral, lang, spec.source)
            for toxic, refs, lang in zip(pairs["toxic"], pairs["refs"], pairs["lang"])
            for neutral in dict.fromkeys(refs)
        ]
        frames.append(_frame(rows, PAIR_COLUMNS))
    return pd.concat(frames, ignore_index=True) if frames else _frame([], PAIR_COLUMNS)


def normalize_text(text: str) -> str:
    """The form under which a pretraining text counts as an evaluation text: NFKC, case-folded,
    whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exclude_texts(
    corpus: PretrainingCorpus, banned: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(texts, pairs, dropped): the corpus without any text whose normal form is ``banned`` (→ reason),
    nor blank or repeated texts/pairs; dropped rows carry ``kind``, ``reason`` and the text."""
    dropped: list[tuple[str, str, str, str, str]] = []
    texts, seen = [], set()
    for text, lang, source in corpus.texts[list(TEXT_COLUMNS)].itertuples(index=False):
        if not isinstance(text, str) or not text.strip():
            continue
        reason = banned.get(normalize_text(text))
        if reason:
            dropped.append(("text", source, lang, reason, text))
        elif text not in seen:
            seen.add(text)
            texts.append((text, lang, source))
    pairs, seen_pairs = [], set()
    for toxic, neutral, lang, source in corpus.pairs[list(PAIR_COLUMNS)].itertuples(index=False):
        if not (isinstance(toxic, str) and isinstance(neutral, str) and toxic.strip() and neutral.strip()):
            continue
        reason = banned.get(normalize_text(toxic)) or banned.get(normalize_text(neutral))
        if reason:
            dropped.append(("pair", source, lang, reason, f"{toxic} → {neutral}"))
        elif (toxic, neutral) not in seen_pairs:
            seen_pairs.add((toxic, neutral))
            pairs.append((toxic, neutral, lang, source))
    return (
        _frame(texts, TEXT_COLUMNS),
        _frame(pairs, PAIR_COLUMNS),
        _frame(dropped, ("kind", "source", "lang", "reason", "text")),
    )


def assert_no_evaluation_text(texts: pd.DataFrame, pairs: pd.DataFrame, forbidden: Sequence[str]) -> None:
    """Raise :class:`PretrainingLeakError` if a pretraining text or pair side is an evaluation text."""
    banned = {normalize_text(t) for t in forbidden if isinstance(t, str) and t.strip()}
    for kind, frame, columns in (("text", texts, ("text",)), ("pair", pairs, ("toxic", "neutral"))):
        for column in columns:
            for row, text in enumerate(frame[column]):
                if normalize_text(text) in banned:
                    raise PretrainingLeakError(
                        f"embedded base: pretraining {kind} row {row} ({column}, source "
                        f"{frame['source'].iloc[row]!r}) is an evaluation text: {text[:80]!r}"
                    )


# ------------------------------------------------------------------------------------------- cache keys


# Options added after bases were built and cached: at their default they stay out of the key, so a
# base built before the option existed (and built the same way) keeps its key.
_KEYED_ONLY_WHEN_SET: dict[str, Any] = {"copy_first": 0.0, "device": "cpu"}


# The libraries whose versions decide the weights a config and corpus build (the tokenizer's training,
# the initialisation, the kernels): part of the key, so a cached base is never one another build made.
KEYED_LIBRARIES: tuple[str, ...] = ("torch", "transformers", "tokenizers", "sentencepiece")


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`KEYED_LIBRARIES` (from package metadata: nothing is imported)."""
    from importlib.metadata import version

    return {name: version(name) for name in KEYED_LIBRARIES}


def config_hash(cfg: EmbeddedBaseConfig) -> str:
    config = {k: v for k, v in dataclasses.asdict(cfg).items()
              if not (k in _KEYED_ONLY_WHEN_SET and v == _KEYED_ONLY_WHEN_SET[k])}
    return content_hash({"version": _BUILD_VERSION, "config": config, "libraries": library_versions()})[:12]


def as_corpus(corpus: Sequence[str] | PretrainingCorpus) -> PretrainingCorpus:
    return corpus if isinstance(corpus, PretrainingCorpus) else PretrainingCorpus.of_texts(list(corpus))


def _data_hash(corpus: PretrainingCorpus, eval_texts: Sequence[str] | None) -> str:
    # Order-free: the same corpus read in another order reuses the cache.
    lexicon = corpus.lexicon
    return content_hash(
        {
            "texts": sorted(set(corpus.texts[list(TEXT_COLUMNS)].itertuples(index=False, name=None))),
            "pairs": sorted(set(corpus.pairs[list(PAIR_COLUMNS)].itertuples(index=False, name=None))),
            "terms": None if lexicon is None else {lang: sorted(t) for lang, t in lexicon.terms.items()},
            "forbidden": sorted(set(corpus.forbidden)),
            "eval": None if eval_texts is None else sorted(set(eval_texts)),
        }
    )[:12]


def corpus_key(corpus: PretrainingCorpus) -> str:
    """The part of the base's cache key that its pretraining data sets (order-free)."""
    return _data_hash(corpus, None)


def cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / EMBEDDED
    return Path.home() / ".cache" / "raydetox" / EMBEDDED


def embedded_cache_path(
    corpus: Sequence[str] | PretrainingCorpus,
    cfg: EmbeddedBaseConfig,
    cache_dir: str | Path | None = None,
    eval_texts: Sequence[str] | None = None,
) -> Path:
    """Directory where :func:`build_embedded_base` keeps (or will keep) the base for these inputs."""
    return cache_root(cache_dir) / f"{config_hash(cfg)}-{_data_hash(as_corpus(corpus), eval_texts)}"


def find_cached_base(cfg: EmbeddedBaseConfig, cache_dir: str | Path | None = None) -> Path | None:
    """Newest complete embedded base built with this config (any texts), or ``None``."""
    root = cache_root(cache_dir)
    if not root.is_dir():
        return None
    found = [p for p in root.glob(f"{config_hash(cfg)}-*") if (p / BUILD_REPORT).is_file()]
    return max(found, key=lambda p: (p / BUILD_REPORT).stat().st_mtime) if found else None


def cached_base(
    corpus: Sequence[str] | PretrainingCorpus,
    cfg: EmbeddedBaseConfig,
    cache_dir: str | Path | None = None,
    eval_texts: Sequence[str] | None = None,
) -> Path | None:
    """The complete cached base for these inputs, or ``None`` when it is still to be built."""
    path = embedded_cache_path(corpus, cfg, cache_dir, eval_texts)
    return path if (path / BUILD_REPORT).is_file() else None


# ----------------------------------------------------------------------------------- a run's base data


def base_corpus(prepared: PreparedData, sources: Sequence[DataConfig] = ()) -> PretrainingCorpus:
    """What the embedded base pretrains on: every train-split text (cleaned or not), the kept train
    pairs, the lexicon, the rows of ``sources`` (``model.embedded.sources``), and — to be kept out —
    every validation/test text.

    Using the pre-cleaning train split keeps the (expensive, cached) base independent of cleaning
    ablations. ``sources`` are read once per prepared dir (relative paths from the working directory)
    and kept there, so Ray trials, which run elsewhere, pretrain on the same rows.
    """
    train = prepared.stages["full"]
    frames = [train]
    if len(prepared.dropped) and "split" in prepared.dropped:
        dropped = prepared.dropped[prepared.dropped["split"] == "train"].copy()
        dropped["refs"] = [[n] for n in dropped["neutral"]]
        frames.append(dropped)
    everything = pd.concat(frames, ignore_index=True)
    # Pairs of the pre-cleaning train split too: both arms of a cleaning ablation pretrain one base.
    pairs = [(t, n, lang, TRAIN) for t, refs, lang in zip(everything["toxic"], everything["refs"], everything["lang"])
             for n in refs if isinstance(t, str) and isinstance(n, str) and t.strip() and n.strip()]
    corpus = PretrainingCorpus(
        corpus_texts(everything),
        pd.DataFrame(pairs, columns=list(PAIR_COLUMNS)),
        prepared.lexicon,
        held_out_rows(prepared)["text"].tolist(),
    )
    if not sources:
        return corpus
    path = Path(prepared.out_dir) / f"pretraining_sources-{content_hash([dataclasses.asdict(s) for s in sources])[:12]}.parquet"
    if path.is_file():
        rows = pd.read_parquet(path)
    else:
        rows = read_pretraining_sources(sources)
        rows.to_parquet(path, index=False)
    return corpus.with_sources(rows)


def base_texts(cfg: ExperimentConfig, prepared: PreparedData) -> PretrainingCorpus | None:
    """What ``cfg``'s base is built from on ``prepared``: the embedded base's corpus with
    ``model.embedded.sources``, or ``None`` for any other model (whose sources, relative paths maybe
    unreadable from a Ray worker's directory, are then not read at all)."""
    return base_corpus(prepared, cfg.model.embedded.sources) if cfg.model.name_or_path == EMBEDDED else None


def base_digest(path: str | Path) -> str:
    """sha256 of the files that decide what a base generates (weights, tokenizer), not of its reports."""
    digest = hashlib.sha256()
    for name in BASE_FILES:
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def record_base(prepared_dir: str | Path, path: str | Path) -> None:
    """Leave in ``prepared_dir`` which base its runs start from, with its :func:`base_digest` (read by
    :func:`recorded_base` and :func:`recorded_base_info`)."""
    (Path(prepared_dir) / BASE_POINTER).write_text(
        json.dumps({"path": str(path), "sha256": base_digest(path)}), encoding="utf-8")


def recorded_base_info(prepared_dir: str | Path) -> dict[str, str] | None:
    """The pointer file of a prepared data dir (``path``, and ``sha256`` where recorded), or ``None``."""
    pointer = Path(prepared_dir) / BASE_POINTER
    return json.loads(pointer.read_text(encoding="utf-8")) if pointer.is_file() else None


def recorded_base(prepared_dir: str | Path) -> str | None:
    """The base a prepared data dir's runs started from (its pointer file), or ``None`` (none recorded:
    sweeps before the pointer existed)."""
    info = recorded_base_info(prepared_dir)
    return str(info["path"]) if info is not None else None
