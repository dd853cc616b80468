"""The training loop: `fit`, `evaluate` and `predict`.

`fit` is plain mini-batch gradient descent, written out so it can be read
(`_train_loop`, one screen):

    for each epoch:
        shuffle the training examples
        for each mini-batch (x_b, y_b):
            loss = L(model(x_b), y_b)        # forward
            grads = ∂loss/∂θ                 # backward (autograd)
            θ ← optimizer_step(θ, grads)     # e.g. θ ← θ − α·grads for SGD
        measure loss (and accuracy) on the validation set

What else a run needs is a `Callback` (`transferkit.training.callbacks`), called at the
loop's events (before and after every mini-batch, after every epoch …): the
progress bar, early stopping, the best weights on the validation set, a
learning-rate schedule, and yours, e.g. ``fit(model, train, val,
callbacks=[LivePlot()])`` with `transferkit.course.widgets.LivePlot` (this module never
imports plotting code). Mixed precision on CUDA is
`transferkit.training.precision.MixedPrecision`, small steps the loop calls. Ctrl-C (or
Jupyter's ■ button) returns the history so far with the best weights restored.

The data are in-memory tensors ``(x, y)``: for the course's datasets, slicing
one big tensor is much faster than a `DataLoader` with worker processes.

Started by ``torchrun`` on several processes, `fit` trains with PyTorch's
`DistributedDataParallel`, and nothing in your code changes: each process trains
on its shard of every mini-batch, the same steps on the same global batches as
one process (`transferkit.foundations.distributed.Ranks`: for one process each of its
methods gives back what it was given, so the loop reads as the one-process loop).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferkit.foundations.data import check_finite_inputs
from transferkit.foundations.device import model_device, pick_device
from transferkit.foundations.distributed import SINGLE, Ranks, join
from transferkit.foundations.schedules import Schedule, get_schedule
from transferkit.foundations.train_eval import eval_mode, module_modes, restore_modes
from transferkit.training.callbacks import (
    BestWeights,
    Callback,
    EarlyStopping,
    FitState,
    History,
    LRSchedule,
    ProgressBar,
)
from transferkit.training.optimizers import make_optimizer
from transferkit.training.precision import MixedPrecision
from transferkit.training.preflight import LossFn, loss_function, preflight

# --- helpers ----------------------------------------------------------------------------


def as_xy(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept a `Data`, an ``(x, y)`` pair, or a `TensorDataset` of two tensors."""
    tensors = getattr(data, "tensors", data)  # TensorDataset keeps its tensors there
    try:
        x, y = tensors
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a pair of tensors (x, y), a transferkit Data or a TensorDataset; "
            f"got {type(data).__name__}. For a DataLoader, collect it into tensors first."
        ) from None
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{name} must hold torch tensors, got ({type(x).__name__}, {type(y).__name__}). "
            "Convert with torch.as_tensor(...)."
        )
    if len(x) != len(y):
        raise ValueError(f"{name}: x has {len(x)} examples but y has {len(y)}.")
    if len(x) == 0:
        raise ValueError(f"{name} is empty.")
    return x, y


