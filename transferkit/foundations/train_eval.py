"""Training mode and eval mode, kept and given back exactly.

A PyTorch module is in *training* mode (dropout drops, BatchNorm normalises with
the batch's statistics and updates its running ones) or in *eval* mode (dropout
off, BatchNorm uses its running statistics). ``model.train()`` and
``model.eval()`` set the mode of *every* submodule at once. That is a trap when
a few layers were put in eval mode on purpose (BatchNorm layers whose statistics
are frozen): ``model.train(was_training)`` afterwards would wake them up.

So every place in the library that switches modes for a moment (a dry run, a
measurement, a prediction) records each module's own mode first and gives it
back afterwards:

    with eval_mode(model):
        scores = model(x)      # eval mode here
    # every module is back in the mode it had, one by one
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """Whether each module of ``model`` is in training mode, to restore later."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Give every module back the mode recorded by `module_modes`.

    ``model.train(was_training)`` is not enough: it sets *every* submodule, so a
    BatchNorm layer you had put in eval mode (to freeze its statistics) would
    silently train again.
    """
    for module, training in modes.items():
        module.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block in eval mode (dropout off, BatchNorm on
    its running statistics), then restores each module's own mode.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    >>> with eval_mode(net):
    ...     net[1].training
    False
    >>> net[1].training
    True
    """
    modes = module_modes(model)
    model.eval()
    try:
        yield model
    finally:
        restore_modes(modes)


__all__ = ["eval_mode", "module_modes", "restore_modes"]
