"""The training loop: `fit`, `evaluate` and the `History` they return.

`fit` is plain mini-batch gradient descent, written out so it can be read:

    for each epoch:
        shuffle the training examples
        for each mini-batch (x_b, y_b):
            loss = L(model(x_b), y_b)        # forward
            grads = ∂loss/∂θ                 # backward (autograd)
            θ ← optimizer_step(θ, grads)     # e.g. θ ← θ − α·grads for SGD
        measure loss (and accuracy) on the validation set

Around that core it adds what a real run needs: a progress bar, early
stopping, keeping the best weights seen on the validation set, mixed precision
on CUDA, and a clean stop on Ctrl-C (or Jupyter's ■ button) that returns the
history so far with the best weights restored.

The data are in-memory tensors ``(x, y)``: for the course's datasets, slicing
one big tensor is much faster than a `DataLoader` with worker processes.

Started by ``torchrun`` on several processes (CPUs or GPUs, one machine or many),
`fit` trains with PyTorch's `DistributedDataParallel`, and nothing in your code
changes: each process trains on its shard of every mini-batch, and the run
makes the same steps on the same global batches as one process would
(`transferkit.distributed` says how).

Progress bars are built in; anything else that should happen during training
(early stopping, a live plot of the curves in a notebook) is a `Callback`:
``fit(model, train, val, callbacks=[LivePlot()])`` with
`transferkit.widgets.LivePlot`. This module never imports plotting code: the
figures of a `History` are drawn by `transferkit.plots.history_figure`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .callbacks import Callback, EarlyStopping, FitState, History
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401  (re-exported)
from .data import check_finite_inputs
from .device import model_device, pick_device
from .distributed import SINGLE, Ranks, join
from .modes import eval_mode, module_modes, restore_modes
from .optimizers import make_optimizer
from .schedules import Schedule, get_schedule

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}
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


def _loss_fn(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss not in _LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {sorted(_LOSSES)} or a function.")
    return _LOSSES[loss]


def _is_classification(output: torch.Tensor, y: torch.Tensor) -> bool:
    return output.ndim == 2 and not y.dtype.is_floating_point and y.ndim == 1


PREFLIGHT_EXAMPLES = 32


def _preflight(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
) -> tuple[bool, float]:
    """Run a small batch before training, to turn shape mistakes into clear errors.

    Runs in eval mode without gradients, so BatchNorm statistics do not move.
    Returns whether the task is classification (so accuracy is measured) and
    the loss before training (to recognise divergence). PREFLIGHT_EXAMPLES are
    enough for both, and keep the cost to a fraction of one training step.
    """
    with eval_mode(model), torch.no_grad():
        batch = x[:PREFLIGHT_EXAMPLES]
        try:
            out = model(batch)
        except RuntimeError as err:
            raise ValueError(
                f"The model could not process inputs of shape {tuple(x.shape[1:])} "
                f"(a batch is {tuple(batch.shape)}): {err}\nCheck that the first "
                "layer expects this input size (flatten images for an MLP, or reshape)."
            ) from None
        if loss_fn is F.cross_entropy:
            if y.dtype.is_floating_point:
                raise ValueError("cross-entropy needs integer class labels, but y is "
                                 f"{y.dtype}. Convert with y.long().")
            if out.ndim != 2:
                raise ValueError(f"for cross-entropy the model must output (batch, classes)"
                                 f" scores, but it outputs shape {tuple(out.shape)}.")
            n_classes = int(y.max()) + 1
            if out.shape[1] < n_classes or int(y.min()) < 0:
                raise ValueError(
                    f"The model outputs {out.shape[1]} class scores, but the labels run "
                    f"from {int(y.min())} to {int(y.max())}. Give the last layer "
                    f"{n_classes} outputs, or relabel the classes 0..{out.shape[1] - 1}."
                )
        elif loss_fn is F.mse_loss and out.shape[1:] != y.shape[1:]:
            raise ValueError(f"for the mse loss the output shape {tuple(out.shape[1:])} must "
                             f"equal the target shape {tuple(y.shape[1:])}.")
        initial_loss = float(loss_fn(out.float(), y[:PREFLIGHT_EXAMPLES]))
    return _is_classification(out, y), initial_loss


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


def _autocast(device: torch.device, amp: bool):
    """Mixed precision: bfloat16 where the GPU supports it, else float16 (needs a scaler)."""
    if not amp:
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


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
    loss_fn = _loss_fn(loss)
    device = pick_device(str(device)) if device is not None else model_device(model)
    model.to(device)
    x, y = x.to(device), y.to(device)
    classify, _ = _preflight(model, x, y, loss_fn)
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
    live_plot: bool = False,
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
        callbacks: `Callback` objects called at the start, after every
            optimizer step, after every epoch and at the end, e.g.
            ``transferkit.widgets.LivePlot()`` to draw the curves in a notebook
            as they are measured, or `transferkit.callbacks.StepCurve` to
            measure the model every few steps.
        live_plot: replaced by ``callbacks=[transferkit.widgets.LivePlot()]``;
            ``True`` is refused with that advice.
        transform_inputs: a function applied to every training batch's inputs
            (not the targets, not the validation data), e.g. noise for a
            denoising autoencoder: ``fit(ae, (x, x), loss="mse",
            transform_inputs=lambda xb: xb + 0.2 * torch.randn_like(xb))``
            learns to map a noisy input to the clean target.
        schedule: a learning-rate schedule from `transferkit.schedules`
            (``cosine()``, ``one_cycle()``, ``slanted_triangular()`` …, or one's
            name): the rate of every step is ``lr × schedule(step, total)``, over
            the ``epochs × batches`` steps of the run. The history's ``lr``
            column is the first parameter group's rate at the end of each epoch.
        shuffle: ``shuffle(generator)`` gives an epoch's order of the training
            examples (default: a random permutation drawn with ``generator``, which
            is on the training device and seeded by ``seed``), e.g.
            `transferkit.text_methods.length_grouped`: batches of texts of about
            the same length, so less of every batch is padding.

    Press Ctrl-C (or Jupyter's stop button) to end early: the history so far is
    returned, with the best weights restored.

    Under ``torchrun`` (`transferkit.distributed`) every process returns the same
    history and the same weights; only process 0 shows progress and runs the
    callbacks. The loss must be a mean over the batch (as the built-in ones are).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if live_plot:
        raise ValueError("fit draws no plots itself: pass the live plot as a callback, "
                         "fit(..., callbacks=[transferkit.widgets.LivePlot()]).")
    if early_stopping is not None and val is None:
        raise ValueError("early_stopping watches the validation loss: pass val=(x_val, y_val).")
    check_finite_inputs(train, val, model)  # a NaN in the data is an error, not a divergence
    device = pick_device(None if device is None else str(device))
    ranks = join(device)  # SINGLE unless torchrun started several processes
    device = ranks.device(device)
    amp = (device.type == "cuda") if amp is None else bool(amp)
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device; training runs on {device}.")

    modes = module_modes(model)
    x, y = (t.to(device) for t in as_xy(train, "train"))
    has_val = val is not None
    if has_val:
        x_val, y_val = (t.to(device) for t in as_xy(val, "val"))
    model.to(device)
    loss_fn = _loss_fn(loss)
    classify, initial_loss = _preflight(model, x, y, loss_fn)
    opt = make_optimizer(optimizer, model, lr, weight_decay)
    schedule = get_schedule(schedule)
    ranks.check_batches(epoch_batches(len(x), batch_size))
    scheduler = schedule and schedule.attach(opt, epochs * len(epoch_batches(len(x), batch_size)))
    autocast, scaler = _autocast(device, amp)
    # every process must shuffle alike: process 0's seed for all
    seed = ranks.agree(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    # the shuffled order is drawn where training runs: no copy from the CPU every epoch
    generator = torch.Generator(device=device).manual_seed(seed)
    trained = ranks.wrap(model, device)  # DDP over the trainable parameters, or the model
    callbacks = list(callbacks) if ranks.main else []  # process 0 draws and decides
    if early_stopping is not None and ranks.main:
        callbacks.append(EarlyStopping(patience=early_stopping))
    history = History()
    state = FitState(model, opt, history, epochs=epochs)
    best_loss, best_state = math.inf, None

    bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not (progress and ranks.main),
               leave=True)
    for cb in callbacks:
        cb.on_train_begin(state)
    try:
        for epoch in range(1, epochs + 1):
            start_time = time.perf_counter()
            trained.train()  # the model, or its DDP wrapper: same modes
            order = (torch.randperm(len(x), generator=generator, device=device)
                     if shuffle is None else shuffle(generator).to(device))
            total = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            for batch in epoch_batches(len(x), batch_size):
                idx = order[ranks.shard(batch)]  # one process: the whole batch
                xb, yb = x[idx], y[idx]
                if transform_inputs is not None:
                    xb = transform_inputs(xb)
                with autocast():
                    out = trained(xb)
                    batch_loss = loss_fn(out.float(), yb)
                opt.zero_grad(set_to_none=True)
                scaled = batch_loss * ranks.weight(batch)  # 1.0 for one process
                if scaler is not None:
                    scaler.scale(scaled).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    scaled.backward()
                    opt.step()
                if scheduler is not None:
                    scheduler.step()
                state.step += 1
                for cb in callbacks:
                    cb.on_batch_end(state)
                total += batch_loss.detach() * len(idx)
                if classify:
                    correct += (out.detach().argmax(dim=1) == yb).sum()

            total, correct = ranks.sum(total, correct)
            ranks.broadcast(model.buffers())  # BatchNorm statistics: process 0's for all
            # the epoch's numbers, read from the device at once (one wait for a GPU)
            names = ["loss", "accuracy"][:2 if classify else 1]
            sums, counts = [total, correct][:len(names)], [len(x)] * len(names)
            if has_val:
                model.eval()
                val_sums = _measure_sums(model, x_val, y_val, loss_fn, 512, classify, autocast,
                                         ranks)
                sums += val_sums[:len(names)]
                counts += [len(x_val)] * len(names)
                names += [f"val_{name}" for name in names]
            values = torch.stack(sums).tolist()
            row = {"epoch": epoch, **{name: value / count for name, value, count
                                      in zip(names, values, counts, strict=True)}}
            row["lr"] = opt.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - start_time
            history.rows.append(row)

            # Diverged: the loss is inf/nan, or 1000× what it was before training.
            if not math.isfinite(row["loss"]) or row["loss"] > 1000 * max(initial_loss, 1e-6):
                history.diverged = True  # data and weights were finite (check_finite_inputs)
                cause = ("The learning rate is probably too large for this model." if math.isfinite(
                    initial_loss) else "The model's outputs were not finite before training "
                    "(inputs too large for it?): no learning rate helps; scale the inputs.")
                warnings.warn(
                    f"the training loss became {row['loss']:.3g} in epoch {epoch} (it was "
                    f"{initial_loss:.3g} before training), so training stopped. {cause}",
                    RuntimeWarning, stacklevel=2,
                )
                break
            if has_val and restore_best and row["val_loss"] < best_loss:
                best_loss = row["val_loss"]
                history.best_epoch = epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items()
                             if k not in ("epoch", "lr", "seconds")})
            state.epoch = epoch
            for cb in callbacks:
                cb.on_epoch_end(state)
            state.stop, history.stopped_early = ranks.agree((state.stop, history.stopped_early))
            if state.stop:
                break
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        restore_modes(modes)
    for cb in callbacks:
        cb.on_train_end(state)
    return history


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


__all__ = [
    "Callback", "EarlyStopping", "FitState", "History", "as_xy", "epoch_batches",
    "epochs_for_steps", "eval_mode", "evaluate", "fit", "load_checkpoint",
    "module_modes", "predict", "restore_modes", "save_checkpoint",
]
