"""Competence-based pacing (Platanios et al., NAACL 2019) as the sampler of HF's train dataloader.

Under ``curriculum.pacing: competence`` a schedule is ONE training run cut into phases, one per stage.
Each phase is still its own HF ``train()`` — its own steps (from its epochs), lr, optimizer and
scheduler, then validation, checkpoint and stage row — but its batches come from
:class:`CompetenceSampler` (``CurriculumSeq2SeqTrainer._get_train_sampler``) over the full train split,
and competence is counted over the whole run, across phases:

- A phase's optimizer steps are its stage's ``epochs`` × the steps of one pass over the full train
  split (or ``training.max_steps_per_stage``); T is the sum over the schedule.
- Optimizer step t (t = 1..T, phase after phase) draws its examples uniformly, without replacement,
  from the pairs whose difficulty CDF value d (:func:`raydetox.data.difficulty.difficulty_cdf`) is at
  most c(t)::

      sqrt:   c(t) = min(1, sqrt(t (1 - c0²) / T + c0²))
      linear: c(t) = min(1, t (1 - c0) / T + c0)

  so the last step draws from every pair (c(T) = 1). When fewer pairs than one step's examples have
  d <= c(t), the step draws from that many easiest pairs instead (a batch never repeats a pair).
- Each step's draw is seeded by (seed, t) alone, so a run resumed after a finished phase draws what
  the uninterrupted run would have drawn.

The stage names of a competence schedule only label its phases: difficulty comes from the competence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def competence(t: int, total_steps: int, c0: float, kind: str = "sqrt") -> float:
    """Competence after ``t`` of ``total_steps`` optimizer steps: c0 at t = 0, exactly 1 from t = T on."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if t >= total_steps:
        return 1.0  # by definition; the formula can round to just below 1
    if kind == "sqrt":
        value = math.sqrt(t * (1 - c0**2) / total_steps + c0**2)
    elif kind == "linear":
        value = t * (1 - c0) / total_steps + c0
    else:
        raise ValueError(f"unknown competence function {kind!r}; expected sqrt or linear")
    return min(1.0, value)


def phase_steps(
    epochs: Sequence[float],
    n_examples: int,
    batch_size: int,
    world_size: int = 1,
    accumulation: int = 1,
    max_steps_per_stage: int = -1,
) -> list[int]:
    """Optimizer steps of each phase: ``max_steps_per_stage`` when > 0, else its epochs × the update steps
    of one pass over ``n_examples`` counted as HF counts them (batches per process, then accumulation)."""
    if max_steps_per_stage > 0:
        return [max_steps_per_stage] * len(epochs)
    batches = math.ceil(math.ceil(n_examples / batch_size) / world_size)
    per_epoch = max(math.ceil(batches / accumulation), 1)
    return [max(1, math.ceil(e * per_epoch)) for e in epochs]


class CompetenceSampler(Sampler[int]):
    """Indices of steps ``first_step + 1 .. first_step + steps`` of a competence-paced run, one step's
    ``examples_per_step`` indices after another (the whole phase is one HF epoch).

    ``examples_per_step`` must be what one optimizer step consumes across processes (batch × gradient
    accumulation × world size): accelerate hands the processes consecutive batches of this stream.
    """

    def __init__(
        self,
        cdf: Sequence[float] | np.ndarray,
        *,
        first_step: int,
        steps: int,
        total_steps: int,
        examples_per_step: int,
        c0: float,
        kind: str = "sqrt",
        seed: int = 0,
    ) -> None:
        cdf = np.asarray(cdf, dtype=float)
        if len(cdf) == 0:
            raise ValueError("competence pacing: no training examples")
        if not first_step + steps <= total_steps:
            raise ValueError(f"phase steps {first_step}+{steps} exceed the run's {total_steps}")
        self.order = np.argsort(cdf, kind="stable")  # easiest first: a pool is a prefix of it
        self.sorted_cdf = cdf[self.order]
        self.first_step, self.steps, self.total_steps = first_step, steps, total_steps
        self.examples_per_step = examples_per_step
        self.c0, self.kind, self.seed = c0, kind, seed

    def competence(self, t: int) -> float:
        return competence(t, self.total_steps, self.c0, self.kind)

    def pool_size(self, t: int) -> int:
        """How many pairs step ``t`` may draw from: those with d <= c(t), at least one step's worth."""
        eligible = int(np.searchsorted(self.sorted_cdf, self.competence(t), side="right"))
        return max(eligible, min(self.examples_per_step, len(self.order)))

    def step_indices(self, t: int) -> np.ndarray:
        """The dataset indices step ``t`` (1-based, over the whole run) trains on."""
        pool = self.pool_size(t)
        rng = np.random.default_rng([self.seed, t])
        # With replacement only when the whole split is smaller than one step.
        picks = rng.choice(pool, size=self.examples_per_step, replace=pool < self.examples_per_step)
        return self.order[picks]

    def step_numbers(self) -> range:
        """The run's step numbers this phase takes."""
        return range(self.first_step + 1, self.first_step + self.steps + 1)

    def __len__(self) -> int:
        return self.steps * self.examples_per_step

    def __iter__(self) -> Iterator[int]:
        for t in self.step_numbers():
            yield from self.step_indices(t).tolist()
