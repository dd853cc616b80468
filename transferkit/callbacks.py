"""What `fit` records, and the callbacks that watch it while it runs.

* `History`: one row of measurements per epoch (loss, accuracy, validation loss …).
* `FitState`: what a callback sees after each optimizer step and each epoch;
  setting ``stop`` ends training.
* `Callback`: override ``on_train_begin``, ``on_batch_end``, ``on_epoch_end``,
  ``on_train_end``. `StepCurve` measures the model every few steps (a learning
  curve finer than one point per epoch).
  `EarlyStopping` is one; the notebook's live plot
  (`transferkit.widgets.LivePlot`) is another, added from above:
  ``fit(model, train, val, callbacks=[LivePlot()])``. This way the training loop
  never imports plotting or widget code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class History:
    """Per-epoch measurements of one `fit` run.

    ``history["val_loss"]`` is the column as a list; ``history.to_rows()`` the
    rows as dictionaries; ``transferkit.plots.history_figure(history)`` draws the
    curves.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False
    diverged: bool = False

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: str) -> list[float]:
        if self.rows and key not in self.rows[0]:
            raise KeyError(f"no column {key!r}; the columns are {list(self.rows[0])}.")
        return [row[key] for row in self.rows]

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []

    def to_rows(self) -> list[dict[str, float]]:
        return [dict(row) for row in self.rows]

    def last(self) -> dict[str, float]:
        return dict(self.rows[-1]) if self.rows else {}

    def __repr__(self) -> str:
        state = ", ".join(
            flag for flag in ("stopped_early", "interrupted", "diverged") if getattr(self, flag)
        )
        last = ", ".join(f"{k}={v:.4g}" for k, v in self.last().items() if k != "epoch")
        return f"History({len(self)} epochs{'; ' + state if state else ''}; last: {last})"


@dataclass
class FitState:
    """What a callback sees after each optimizer step (``step``: how many so far) and at the
    end of each epoch (``epoch``); set ``stop = True`` to end training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    epoch: int = 0
    epochs: int = 0
    stop: bool = False
    step: int = 0


class Callback:
    """Base class for callbacks: override the hooks you need."""

    def on_train_begin(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_train_end(self, state: FitState) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int = 5, monitor: str = "val_loss", min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}.")
        self.patience, self.monitor, self.min_delta = patience, monitor, min_delta
        self.sign = -1.0 if "acc" in monitor else 1.0  # accuracy goes up, loss goes down

    def on_train_begin(self, state: FitState) -> None:
        self.best, self.wait = math.inf, 0

    def on_epoch_end(self, state: FitState) -> None:
        value = self.sign * state.history.rows[-1][self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        if self.wait >= self.patience:
            state.stop = True
            state.history.stopped_early = True


class StepCurve(Callback):
    """Measure the model every ``every`` optimizer steps, before the first and after the last.

    ``measure(model)`` returns a dict of numbers (e.g. validation accuracy); the rows
    ``{"step": s, **measure(model)}`` collect in ``curve.rows``. The model is measured
    as it is (``measure`` decides about eval mode), and training resumes in the mode
    it was in.
    """

    def __init__(self, measure, every: int = 10):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every is a number of optimizer steps (>= 1), got {every!r}.")
        self.measure, self.every = measure, every
        self.rows: list[dict[str, float]] = []

    def _record(self, state: FitState) -> None:
        if not self.rows or self.rows[-1]["step"] != state.step:
            training = state.model.training
            self.rows.append({"step": state.step, **self.measure(state.model)})
            state.model.train(training)

    def on_train_begin(self, state: FitState) -> None:
        self.rows = []
        self._record(state)

    def on_batch_end(self, state: FitState) -> None:
        if state.step % self.every == 0:
            self._record(state)

    def on_train_end(self, state: FitState) -> None:
        self._record(state)


__all__ = ["Callback", "EarlyStopping", "FitState", "History", "StepCurve"]
