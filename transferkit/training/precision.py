"""Mixed precision: the forward pass in 16-bit floats on a CUDA GPU, about twice as fast.

`fit(amp=True)` (the default on CUDA) trains with `MixedPrecision`, three small
steps its loop calls in place of the plain ones::

    with precision.autocast():          # matrix products in bfloat16 (or float16)
        loss = loss_fn(model(xb).float(), yb)
    precision.backward(loss, optimizer) # loss.backward(); float16: scaled, then unscaled
    precision.step(optimizer)           # optimizer.step()

The weights stay float32; only the forward pass computes in 16 bits. bfloat16 has
float32's range, so nothing else changes. float16 (older GPUs) has a small range:
a small gradient would round to zero, so a gradient scaler multiplies the loss
before the backward pass and divides the gradients right after it (so whatever
looks at them before the step, e.g. a callback that clips them, sees their true
size), skipping a step whose gradients overflowed and lowering the scale. Switched off, each step
is the plain one:

>>> precision = MixedPrecision(enabled=False)
>>> precision.dtype is None and precision.scaler is None
True
"""

from __future__ import annotations

import contextlib

import torch


class MixedPrecision:
    """Mixed precision on CUDA: bfloat16 where the GPU supports it, else float16 with a
    gradient scaler. ``enabled=False``: the plain forward pass, backward pass and step."""

    def __init__(self, enabled: bool):
        self.dtype = self.scaler = None
        if enabled:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context to run the forward pass (and the loss) in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()``; with a scaler, the scaled loss's, then the gradients of
        ``optimizer``'s parameters divided back to their true size."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)  # the gradients a callback sees are the true ones

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped if a gradient is inf/nan (scale too large)
            self.scaler.update()


__all__ = ["MixedPrecision"]
