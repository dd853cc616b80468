"""Before training starts: the loss by its name, and one small batch through the model.

A shape mistake found in the middle of a training loop is a long PyTorch error
about matrix sizes. `preflight` runs ``PREFLIGHT_EXAMPLES`` examples through
the model first, in eval mode and without gradients (so BatchNorm statistics do
not move), and turns the classic mistakes into errors that name the fix:

* inputs of the wrong shape for the first layer (an image not flattened for an MLP);
* float labels for cross-entropy, or fewer class scores than there are classes;
* an output of a different shape than the target for the mse loss.

It also measures the loss before training, so that `transferkit.training.loop.fit` can
tell a run that diverged from one that started badly, and says whether the task
is classification (then accuracy is measured too).

>>> from torch import nn
>>> preflight(nn.Linear(4, 3), torch.zeros(8, 4), torch.zeros(8, dtype=torch.long),
...           loss_function("cross_entropy"))[0]
True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.foundations.train_eval import eval_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}

PREFLIGHT_EXAMPLES = 32


def loss_function(loss: str | LossFn) -> LossFn:
    """The loss named ``loss`` (one of `LOSSES`), or ``loss`` itself if it is a function."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a function.")
    return LOSSES[loss]


def is_classification(output: torch.Tensor, y: torch.Tensor) -> bool:
    """Scores of shape (batch, classes) and integer labels of shape (batch,)."""
    return output.ndim == 2 and not y.dtype.is_floating_point and y.ndim == 1


def preflight(
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
    return is_classification(out, y), initial_loss


__all__ = ["LOSSES", "LossFn", "PREFLIGHT_EXAMPLES", "is_classification", "loss_function",
           "preflight"]
