"""What `fit` records, and the callbacks that watch it while it runs.

* `History`: one row of measurements per epoch (loss, accuracy, validation loss …).
* `FitState`: what a callback sees: the model, the optimizer, the history, the
  mini-batch being trained on, how many steps and epochs are done; setting
  ``stop`` ends training.
* `Callback`: override the events you need (its docstring shows where `fit`
  calls each one). `StepCurve` measures the model every few steps (a learning
  curve finer than one point per epoch); `EarlyStopping` stops when the
  validation loss stops improving; the notebook's live plot
  (`transferkit.course.widgets.LivePlot`) is another, added from above:
  ``fit(model, train, val, callbacks=[LivePlot()])``. This way the training loop
  never imports plotting or widget code.
* What `fit` adds around its loop is written as callbacks too: `ProgressBar`,
  `BestWeights` (restore the weights of the best epoch) and `LRSchedule` (a
  learning-rate schedule, step by step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from transferkit.foundations.schedules import Schedule


@dataclass
class History:
    """Per-epoch measurements of one `fit` run.

    ``history["val_loss"]`` is the column as a list; ``history.to_rows()`` the
    rows as dictionaries; ``transferkit.course.plots.history_figure(history)`` draws the
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
    """What a callback sees. ``step``: optimizer steps so far; ``epoch``: epochs done;
    ``xb``, ``yb``, ``out``, ``loss``: the current mini-batch, the model's outputs on it
    and their loss (a mean over the batch); set ``stop = True`` to end training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    epoch: int = 0
    epochs: int = 0
    stop: bool = False
    step: int = 0
    xb: torch.Tensor | None = None
    yb: torch.Tensor | None = None
    out: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class Callback:
    """Base class for callbacks: override the events you need. `fit` calls them here::

        on_train_begin
        for every epoch:
            on_epoch_begin          (the model is in training mode)
            for every mini-batch:
                on_batch_begin      state.xb, state.yb: the batch (a callback may replace them)
                ... forward: state.out; loss: state.loss; backward ...
                on_backward_end     the gradients are in each parameter's .grad
                ... optimizer step ...
                on_batch_end        after the step: state.step counts them
            ... measure the epoch: a row of state.history ...
            on_epoch_end            state.epoch: epochs done; set state.stop to end
        on_train_end                (not after an error; after Ctrl-C, yes)
    """

    def on_train_begin(self, state: FitState) -> None: ...

    def on_epoch_begin(self, state: FitState) -> None: ...

    def on_batch_begin(self, state: FitState) -> None: ...

    def on_backward_end(self, state: FitState) -> None: ...

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


class ProgressBar(Callback):
    """A progress bar (a widget in Jupyter, text elsewhere): one tick per epoch, with the
    epoch's losses and accuracies beside it. ``enabled=False`` shows nothing."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def on_train_begin(self, state: FitState) -> None:
        self.bar = tqdm(total=state.epochs, desc="training", unit="epoch",
                        disable=not self.enabled, leave=True)

    def on_epoch_end(self, state: FitState) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in state.history.rows[-1].items()
                              if k not in ("epoch", "lr", "seconds")})

    def on_train_end(self, state: FitState) -> None:
        self.close()

    def close(self) -> None:
        """End the bar (`fit` calls this even when training ends with an error)."""
        if self.bar is not None:
            self.bar.close()


class BestWeights(Callback):
    """Keep a copy of the weights of the epoch with the lowest ``val_loss`` (its number
    goes to ``history.best_epoch``); `restore` loads them back into the model."""

    def on_train_begin(self, state: FitState) -> None:
        self.best_loss, self.weights = math.inf, None

    def on_epoch_end(self, state: FitState) -> None:
        val_loss = state.history.rows[-1]["val_loss"]
        if val_loss < self.best_loss:
            self.best_loss = val_loss
            state.history.best_epoch = state.epoch
            self.weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights (if an epoch was measured)."""
        if self.weights is not None:
            model.load_state_dict(self.weights)


class LRSchedule(Callback):
    """Give every optimizer step the rate ``lr × schedule(step, total)``: a
    `transferkit.foundations.schedules.Schedule` over a run of ``total`` optimizer steps."""

    def __init__(self, schedule: Schedule, total: int):
        self.schedule, self.total = schedule, total

    def on_train_begin(self, state: FitState) -> None:
        self.scheduler = self.schedule.attach(state.optimizer, self.total)

    def on_batch_end(self, state: FitState) -> None:
        self.scheduler.step()


__all__ = ["BestWeights", "Callback", "EarlyStopping", "FitState", "History", "LRSchedule",
           "ProgressBar", "StepCurve"]