def epoch_batches(n: int, batch_size: int) -> list[slice]:
    """The mini-batches of one epoch, as slices of the shuffled order.

    A last batch of a single example joins the one before it: BatchNorm cannot
    compute batch statistics from one example (and one example is a noisy step).
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n], strict=True)]


def epochs_for_steps(n_examples: int, batch_size: int, steps: int) -> int:
    """Epochs needed for at least ``steps`` optimizer steps over ``n_examples``.

    One epoch makes ``ceil(n_examples / batch_size)`` steps, so 10 labelled
    examples give one step per epoch and 1,000 give 16 at batch size 64.
    Training every budget for the same number of *steps* (not epochs) gives
    small budgets a fair amount of optimisation.

    >>> epochs_for_steps(1000, 64, 300)
    19
    """
    if n_examples < 1 or batch_size < 1 or steps < 1:
        raise ValueError(f"n_examples, batch_size and steps must be positive, got "
                         f"{n_examples}, {batch_size}, {steps}.")
    return max(1, math.ceil(steps / math.ceil(n_examples / batch_size)))


def _measure_sums(model, x, y, loss_fn, batch_size, classify, autocast,
                  ranks: Ranks = SINGLE) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed loss and the number right on ``(x, y)``, as tensors on its device (no
    wait for a GPU here); with several processes each measures its part and the sums
    are added up (`Ranks.sum`), so all get the same numbers."""
    total, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    part = ranks.split(len(x))
    with torch.no_grad():
        for start in range(part.start, part.stop, batch_size):
            end = min(start + batch_size, part.stop)
            xb, yb = x[start:end], y[start:end]
            with autocast():
                out = model(xb)
                total += loss_fn(out.float(), yb) * len(xb)
            if classify:
                correct += (out.argmax(dim=1) == yb).sum()
    return ranks.sum(total, correct)


def _measure(model, x, y, loss_fn, batch_size, classify, autocast,
             ranks: Ranks = SINGLE) -> dict[str, float]:
    """Loss (and accuracy, for classification) on ``(x, y)``."""
    sums = _measure_sums(model, x, y, loss_fn, batch_size, classify, autocast, ranks)
    names = ("loss", "accuracy") if classify else ("loss",)
    # read from the device in one go: on a GPU every .item() makes the CPU wait
    values = torch.stack(sums[:len(names)]).tolist()
    return {name: value / len(x) for name, value in zip(names, values, strict=True)}


