"""training.precision: what the loop's three calls do with and without a gradient scaler."""

import pytest
import torch

from transferkit.training.precision import MixedPrecision


class _RecordingScaler:
    """Stands in for torch.amp.GradScaler (which needs CUDA): records what is asked of it."""

    def __init__(self):
        self.calls = []

    def scale(self, loss):
        self.calls.append("scale")
        return loss * 1024.0

    def unscale_(self, optimizer):
        self.calls.append("unscale_")
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad /= 1024.0

    def step(self, optimizer):
        self.calls.append("step")
        optimizer.step()

    def update(self):
        self.calls.append("update")


def _problem():
    w = torch.nn.Parameter(torch.tensor([2.0]))
    return w, torch.optim.SGD([w], lr=0.1), (w * 3.0).sum()


def test_off_it_is_the_plain_backward_and_step():
    w, opt, loss = _problem()
    precision = MixedPrecision(enabled=False)
    precision.backward(loss, opt)
    assert w.grad.item() == 3.0
    precision.step(opt)
    assert w.item() == pytest.approx(2.0 - 0.1 * 3.0)


def test_with_a_scaler_the_gradients_are_true_size_after_backward():
    """A callback's on_backward_end (clipping, say) must see the real gradients, so the
    scaler divides them back before backward returns, not inside the step."""
    w, opt, loss = _problem()
    precision = MixedPrecision(enabled=False)
    precision.scaler = scaler = _RecordingScaler()
    precision.backward(loss, opt)
    assert scaler.calls == ["scale", "unscale_"]
    assert w.grad.item() == 3.0  # not 3 × 1024
    precision.step(opt)
    assert scaler.calls == ["scale", "unscale_", "step", "update"]
    assert w.item() == pytest.approx(2.0 - 0.1 * 3.0)
