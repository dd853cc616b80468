"""Building the optimizer that `fit` trains with.

``fit(model, data, optimizer="adam")`` names one (`OPTIMIZERS`: Adam, AdamW, SGD with
their usual default rates); ``optimizer=torch.optim.SGD`` or
``functools.partial(torch.optim.SGD, momentum=0.9)`` gives a class to build over the
trainable parameters; ``optimizer=my_optimizer`` a ready one. `make_optimizer` does
that, and refuses the classic mistakes: a model with nothing left to train, a rate given
twice. `untrained_parameters` finds the other classic: an optimizer built before some
layers were unfrozen, which never changes them. `fused_optimizer` builds Adam, AdamW
and SGD with torch's fused kernels where it can.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

OPTIMIZERS = {  # name -> (class, default learning rate)
    "adam": (torch.optim.Adam, 1e-3),
    "adamw": (torch.optim.AdamW, 1e-3),
    "sgd": (torch.optim.SGD, 0.1),
}


def fused_optimizer(cls: type, params: Any, **options: Any) -> torch.optim.Optimizer:
    """``cls(params, **options)``, fused where torch can: for Adam, AdamW and SGD with
    every parameter a float tensor on the CPU or a CUDA GPU, each tensor's update is
    one kernel instead of about ten small operations (the same numbers to rounding; a
    tiny network's training step about a fifth faster on one CPU thread)."""
    params = [dict(g, params=list(g["params"])) if isinstance(g, dict) else g for g in params]
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if (cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD) and "fused" not in options
            and "foreach" not in options and all(
                t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)):
        options["fused"] = True
    return cls(params, **options)



def untrained_parameters(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Trainable parameters of ``model`` that ``optimizer`` does not hold: they get
    gradients, but no optimizer step ever changes them. (The classic case: an
    optimizer built from the trainable parameters only, and a layer unfrozen later.)"""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]


def make_optimizer(optimizer: Any, model: nn.Module, lr: float | None,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer `fit` trains ``model`` with: ``optimizer`` a name in `OPTIMIZERS`
    (fused where torch can, over the trainable parameters, at ``lr`` or the name's default
    rate), a `torch.optim` class or ``functools.partial`` (called with the trainable
    parameters and ``lr``), or a ready optimizer (checked: a warning lists trainable
    parameters it does not hold)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if lr is not None:
            raise ValueError("lr is set on the optimizer you passed; do not also pass lr=.")
        left_out = untrained_parameters(model, optimizer)
        if left_out:
            warnings.warn(
                f"{len(left_out)} trainable parameters are not in the optimizer, so they will "
                f"not change: {', '.join(left_out[:6])}{' …' if len(left_out) > 6 else ''}. "
                "Build the optimizer over all the parameters you unfroze (e.g. "
                "transferkit.surgery.freezing.param_groups(model, lr)), or freeze these.",
                UserWarning, stacklevel=3,
            )
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "every parameter of the model is frozen (requires_grad=False), so there is "
            "nothing to train. Unfreeze some layers first."
        )
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(OPTIMIZERS)},"
                             " a torch.optim class or an optimizer instance.")
        cls, default_lr = OPTIMIZERS[optimizer.lower()]
        return fused_optimizer(cls, params, lr=default_lr if lr is None else lr,
                               weight_decay=weight_decay)
    if callable(optimizer):  # a class or functools.partial(torch.optim.SGD, momentum=0.9)
        kwargs = {"weight_decay": weight_decay} if weight_decay else {}
        return optimizer(params, lr=1e-3 if lr is None else lr, **kwargs)
    raise TypeError(f"optimizer must be a name, a torch.optim class or an instance, "
                    f"got {type(optimizer).__name__}.")


__all__ = ["OPTIMIZERS", "fused_optimizer", "make_optimizer", "untrained_parameters"]
