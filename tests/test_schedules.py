"""Learning-rate schedules: the same numbers as torch's schedulers and the papers'
formulas, and `fit` applies them step by step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferkit.foundations.schedules import (
    SCHEDULES,
    constant,
    cosine,
    get_schedule,
    linear,
    one_cycle,
    slanted_triangular,
    step_decay,
)
from transferkit.training.loop import fit


def _torch_rates(make_scheduler, total: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def _our_rates(schedule, total: int, lr: float = 0.1) -> list[float]:
    return [lr * m for m in schedule.values(total)]


@pytest.mark.parametrize("total", [10, 57, 300])
def test_one_cycle_gives_torchs_onecyclelr_numbers(total):
    ours = _our_rates(one_cycle(pct_start=0.3, div=25, final_div=1e4), total)
    theirs = _torch_rates(lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=total, pct_start=0.3, cycle_momentum=False), total)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("total", [7, 100])
def test_cosine_without_warmup_is_cosineannealinglr(total):
    ours = _our_rates(cosine(final=0.01), total)
    theirs = _torch_rates(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=total, eta_min=0.1 * 0.01), total)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("total", "warmup"), [(10, 0.1), (64, 0.1), (37, 0.25), (20, 0.0)])
def test_linear_gives_transformers_linear_schedule_with_warmup(total, warmup):
    from transformers import get_linear_schedule_with_warmup

    ours = _our_rates(linear(warmup), total)
    theirs = _torch_rates(lambda opt: get_linear_schedule_with_warmup(
        opt, num_warmup_steps=math.ceil(warmup * total), num_training_steps=total), total)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_step_decay_is_multisteplr_at_fractions():
    total = 40
    ours = _our_rates(step_decay(at=(0.5, 0.75), gamma=0.1), total)
    theirs = _torch_rates(lambda opt: torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[20, 30], gamma=0.1), total)
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_slanted_triangular_follows_ulmfit_equation_3():
    total, cut_frac, ratio = 1000, 0.1, 32
    values = slanted_triangular(cut_frac, ratio).values(total)
    cut = math.floor(total * cut_frac)
    for t in (0, 50, 99, 100, 400, 999):
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        assert values[t] == pytest.approx((1 + p * (ratio - 1)) / ratio)
    assert max(values) == values[cut] == 1.0          # the peak is at the cut
    assert values[0] == pytest.approx(1 / ratio)      # starts 32× lower
    assert values[cut - 1] < 1 and values[cut + 1] < 1


def test_cosine_warmup_rises_linearly_then_falls():
    values = cosine(warmup=0.1).values(100)
    assert values[:10] == pytest.approx([(t + 1) / 10 for t in range(10)])
    assert all(a >= b for a, b in zip(values[10:-1], values[11:], strict=True))
    assert values[-1] < 0.001


def test_constant_and_names():
    assert constant().values(5) == [1.0] * 5
    assert set(SCHEDULES) == {"constant", "step", "cosine", "one_cycle", "slanted_triangular"}
    for name in SCHEDULES:
        values = get_schedule(name).values(50)
        assert max(values) == pytest.approx(1.0), name  # the optimizer's lr is the peak
        assert min(values) > -1e-12, name


@pytest.mark.parametrize("bad, match", [
    (lambda: cosine(warmup=0.9), "warmup"),
    (lambda: step_decay(at=(1.5,)), "fraction"),
    (lambda: step_decay(gamma=2), "gamma"),
    (lambda: slanted_triangular(ratio=0.5), "ratio"),
    (lambda: get_schedule("cosyne"), "unknown schedule 'cosyne'"),
    (lambda: cosine()(0, 0), "total number of steps"),
])
def test_bad_settings_are_refused_with_the_reason(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def _data(n: int = 40):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_fit_applies_the_schedule_every_step():
    x, y = _data(40)  # batch 10: 4 steps per epoch, 12 steps in all
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
    fit(model, (x, y), epochs=3, batch_size=10, optimizer=opt, schedule=one_cycle(),
        progress=False, seed=0)
    assert seen == pytest.approx([0.5 * m for m in one_cycle().values(12)])


def test_fit_with_a_schedule_keeps_discriminative_ratios():
    x, y = _data(40)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    opt = torch.optim.Adam([{"params": model[0].parameters(), "lr": 0.01},
                            {"params": model[1].parameters(), "lr": 0.026}])
    history = fit(model, (x, y), epochs=2, batch_size=10, optimizer=opt, schedule="cosine",
                  progress=False, seed=0)
    lows, highs = (g["lr"] for g in opt.param_groups)
    assert highs / lows == pytest.approx(2.6)
    assert history["lr"][0] < 0.01  # the recorded rate follows the schedule down


def test_fit_without_a_schedule_keeps_the_rate():
    x, y = _data(40)
    history = fit(nn.Linear(4, 3), (x, y), epochs=2, lr=0.01, progress=False)
    assert history["lr"] == [0.01, 0.01]
