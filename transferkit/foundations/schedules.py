"""Learning-rate schedules: how the step size changes while a model trains.

A schedule here is a *multiplier* of the learning rate you give the optimizer,
for every optimizer step ``t`` of a run of ``total`` steps::

    lr_t = lr * schedule(t, total)

so one schedule works for any run length, and with discriminative learning
rates (`transferkit.surgery.freezing.param_groups`) every group keeps its ratio to the
others: the multiplier scales them all.

================================  =================================================================
``constant()``                    1 all the way
``step_decay(at, gamma)``         × ``gamma`` at each fraction in ``at`` of the run (e.g. ½, ¾)
``cosine(warmup, final)``         optional linear warm-up, then half a cosine down to ``final``
``linear(warmup)``                BERT's: a linear rise over the first ``warmup`` of the run, then a
                                  straight line down to 0 (transformers' linear schedule)
``one_cycle(pct_start, div, …)``  Smith's one-cycle: cosine up from ``1/div`` to 1, then down to
                                  ``1/(div·final_div)`` (the same numbers as torch's `OneCycleLR`)
``slanted_triangular(cut, ratio)``  ULMFiT (Howard & Ruder 2018): a short linear rise over the
                                  first ``cut`` of the run from ``1/ratio``, then a long linear fall
================================  =================================================================

``fit(..., schedule=cosine())`` (and `fine_tune`, which passes it on to every
stage) steps the schedule after every mini-batch; ``schedule.values(total)``
gives the multipliers to plot (`transferkit.course.plots.schedule_figure`).

The fractions are of the *run*, not of epochs: a schedule means the same thing
on 10 labelled images or 10,000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Multiplier = Callable[[int, int], float]


@dataclass(frozen=True)
class Schedule:
    """A named learning-rate multiplier ``fn(step, total) -> float``."""

    name: str
    fn: Multiplier

    def __call__(self, step: int, total: int) -> float:
        if not isinstance(total, int) or total < 1:
            raise ValueError(f"a schedule needs the run's total number of steps (>= 1), "
                             f"got {total!r}.")
        return float(self.fn(min(max(step, 0), total - 1), total))

    def values(self, total: int) -> list[float]:
        """The multiplier at every step of a run of ``total`` steps."""
        return [self(t, total) for t in range(total)]

    def attach(self, optimizer: torch.optim.Optimizer,
               total: int) -> torch.optim.lr_scheduler.LambdaLR:
        """A torch scheduler that applies this schedule; call its ``step()`` after
        every ``optimizer.step()``."""
        self(0, total)  # refuse a bad total now
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: self(t, total))

    def __repr__(self) -> str:
        return f"Schedule({self.name})"


def _fraction(name: str, value: float, *, low: float = 0.0, high: float = 1.0) -> float:
    if not low <= value <= high:
        raise ValueError(f"{name} is a fraction of the run, between {low} and {high}; "
                         f"got {value!r}.")
    return float(value)


def constant() -> Schedule:
    """The same rate for every step (what `fit` does without a schedule)."""
    return Schedule("constant", lambda t, total: 1.0)


def step_decay(at: Sequence[float] = (0.5, 0.75), gamma: float = 0.1) -> Schedule:
    """Multiply the rate by ``gamma`` at each fraction ``at`` of the run
    (the classic ImageNet recipe: ÷10 at ½ and ¾ of training)."""
    at = sorted(_fraction("each entry of at", a) for a in at)
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma multiplies the rate at each drop: 0 < gamma <= 1, got {gamma!r}.")

    def fn(t: int, total: int) -> float:
        drops = sum(t >= round(a * total) for a in at)
        return gamma ** drops

    return Schedule(f"step ×{gamma:g} at {', '.join(f'{a:g}' for a in at)}", fn)


def cosine(warmup: float = 0.0, final: float = 0.0) -> Schedule:
    """Linear warm-up over the first ``warmup`` of the run (from 0), then half a
    cosine from 1 down to ``final``: ``final + (1 - final)(1 + cos πp) / 2``,
    ``p`` going from 0 to 1 over the rest of the run.

    Without warm-up, it is torch's ``CosineAnnealingLR(T_max=total)`` with
    ``eta_min = final × lr``.
    """
    _fraction("warmup", warmup, high=0.5)
    _fraction("final", final)

    def fn(t: int, total: int) -> float:
        ramp = round(warmup * total)
        if t < ramp:
            return (t + 1) / ramp
        p = (t - ramp) / max(total - ramp, 1)
        return final + (1 - final) * (1 + math.cos(math.pi * p)) / 2

    name = "cosine" + (f", warm-up {warmup:g}" if warmup else "")
    return Schedule(name, fn)


def linear(warmup: float = 0.1) -> Schedule:
    """BERT's schedule: a linear rise from 0 over the first ``warmup`` of the run, then
    a straight line down to 0 at the end.

    The numbers of transformers' ``get_linear_schedule_with_warmup`` with
    ``num_warmup_steps = ⌈warmup · total⌉``, as its ``Trainer`` turns a
    ``warmup_ratio`` into steps: the multiplier at step t is t / warm-up steps while
    warming up, then (total − t) / (total − warm-up steps).
    """
    _fraction("warmup", warmup, high=0.5)

    def fn(t: int, total: int) -> float:
        ramp = math.ceil(warmup * total)
        if t < ramp:
            return t / max(1, ramp)
        return max(0.0, (total - t) / max(1, total - ramp))

    return Schedule("linear" + (f", warm-up {warmup:g}" if warmup else ""), fn)


def _cosine_between(start: float, end: float, p: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * p))


def one_cycle(pct_start: float = 0.3, div: float = 25.0, final_div: float = 1e4) -> Schedule:
    """Smith & Topin's one-cycle policy: a cosine rise from ``1/div`` to 1 over the
    first ``pct_start`` of the run, then a cosine fall to ``1/(div·final_div)``.

    These are the numbers of ``torch.optim.lr_scheduler.OneCycleLR`` (its default
    ``anneal_strategy="cos"``, ``three_phase=False``) with ``max_lr = lr``;
    torch's also cycles the momentum, this one only the rate.
    """
    _fraction("pct_start", pct_start)
    if div < 1 or final_div < 1:
        raise ValueError("div and final_div divide the peak rate: both must be >= 1.")

    def fn(t: int, total: int) -> float:
        top = pct_start * total - 1  # the step at which the rate peaks, as torch counts
        if t <= top:
            return _cosine_between(1 / div, 1.0, t / top if top > 0 else 1.0)
        return _cosine_between(1.0, 1 / (div * final_div), (t - top) / (total - 1 - top))

    return Schedule("one-cycle", fn)


def slanted_triangular(cut_frac: float = 0.1, ratio: float = 32.0) -> Schedule:
    """ULMFiT's slanted triangular rate (Howard & Ruder 2018, eq. 3): with
    ``cut = ⌊T · cut_frac⌋``,

        p = t / cut                                  for t < cut
        p = 1 − (t − cut) / (cut · (1/cut_frac − 1))  after,
        multiplier = (1 + p · (ratio − 1)) / ratio

    a short climb from ``1/ratio`` to 1, then a long, straight descent.
    """
    _fraction("cut_frac", cut_frac)
    if ratio < 1:
        raise ValueError(f"ratio is how much smaller the lowest rate is: >= 1, got {ratio!r}.")

    def fn(t: int, total: int) -> float:
        cut = max(math.floor(total * cut_frac), 1)
        if t < cut:
            p = t / cut
        else:
            p = 1 - (t - cut) / (cut * (1 / cut_frac - 1)) if cut_frac < 1 else 1.0
        return (1 + max(p, 0.0) * (ratio - 1)) / ratio

    return Schedule("slanted triangular", fn)


SCHEDULES: dict[str, Callable[[], Schedule]] = {
    "constant": constant,
    "step": step_decay,
    "cosine": cosine,
    "one_cycle": one_cycle,
    "slanted_triangular": slanted_triangular,
}


def get_schedule(schedule: str | Schedule | None) -> Schedule | None:
    """A `Schedule` from one, from a name in `SCHEDULES` (with its defaults), or None."""
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str) and schedule in SCHEDULES:
        return SCHEDULES[schedule]()
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}, or "
                     "call one of transferkit.foundations.schedules' functions, e.g. "
                     "cosine(warmup=0.1).")


__all__ = ["SCHEDULES", "Schedule", "constant", "cosine", "get_schedule", "linear", "one_cycle",
           "slanted_triangular", "step_decay"]
