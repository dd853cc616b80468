"""Lesson 01's controls: gradient descent on a surface you can steer, and a race of
optimizers.
"""

from __future__ import annotations

import math

import ipywidgets as W

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations import gd

_EXPLORER_OBJECTIVES = ("quadratic", "rosenbrock", "himmelblau")


def _limit_formula(momentum: float, nesterov: bool) -> str:
    if momentum == 0:
        return "2/L"
    return "2(1+β)/((1+2β)L)" if nesterov else "2(1+β)/L"


def gd_readout(objective, run, lr: float, momentum: float = 0.0, nesterov: bool = False) -> str:
    """One line (HTML) on a run: converged / diverged / still moving, and where α stands
    against the stability limit near the minimum the run heads for."""
    near = run.points[0] if run.diverged else run.final
    minimum, limit = gd.local_limit(objective, near, momentum, nesterov)
    ratio = lr / limit
    side = "below" if ratio < 1 else "above"
    gap = float(run.losses[-1]) - objective.min_value
    where = ", ".join(f"{v:.3g}" for v in minimum)
    colour = {"converged": "#1b7f3a", "diverged": "#b00020"}.get(run.status, "#8a6d00")
    return (f"<div class='transferkit-readout'><b style='color:{colour}'>{run.status}</b> "
            f"after {run.steps} steps (f − f* = {gap:.3g}). "
            f"α = {lr:.3g} is {ratio:.2f}× the stability limit "
            f"{_limit_formula(momentum, nesterov)} = {limit:.3g} near the minimum ({where}): "
            f"{abs(1 - ratio):.0%} {side} it.</div>")


def gd_explorer(objective: str = "quadratic", steps: int = 40) -> Panel:
    """Gradient descent on a 2-D surface: what do the learning rate and momentum do?

    Controls: the objective, the learning rate (log scale), momentum, Nesterov, the number
    of steps and the start point (sliders, or click on the contour). The contour with the
    path, and f − f* per step, redraw when a control is released; the line under the
    controls says whether the run converged and how α compares with the stability limit.
    """
    if objective not in _EXPLORER_OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of "
                         f"{', '.join(_EXPLORER_OBJECTIVES)}.")
    slider = {"continuous_update": False, "style": {"description_width": "initial"}}
    choice = W.Dropdown(options=_EXPLORER_OBJECTIVES, value=objective, description="objective")
    lr = W.FloatLogSlider(base=10, step=0.05, description="learning rate",
                          readout_format=".3g", **slider)
    momentum = W.FloatSlider(value=0.0, min=0.0, max=0.99, step=0.01, description="momentum",
                             **slider)
    nesterov = W.Checkbox(value=False, description="Nesterov")
    n_steps = W.IntSlider(value=steps, min=1, max=500, description="steps", **slider)
    start_x = W.FloatSlider(step=0.05, description="start x", **slider)
    start_y = W.FloatSlider(step=0.05, description="start y", **slider)
    state = {"objective": gd.objective(objective), "hold": False}

    def figures():
        obj = state["objective"]
        run = gd.descend(obj, (start_x.value, start_y.value), lr=lr.value, steps=n_steps.value,
                         momentum=momentum.value, nesterov=nesterov.value)
        title = f"{obj.name}: α = {lr.value:.3g}, β = {momentum.value:g}" + (
            ", Nesterov" if nesterov.value else "")
        return (run, plots.contour_figure(obj, {"gradient descent": run}, title=title),
                plots.loss_curve_figure({"gradient descent": run}, obj.min_value))

    def set_objective() -> None:
        obj = state["objective"] = gd.objective(choice.value)
        limit = gd.local_limit(obj, obj.start)[1]
        exponent = math.floor(math.log10(limit))
        (x0, x1), (y0, y1) = obj.bounds
        state["hold"] = True  # change every control, then draw once
        try:
            lr.min, lr.max = -4, 1  # widen first so the new value always fits
            lr.value = round(0.5 * limit, 6)
            lr.min, lr.max = exponent - 3, exponent + 1
            for control, lo, hi, value in ((start_x, x0, x1, obj.start[0]),
                                           (start_y, y0, y1, obj.start[1])):
                control.min, control.max = -100.0, 100.0
                control.value = value
                control.min, control.max = lo, hi
        finally:
            state["hold"] = False

    def redraw() -> None:
        if state["hold"]:
            return
        run, contour, losses = figures()
        show_in(panel.figures[0], contour)
        show_in(panel.figures[1], losses)
        panel.figures[0].data[0].on_click(start_here)
        panel.status.value = gd_readout(state["objective"], run, lr.value, momentum.value,
                                        nesterov.value)

    def start_here(_trace, points, _selector) -> None:
        if not points.xs:
            return
        state["hold"] = True
        try:
            start_x.value, start_y.value = points.xs[0], points.ys[0]
        finally:
            state["hold"] = False
        guarded(panel.status, redraw)()

    set_objective()
    run, contour, losses = figures()
    panel = Panel([choice, lr, momentum, nesterov, n_steps, start_x, start_y], contour,
                  title="gradient descent explorer", more_figures=(losses,))
    panel.figures[0].data[0].on_click(start_here)
    panel.status.value = gd_readout(state["objective"], run, lr.value)

    def on_objective() -> None:
        set_objective()
        redraw()

    choice.observe(guarded(panel.status, on_objective), names="value")
    for control in (lr, momentum, nesterov, n_steps, start_x, start_y):
        control.observe(guarded(panel.status, redraw), names="value")
    panel.controls = {"objective": choice, "learning rate": lr, "momentum": momentum,
                      "Nesterov": nesterov, "steps": n_steps, "start x": start_x,
                      "start y": start_y}
    return panel


def race_settings(objective) -> dict[str, dict]:
    """Optimisers to compare on ``objective``: plain GD, heavy ball and Nesterov at the same
    α (half the plain stability limit near the start's minimum), and Adam."""
    alpha = 0.5 * gd.local_limit(objective, objective.start)[1]
    width = objective.bounds[0][1] - objective.bounds[0][0]
    return {
        "gradient descent": {"lr": alpha},
        "momentum 0.9": {"lr": alpha, "momentum": 0.9},
        "Nesterov 0.9": {"lr": alpha, "momentum": 0.9, "nesterov": True},
        "Adam": {"method": "adam", "lr": round(0.01 * width, 4)},
    }


def optimizer_race(objective: str = "rosenbrock", steps: int = 200) -> Panel:
    """Several optimisers from one start point on one surface (`race_settings`): which
    gets to the minimum first?"""
    choice = W.Dropdown(options=_EXPLORER_OBJECTIVES, value=objective, description="surface")
    n_steps = W.IntSlider(value=steps, min=10, max=1000, step=10, description="race steps",
                          continuous_update=False, style={"description_width": "initial"})

    def draw():
        obj = gd.objective(choice.value)
        runs = gd.compare(obj, obj.start, n_steps.value, race_settings(obj))
        title = f"{obj.name}: {n_steps.value} steps from ({obj.start[0]:g}, {obj.start[1]:g})"
        return (plots.contour_figure(obj, runs, title=title),
                plots.loss_curve_figure(runs, obj.min_value))

    contour, losses = draw()
    panel = Panel([choice, n_steps], contour, title="optimisers compared",
                  more_figures=(losses,))

    def redraw() -> None:
        panel.status.value = ""
        for widget, figure in zip(panel.figures, draw(), strict=True):
            show_in(widget, figure)

    for control in (choice, n_steps):
        control.observe(guarded(panel.status, redraw), names="value")
    panel.controls = {"surface": choice, "race steps": n_steps}
    return panel