# --- the public API ---------------------------------------------------------------------


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    loss: str | LossFn = "cross_entropy",
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Mean loss (and accuracy, for classification) of ``model`` on ``data``.

    The model is put in eval mode for the measurement and then back in the mode
    it was in.
    """
    x, y = as_xy(data, "data")
    loss_fn = loss_function(loss)
    device = pick_device(str(device)) if device is not None else model_device(model)
    model.to(device)
    x, y = x.to(device), y.to(device)
    classify, _ = preflight(model, x, y, loss_fn)
    with eval_mode(model):
        return _measure(model, x, y, loss_fn, batch_size, classify, contextlib.nullcontext)


def fit(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    epochs: int = 10,
    lr: float | None = None,
    optimizer: str | Any = "adam",
    loss: str | LossFn = "cross_entropy",
    batch_size: int = 64,
    weight_decay: float = 0.0,
    device: str | torch.device | None = None,
    callbacks: Sequence[Callback] = (),
    early_stopping: int | None = None,
    restore_best: bool = True,
    amp: bool | None = None,
    seed: int | None = None,
    progress: bool = True,
    transform_inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
    schedule: Schedule | str | None = None,
    shuffle: Callable[[torch.Generator], torch.Tensor] | None = None,
) -> History:
    """Train ``model`` on ``train = (x, y)`` and return its `History`.

    Args:
        val: optional ``(x, y)`` measured after every epoch; needed for
            ``early_stopping`` and ``restore_best``.
        lr: learning rate (default 1e-3 for Adam/AdamW, 0.1 for SGD).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, a `torch.optim` class or
            ``functools.partial`` (called with the trainable parameters and
            ``lr``), or a ready optimizer instance.
        loss: ``"cross_entropy"`` (labels), ``"mse"`` (targets of the output's
            shape, e.g. ``(x, x)`` for an autoencoder) or a function.
        early_stopping: stop after this many epochs without a lower val loss.
        restore_best: at the end, load the weights of the epoch with the lowest
            val loss (only with ``val``).
        amp: mixed precision; default on for CUDA, off elsewhere.
        seed: seeds the shuffling of mini-batches (default: torch's global RNG,
            so `seed_everything` makes the whole run repeatable).
        progress: show a progress bar (a widget in Jupyter, text elsewhere).
        callbacks: `Callback` objects called at the loop's events (the start,
            every epoch, every mini-batch before and after its step, the end:
            `transferkit.training.callbacks.Callback` lists them), e.g.
            ``transferkit.course.widgets.LivePlot()`` to draw the curves in a notebook
            as they are measured, or `transferkit.training.callbacks.StepCurve` to
            measure the model every few steps.
        transform_inputs: a function applied to every training batch's inputs
            (not the targets, not the validation data), e.g. noise for a
            denoising autoencoder: ``fit(ae, (x, x), loss="mse",
            transform_inputs=lambda xb: xb + 0.2 * torch.randn_like(xb))``
            learns to map a noisy input to the clean target.
        schedule: a learning-rate schedule from `transferkit.foundations.schedules`
            (``cosine()``, ``one_cycle()``, ``slanted_triangular()`` …, or one's
            name): the rate of every step is ``lr × schedule(step, total)``, over
            the ``epochs × batches`` steps of the run. The history's ``lr``
            column is the first parameter group's rate at the end of each epoch.
        shuffle: ``shuffle(generator)`` gives an epoch's order of the training
            examples (default: a random permutation drawn with ``generator``, which
            is on the training device and seeded by ``seed``), e.g.
            `transferkit.text.finetune.length_grouped`: batches of texts of about
            the same length, so less of every batch is padding.

    Press Ctrl-C (or Jupyter's stop button) to end early: the history so far is
    returned, with the best weights restored.

    Under ``torchrun`` (`transferkit.foundations.distributed`) every process returns the same
    history and the same weights; only process 0 shows progress and runs your
    callbacks. The loss must be a mean over the batch (as the built-in ones are).
    """
    _check_arguments(epochs, batch_size, early_stopping, val)
    check_finite_inputs(train, val, model)  # a NaN in the data is an error, not a divergence
    device = pick_device(None if device is None else str(device))
    ranks = join(device)  # SINGLE unless torchrun started several processes
    device = ranks.device(device)
    amp = (device.type == "cuda") if amp is None else bool(amp)
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device; training runs on {device}.")

    modes = module_modes(model)
    x, y = (t.to(device) for t in as_xy(train, "train"))
    val = None if val is None else tuple(t.to(device) for t in as_xy(val, "val"))
    model.to(device)
    loss_fn = loss_function(loss)
    classify, initial_loss = preflight(model, x, y, loss_fn)
    opt = make_optimizer(optimizer, model, lr, weight_decay)  # here: its warning names your line
    schedule = get_schedule(schedule)
    batches = epoch_batches(len(x), batch_size)
    ranks.check_batches(batches)
    precision = MixedPrecision(amp)
    # every process must shuffle alike: process 0's seed for all
    seed = ranks.agree(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    # the shuffled order is drawn where training runs: no copy from the CPU every epoch
    generator = torch.Generator(device=device).manual_seed(seed)
    net = ranks.wrap(model, device)  # DDP over the trainable parameters, or the model
    run = _Run(
        state=FitState(model, opt, History(), epochs=epochs), net=net, x=x, y=y, val=val,
        loss_fn=loss_fn, classify=classify, initial_loss=initial_loss, batches=batches,
        generator=generator, shuffle=shuffle, transform_inputs=transform_inputs,
        precision=precision, ranks=ranks, progress=ProgressBar(progress and ranks.main),
        best=BestWeights() if val is not None and restore_best else None)
    run.callbacks = _callbacks(run, callbacks, schedule, early_stopping)

    run.event("on_train_begin")
    try:
        _train_loop(run)
    except KeyboardInterrupt:
        run.state.history.interrupted = True
    finally:
        run.progress.close()
        if run.best is not None:
            run.best.restore(model)
        restore_modes(modes)
    run.event("on_train_end")
    return run.state.history


@dataclass
class _Run:
    """What one `fit` run works with: `fit` builds it, `_train_loop` runs it."""

    state: FitState  # what callbacks see: the model, the optimizer, the history, the batch …
    net: nn.Module  # what the batches go through: the model (or its DDP wrapper)
    x: torch.Tensor
    y: torch.Tensor
    val: tuple[torch.Tensor, torch.Tensor] | None
    loss_fn: LossFn
    classify: bool  # measure accuracy too
    initial_loss: float  # before training, to recognise divergence
    batches: list[slice]  # an epoch's mini-batches, as slices of its shuffled order
    generator: torch.Generator
    shuffle: Callable[[torch.Generator], torch.Tensor] | None
    transform_inputs: Callable[[torch.Tensor], torch.Tensor] | None
    precision: MixedPrecision
    ranks: Ranks  # SINGLE, or this process of a torchrun run
    progress: ProgressBar
    best: BestWeights | None
    callbacks: list[Callback] = field(default_factory=list)

    def event(self, name: str) -> None:
        """Call every callback's hook ``name`` (e.g. ``"on_batch_end"``) with the state."""
        for callback in self.callbacks:
            getattr(callback, name)(self.state)


def _train_loop(run: _Run) -> None:
    """The loop: for every epoch, for every mini-batch: forward, loss, backward, step."""
    state = run.state
    for epoch in range(1, state.epochs + 1):
        started = time.perf_counter()
        run.net.train()
        run.event("on_epoch_begin")
        order, sums = _epoch_order(run), _EpochSums(run)
        for batch in run.batches:
            state.xb, state.yb = _take(run, order, batch)
            run.event("on_batch_begin")
            with run.precision.autocast():
                state.out = run.net(state.xb)
                state.loss = run.loss_fn(state.out.float(), state.yb)
            state.optimizer.zero_grad(set_to_none=True)
            weighted = state.loss * run.ranks.weight(batch)  # × 1 on one process
            run.precision.backward(weighted, state.optimizer)
            run.event("on_backward_end")
            run.precision.step(state.optimizer)
            state.step += 1
            run.event("on_batch_end")
            sums.add(state)
        row = _epoch_row(run, epoch, sums, started)
        if _diverged(run, row):
            return
        state.epoch = epoch
        run.event("on_epoch_end")
        # under torchrun process 0's callbacks decide, for every process
        state.stop, state.history.stopped_early = run.ranks.agree(
            (state.stop, state.history.stopped_early))
        if state.stop:
            return


def _epoch_order(run: _Run) -> torch.Tensor:
    """An epoch's order of the training examples: shuffled, or ``shuffle``'s."""
    if run.shuffle is None:
        return torch.randperm(len(run.x), generator=run.generator, device=run.x.device)
    return run.shuffle(run.generator).to(run.x.device)


def _take(run: _Run, order: torch.Tensor, batch: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of mini-batch ``batch`` (a slice of the epoch's ``order``; under
    torchrun this process's shard of it), the inputs through ``transform_inputs``."""
    idx = order[run.ranks.shard(batch)]  # one process: the whole batch
    xb, yb = run.x[idx], run.y[idx]
    return (xb if run.transform_inputs is None else run.transform_inputs(xb)), yb


class _EpochSums:
    """The training loss summed over an epoch's examples, and the number classified
    right, added up on the device (reading a number from a GPU makes the CPU wait)."""

    def __init__(self, run: _Run):
        self.loss = torch.zeros((), device=run.x.device)
        self.correct = torch.zeros((), device=run.x.device)
        self.classify = run.classify

    def add(self, state: FitState) -> None:
        self.loss += state.loss.detach() * len(state.yb)
        if self.classify:
            self.correct += (state.out.detach().argmax(dim=1) == state.yb).sum()


def _epoch_row(run: _Run, epoch: int, sums: _EpochSums, started: float) -> dict[str, float]:
    """The epoch's row of the history (appended to it): the training loss (and accuracy),
    the same on the validation data, the learning rate and the seconds it took."""
    model = run.state.model
    total, correct = run.ranks.sum(sums.loss, sums.correct)  # torchrun: over all processes
    run.ranks.broadcast(model.buffers())  # BatchNorm statistics: process 0's for all
    names = ["loss", "accuracy"][:2 if run.classify else 1]
    values, counts = [total, correct][:len(names)], [len(run.x)] * len(names)
    if run.val is not None:
        model.eval()
        x_val, y_val = run.val
        values += _measure_sums(model, x_val, y_val, run.loss_fn, 512, run.classify,
                                run.precision.autocast, run.ranks)[:len(names)]
        counts += [len(x_val)] * len(names)
        names += [f"val_{name}" for name in names]
    numbers = torch.stack(values).tolist()  # read from the device at once (one wait for a GPU)
    row = {"epoch": epoch, **{name: value / count for name, value, count
                              in zip(names, numbers, counts, strict=True)}}
    row["lr"] = run.state.optimizer.param_groups[0]["lr"]
    row["seconds"] = time.perf_counter() - started
    run.state.history.rows.append(row)
    return row


def _diverged(run: _Run, row: dict[str, float]) -> bool:
    """Whether the loss is inf/nan, or 1000× what it was before training; if so, the
    history says so and a warning gives the likely cause."""
    initial = run.initial_loss
    if math.isfinite(row["loss"]) and not row["loss"] > 1000 * max(initial, 1e-6):
        return False
    run.state.history.diverged = True  # data and weights were finite (check_finite_inputs)
    cause = ("The learning rate is probably too large for this model." if math.isfinite(
        initial) else "The model's outputs were not finite before training "
        "(inputs too large for it?): no learning rate helps; scale the inputs.")
    warnings.warn(
        f"the training loss became {row['loss']:.3g} in epoch {row['epoch']} (it was "
        f"{initial:.3g} before training), so training stopped. {cause}",
        RuntimeWarning, stacklevel=4,  # the line that called fit (fit → _train_loop → here)
    )
    return True


def _check_arguments(epochs: Any, batch_size: Any, early_stopping: int | None,
                     val: Any) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping watches the validation loss: pass val=(x_val, y_val).")


def _callbacks(run: _Run, yours: Sequence[Callback], schedule: Schedule | None,
               early_stopping: int | None) -> list[Callback]:
    """fit's own callbacks, on every process: the progress bar, the best weights, the
    learning-rate schedule (over the run's ``epochs × batches`` steps); then, only on
    process 0 (which draws and decides), yours and early stopping."""
    own = [run.progress] + ([] if run.best is None else [run.best])
    if schedule is not None:
        own.append(LRSchedule(schedule, run.state.epochs * len(run.batches)))
    if not run.ranks.main:
        return own
    stopping = [] if early_stopping is None else [EarlyStopping(patience=early_stopping)]
    return [*own, *yours, *stopping]


def predict(
    model: nn.Module,
    x: Any,
    *,
    batch_size: int = 512,
) -> torch.Tensor:
    """The class ``model`` predicts for each row of ``x``: ``argmax`` of its scores.

    Runs in eval mode (dropout off, BatchNorm uses its running statistics) and
    without gradients, a batch at a time, on the model's device; the model goes
    back to the mode it was in. ``x`` is a tensor of inputs (or a `Data`, whose
    inputs are used). Returns a 1-D ``long`` tensor on the CPU.

    >>> from torch import nn
    >>> predict(nn.Linear(4, 3), torch.zeros(5, 4)).shape
    torch.Size([5])
    """
    x = getattr(x, "x", x)  # a Data: predict its inputs
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"predict needs a tensor of inputs (or a Data), got {type(x).__name__}. "
                        "Convert with torch.as_tensor(...).")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    device = model_device(model)
    predictions = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), batch_size):
            scores = model(x[start:start + batch_size].to(device))
            if scores.ndim != 2:
                raise ValueError(
                    f"predict needs class scores of shape (batch, classes), but the model "
                    f"outputs shape {tuple(scores.shape)}. Is it a classifier?"
                )
            predictions.append(scores.argmax(dim=1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


__all__ = ["as_xy", "epoch_batches", "epochs_for_steps", "evaluate", "fit", "predict"]
