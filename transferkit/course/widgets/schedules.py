"""Lesson 06's control: learning-rate schedules, drawn and raced."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations import schedules
from transferkit.foundations.schedules import SCHEDULES
from transferkit.methods.finetune import fine_tune
from transferkit.methods.label_budget import accuracy
from transferkit.methods.selection import rows_html
from transferkit.methods.strategies import STRATEGIES, check_strategy
from transferkit.training.loop import epochs_for_steps


def _make_schedule(name: str, fraction: float):
    """The schedule ``name`` with its one shape setting (warm-up, peak or cut) at ``fraction``."""
    return {
        "constant": schedules.constant,
        "step": schedules.step_decay,
        "cosine": lambda: schedules.cosine(warmup=min(fraction, 0.5)),
        "one_cycle": lambda: schedules.one_cycle(pct_start=fraction),
        "slanted_triangular": lambda: schedules.slanted_triangular(cut_frac=fraction),
    }[name]()


def schedule_lab(
    make_model: Callable[[], nn.Module] | None = None,
    train=None,
    val=None,
    *,
    schedule: str = "slanted_triangular",
    strategy: str = "full",
    steps: int = 100,
    lr: float = 3e-3,
    fraction: float = 0.1,
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """See each learning-rate schedule, and (with a model and data) train with one.

    Controls: the schedule, the peak learning rate, the fraction of the run its
    shape uses (cosine's warm-up, one-cycle's rise, the slanted triangle's cut;
    constant and step ignore it) and the number of optimizer steps. The figure is
    `transferkit.course.plots.schedule_figure` of all five, yours drawn thick. With
    ``make_model`` (a fresh pre-trained model each call), ``train`` (the labelled
    data) and ``val``, a "train" button runs `transferkit.methods.finetune.fine_tune`
    with ``strategy`` and your schedule for that many steps and adds the
    validation accuracy to a table of your runs.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    check_strategy(strategy, STRATEGIES)
    if (make_model is None) != (train is None) or (train is None) != (val is None):
        raise ValueError("to train, pass all of make_model, train and val; to only look at "
                         "the schedules, pass none of them.")
    style = {"description_width": "initial"}
    which = W.ToggleButtons(options=list(SCHEDULES), value=schedule, description="schedule")
    peak = W.FloatLogSlider(value=lr, base=10, min=-4, max=-1, step=0.25,
                            description="peak lr", continuous_update=False, readout_format=".0e")
    shape = W.FloatSlider(value=fraction, min=0.05, max=0.5, step=0.05, style=style,
                          description="warm-up / rise / cut (fraction)", continuous_update=False)
    length = W.IntSlider(value=steps, min=20, max=400, step=20, description="steps",
                         continuous_update=False)
    controls: list[W.Widget] = [which, peak, shape, length]
    button = W.Button(description="train", button_style="primary", icon="play")
    if train is not None:
        controls.append(button)
    runs: list[dict] = []

    def figure() -> go.Figure:
        shown = {name: _make_schedule(name, shape.value) for name in SCHEDULES}
        return plots.schedule_figure(shown, length.value, lr=peak.value, highlight=which.value,
                                     title=f"{which.value}: the learning rate at each of "
                                           f"{length.value} steps")

    panel = Panel(controls, figure(), title="learning-rate schedules")
    panel.runs = runs

    def table() -> str:
        return rows_html([{"schedule": r["schedule"], "peak lr": f"{r['lr']:.0e}",
                           "steps": r["steps"], "validation accuracy": r["val_accuracy"]}
                          for r in runs])

    def redraw() -> None:
        shape.disabled = which.value in ("constant", "step")
        mean = sum(_make_schedule(which.value, shape.value).values(length.value)) / length.value
        panel.status.value = (f"<div class='transferkit-readout'>{html.escape(which.value)}: "
                              f"mean rate {mean * peak.value:.2g} ({mean:.0%} of the peak)"
                              f"{'; press train to try it' if train is not None else ''}"
                              f"{table() if runs else ''}</div>")
        show_in(panel.figure, figure())

    def train_now() -> None:
        panel.status.value = "<div class='transferkit-readout'>training…</div>"
        button.disabled = True
        try:
            model = make_model()
            epochs = epochs_for_steps(len(train), batch_size, length.value)
            fine_tune(model, train, strategy=strategy, epochs=epochs, lr=peak.value,
                      batch_size=batch_size, seed=seed, progress=False,
                      schedule=_make_schedule(which.value, shape.value))
        finally:
            button.disabled = False
        runs.append({"schedule": which.value, "lr": peak.value, "steps": length.value,
                     "val_accuracy": accuracy(model, val)})
        panel.model = model
        redraw()

    redraw()
    for control in (which, peak, shape, length):
        control.observe(guarded(panel.status, redraw), names="value")
    button.on_click(guarded(panel.status, train_now))
    panel.controls = {"schedule": which, "peak lr": peak, "fraction": shape, "steps": length,
                      "train": button}
    return panel
