"""Garbage-collector settings for the processes raydetox owns (the console script, a Tune trial, a Ray
Train worker); library calls never change them.

Why: CPython's cyclic collector runs a young-generation pass every 700 net allocations and, now and
then, a full pass over every tracked object. Importing the training stack (torch, transformers, peft,
pandas, Ray) leaves millions of long-lived objects, so in a fresh process each full pass walks them
again, and the allocation-heavy work that follows pays for it: compiling the lexicon's patterns took
1.8 s instead of 0.8 s after ``import transformers``, and a fresh worker's data, trainer, judge and
first evaluation 6.8 s instead of 4.5 s (``benchmarks/perf.py`` case 9 measures the trial). Two
standard remedies, both in :mod:`gc`'s documentation: a higher young-generation threshold (fewer
passes), and :func:`gc.freeze` once the imports are done (the imported heap leaves the collector's
reach; reference counting still frees those objects as usual).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Young-generation threshold of a raydetox process (CPython's default: 700).
YOUNG_THRESHOLD = 10_000

_frozen = False


def relax_young_generation() -> None:
    """Collect the young generation every :data:`YOUNG_THRESHOLD` net allocations (never lowers a higher
    setting); call it first thing in a process raydetox owns, before the heavy imports."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:  # 0: the collector is off, and stays so
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_imported_heap() -> bool:
    """Once per process, after the training stack is imported: collect, then :func:`gc.freeze` what is
    left, so later collections skip it. A process reused for further trials keeps the first freeze
    (freezing again would also freeze a finished trial's leftovers). Returns whether it froze now."""
    global _frozen
    if _frozen:
        return False
    gc.collect()  # garbage frozen now would never be collected
    gc.freeze()
    _frozen = True
    return True


@contextlib.contextmanager
def importing_training_stack() -> Iterator[None]:
    """Around the training stack's imports in a trial or worker process: the relaxed threshold while
    they run (:func:`relax_young_generation`), the freeze once they are done (:func:`freeze_imported_heap`)."""
    relax_young_generation()
    yield
    freeze_imported_heap()
