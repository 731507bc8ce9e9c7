"""The private third-party APIs raydetox relies on, in one place, each for a measured reason.

Every function here wraps a private attribute of a pinned library (see the upper bounds in
``pyproject.toml``); ``tests/test_compat.py`` checks each against the library's public API, so a
release that changes one fails there, by name, instead of skewing a metric somewhere else.

- sacrebleu: per-sentence sufficient statistics of chrF/BLEU, scored alone or aggregated over any set
  of rows. The public API re-tokenises and re-counts every sentence for every corpus score; the sweep
  scores ~20 (overall + per language) corpora per evaluation, and the bootstrap thousands.
- T5: its relative-position bucketing, to initialise the embedded base's previous-token heads.
- Ray Train: the torch backend whose start-up we extend to keep the process group on loopback; the
  trainer's default callbacks, to leave out the placement-group cleaner where it cannot work (a Ray
  without a dashboard) yet costs every trial a process and ~1 s.
- torch: the TCPStore factory of ``env://`` rendezvous, replaced in loopback workers so rank 0's store
  listens on the loopback address only (torch's own listens on every interface).
- Ray Tune: ``MLflowLoggerCallback``'s trial → run map, which a subclass that starts its runs itself
  (with the trial's schedule as params) must fill for the parent's result and end hooks.
- bert_score: ``BERTScorer``'s tokenizer and model (it has no public handle on them), to embed each
  sentence once and batch by token count instead of re-encoding per corpus.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np


def sentence_stats(metric: Any, hypotheses: Sequence[str], ref_streams: Sequence[Sequence[str | None]]) -> list[Any]:
    """sacrebleu's sufficient statistics of each hypothesis (``metric``: a ``BLEU`` or ``CHRF``)."""
    return metric._extract_corpus_statistics(list(hypotheses), [list(r) for r in ref_streams])


def score_from_stats(metric: Any, stats: Any) -> float:
    """The score (0–100) of summed sufficient statistics (one sentence's, or a sum over rows)."""
    values = stats.tolist() if isinstance(stats, np.ndarray) else list(stats)
    return float(metric._compute_score_from_stats(values).score)


def corpus_score_from_stats(metric: Any, stats: Sequence[Any]) -> float:
    """The corpus score of a set of sentences from their statistics (sacrebleu's own aggregation)."""
    return float(metric._aggregate_and_compute(list(stats)).score)


def t5_relative_position_bucket(attention: Any, relative_position: Any, bidirectional: bool, num_buckets: int,
                                max_distance: int) -> Any:
    """T5's bucket of each relative position (``T5Attention._relative_position_bucket``)."""
    return attention._relative_position_bucket(relative_position, bidirectional=bidirectional,
                                               num_buckets=num_buckets, max_distance=max_distance)


def ray_torch_backend() -> type:
    """Ray Train's torch backend class (``ray.train.torch.config._TorchBackend``)."""
    from ray.train.torch.config import _TorchBackend

    return _TorchBackend


@functools.cache
def without_placement_group_cleaner(trainer_cls: type) -> type:
    """``trainer_cls`` (a Ray Train ``DataParallelTrainer``, e.g. ``TorchTrainer``) without the callback
    that starts a placement-group cleaner (``DataParallelTrainer._create_default_callbacks``).

    For a Ray without a dashboard, such as the local one a sweep starts: the cleaner watches the
    controller through the State API, which that Ray does not serve, so it never cleans anything; yet
    every run starts it (a detached actor: one more process) and waits for it to stop.
    """
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class WithoutPlacementGroupCleaner(trainer_cls):
        def _create_default_callbacks(self) -> list[Any]:
            return [c for c in super()._create_default_callbacks()
                    if not isinstance(c, PlacementGroupCleanerCallback)]

    WithoutPlacementGroupCleaner.__qualname__ = f"{trainer_cls.__name__}WithoutPlacementGroupCleaner"
    return WithoutPlacementGroupCleaner


def _torch_rendezvous() -> ModuleType:
    # `torch.distributed.rendezvous` as an attribute is a function; the module is only reachable this way.
    return importlib.import_module("torch.distributed.rendezvous")


def c10d_store_creator() -> Callable[..., Any] | None:
    """torch's factory of the ``env://`` rendezvous store (``_create_c10d_store(hostname, port, rank,
    world_size, timeout, use_libuv)``), or None where this torch has none."""
    return getattr(_torch_rendezvous(), "_create_c10d_store", None)


def set_c10d_store_creator(create: Callable[..., Any]) -> None:
    """Make ``create`` (same signature as :func:`c10d_store_creator`'s) the factory ``env://`` uses."""
    _torch_rendezvous()._create_c10d_store = create


def torchelastic_uses_agent_store() -> bool:
    """Whether torchelastic's agent hosts the store (then rank 0 must not create one)."""
    return bool(_torch_rendezvous()._torchelastic_use_agent_store())


def bertscore_model(scorer: Any) -> tuple[Any, Any]:
    """The (tokenizer, model) that a ``bert_score.BERTScorer`` scores with."""
    return scorer._tokenizer, scorer._model


def mlflow_trial_runs(callback: Any) -> dict[Any, str]:
    """The MLflow run id of each trial of a Ray Tune ``MLflowLoggerCallback`` (``log_trial_start`` fills
    it; ``log_trial_result`` and ``log_trial_end`` read it)."""
    return callback._trial_runs
