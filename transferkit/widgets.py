"""Interactive controls for the lessons: ipywidgets wired to `transferkit.plots`.

Each widget answers one question. The figures are drawn by the pure functions
in `plots`; this module only connects sliders and menus to them. If a callback
fails, the error is shown in the widget itself (red text under the controls),
never lost in a log the learner cannot see.

Plotly's `FigureWidget` needs the ``anywidget`` package, and JupyterLab needs
``jupyterlab_widgets``; both are dependencies of transferkit.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
from IPython.display import display
from torch import nn

from . import plots
from .train import Callback, FitState


def show_in(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Replace what ``widget`` shows with ``figure``, in one redraw."""
    with widget.batch_update():
        if len(widget.data) != len(figure.data) or any(
            a.type != b.type for a, b in zip(widget.data, figure.data, strict=True)
        ):
            widget.data = []
            widget.add_traces(list(figure.data))
        else:
            for old, new in zip(widget.data, figure.data, strict=True):
                old.update(new.to_plotly_json(), overwrite=True)
        widget.layout.update(figure.layout.to_plotly_json(), overwrite=True)


def guarded(status: W.HTML, fn: Callable[[], None]) -> Callable[..., None]:
    """Wrap a widget callback so that an error appears in ``status`` instead of vanishing."""

    def run(*_args, **_kwargs) -> None:
        try:
            fn()
        except Exception as err:  # noqa: BLE001  (shown to the learner, not swallowed)
            status.value = (
                "<div class='transferkit-error' style='color:#b00020'>⚠ "
                f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</div>"
            )

    return run


class Panel:
    """Controls above one or more figures (side by side), and a status line; displays as
    one widget. ``panel.figure`` is the first figure, ``panel.figures`` all of them."""

    def __init__(self, controls: list[W.Widget], figure: go.Figure, title: str,
                 more_figures: tuple[go.Figure, ...] = ()):
        self.title = title
        self.figures = [go.FigureWidget(f) for f in (figure, *more_figures)]
        self.figure = self.figures[0]
        self.status = W.HTML()
        plots_row = self.figure if not more_figures else W.HBox(self.figures)
        self.box = W.VBox([W.HBox(controls, layout=W.Layout(flex_flow="row wrap")),
                           self.status, plots_row])
        self.controls: dict[str, W.Widget] = {}

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        # What a reader sees where widgets cannot run (GitHub, a terminal).
        bundle["text/plain"] = f"[interactive: {self.title}; run the notebook to use it]"
        return bundle


def digits_browser(data=None, per_page: int = 30) -> Panel:
    """Browse a dataset's images by class, a page at a time.

    ``data`` is a `transferkit.data.Data` of images (default: the digits).
    """
    if data is None:
        from .data import load_digits

        data = load_digits()
    x, y = data
    names = list(data.classes) or [str(c) for c in sorted(set(y.tolist()))]
    klass = W.Dropdown(options=[("all", -1)] + [(n, i) for i, n in enumerate(names)],
                       value=-1, description="class")
    page = W.IntSlider(value=0, min=0, max=0, description="page", continuous_update=False)

    def selection():
        index = (y == klass.value).nonzero().flatten() if klass.value >= 0 else None
        return (x, y) if index is None else (x[index], y[index])

    def draw(xs, ys):
        start = page.value * per_page
        chunk = slice(start, start + per_page)
        labels = [names[int(c)] for c in ys[chunk]]
        title = f"images {start + 1}–{start + len(labels)} of {len(ys)}"
        return plots.image_grid(xs[chunk], labels, ncols=10, title=title)

    xs, ys = selection()
    panel = Panel([klass, page], draw(xs, ys), title="browse the images by class and page")
    page.max = max(0, (len(ys) - 1) // per_page)

    def on_class() -> None:
        xs, ys = selection()
        page.value, page.max = 0, max(0, (len(ys) - 1) // per_page)
        on_page()

    def on_page() -> None:
        panel.status.value = ""
        show_in(panel.figure, draw(*selection()))

    klass.observe(guarded(panel.status, on_class), names="value")
    page.observe(guarded(panel.status, on_page), names="value")
    panel.controls = {"class": klass, "page": page}
    return panel


class LivePlot(Callback):
    """Draws the loss (and accuracy) curves in the notebook while `fit` runs."""

    def __init__(self, title: str | None = "training curves"):
        self.title = title
        self.figure: go.FigureWidget | None = None

    def on_epoch_end(self, state: FitState) -> None:
        fig = plots.history_figure(state.history.rows, title=self.title)
        if self.figure is None:
            # In a Panel, so a saved notebook shows one line, not the figure's JSON, where
            # widgets cannot run (GitHub).
            panel = Panel([], fig, title=self.title or "training curves")
            self.figure = panel.figure
            display(panel)
        else:
            show_in(self.figure, fig)


# --- lesson 01: gradient descent ---------------------------------------------------------

_EXPLORER_OBJECTIVES = ("quadratic", "rosenbrock", "himmelblau")


def _limit_formula(momentum: float, nesterov: bool) -> str:
    if momentum == 0:
        return "2/L"
    return "2(1+β)/((1+2β)L)" if nesterov else "2(1+β)/L"


def gd_readout(objective, run, lr: float, momentum: float = 0.0, nesterov: bool = False) -> str:
    """One line (HTML) on a run: converged / diverged / still moving, and where α stands
    against the stability limit near the minimum the run heads for."""
    from . import gd

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
    from . import gd

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
    from . import gd

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
    from . import gd

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


# --- lesson 02: training a network -------------------------------------------------------


def _budget_title(budget, n_train: int, rows) -> str:
    from .experiments import budget_words

    last = rows[-1]
    return (f"{budget_words(budget)} ({n_train} training images): "
            f"accuracy train {last['accuracy']:.2f}, validation {last['val_accuracy']:.2f}")


def label_budget_explorer(
    splits,
    make_model: Callable[[], nn.Module],
    *,
    budgets=(1, 3, 5, 10, 50, None),
    value=3,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """Pick a label budget and watch a network overfit it.

    A "labels per class" slider chooses how many labelled training examples of
    each class the network gets (``None`` in ``budgets`` = all of them). Each
    choice trains a fresh ``make_model()`` with `fit` (Adam, about ``steps``
    optimizer steps, seeded, so the same choice always gives the same curves)
    and draws its train and validation curves. With a few labels the training
    accuracy reaches 1 while the validation accuracy stays far below, and the
    validation loss turns upward: that gap is overfitting.

    ``splits`` is ``(train, val, test)``; the test set is not used here.
    """
    from .data import few_labels
    from .device import seeded
    from .experiments import budget_label, check_budgets, epochs_for_steps
    from .train import fit

    train, val, _ = splits
    budgets = check_budgets(budgets, train.y)
    if value not in budgets:
        raise ValueError(f"value {value!r} is not one of the budgets {budgets}.")
    by_label = {budget_label(b): b for b in budgets}
    slider = W.SelectionSlider(options=list(by_label), value=budget_label(value),
                               description="labels per class", continuous_update=False,
                               style={"description_width": "initial"},
                               layout=W.Layout(width="420px"))

    def draw() -> go.Figure:
        budget = by_label[slider.value]
        labelled = train if budget is None else few_labels(train.x, train.y, budget, seed=seed)
        with seeded(seed):
            model = make_model()
            history = fit(model, labelled, val,
                          epochs=epochs_for_steps(len(labelled), batch_size, steps),
                          lr=lr, batch_size=batch_size, seed=seed, restore_best=False,
                          progress=False)
        return plots.history_figure(history.rows,
                                    title=_budget_title(budget, len(labelled), history.rows))

    panel = Panel([slider], draw(), title="train on a label budget and watch it overfit")

    def on_change() -> None:
        panel.status.value = ""
        show_in(panel.figure, draw())

    slider.observe(guarded(panel.status, on_change), names="value")
    panel.controls = {"labels per class": slider}
    return panel


# --- lesson 03: autoencoders -----------------------------------------------------------


class _ProgressBar(Callback):
    """Moves an `ipywidgets.IntProgress` one step per epoch of `fit`."""

    def __init__(self, bar: W.IntProgress):
        self.bar = bar

    def on_train_begin(self, state: FitState) -> None:
        self.bar.max, self.bar.value = state.epochs, 0

    def on_epoch_end(self, state: FitState) -> None:
        self.bar.value = state.epoch


def autoencoder_explorer(
    train=None,
    test=None,
    *,
    code_sizes=(2, 4, 8, 16, 32),
    dims: Callable[[int], list[int]] | None = None,
    models: dict | None = None,
    epochs: int = 60,
    lr: float = 5e-3,
    noise: float = 0.3,
    n_show: int = 10,
    seed: int = 0,
) -> Panel:
    """Choose a code size (and denoising on or off), see what the autoencoder rebuilds.

    ``train`` / ``test``: `transferkit.data.Data` (default: the digits split by
    ``train_val_test_split(seed=0)``); the model learns from ``train.x`` only (no
    labels) and is shown on ``test``. ``dims(k)`` gives the encoder widths for
    code size k (default ``[D, 128, 64, k]``). A model is trained the first time
    its settings are chosen (a progress bar shows it) and kept in a cache keyed
    by ``(code size, denoising)``; ``models`` pre-fills that cache with models
    you trained already; their train/eval modes are left as they were. Click (or
    hover) a point of the 2-D map of the codes to see that image and its
    reconstruction. For code size 1 the map draws the code against the class.

    A new model's initial weights are drawn from ``seed`` inside
    `transferkit.device.seeded`, so the notebook's own random state is not changed.
    """
    import time

    import torch

    from . import autoencoder as ae
    from .device import seeded

    if (train is None) != (test is None):
        raise ValueError("pass both train and test (or neither, for the digits).")
    if train is None:
        from .data import load_digits, train_val_test_split

        splits = train_val_test_split(*load_digits(), seed=0)
        train, test = splits.train, splits.test
    n_inputs = int(train.x[0].numel())
    dims = dims or (lambda k: [n_inputs, 128, 64, k])
    cache: dict = dict(models or {})
    names = list(getattr(test, "classes", ())) or None
    shown = test.x[:n_show]
    pca_error = {}

    size = W.Dropdown(options=[(str(k), int(k)) for k in code_sizes], value=int(code_sizes[0]),
                      description="code size")
    denoise = W.Checkbox(value=False, description="denoising", indent=False)
    bar = W.IntProgress(value=0, min=0, max=epochs, description="training",
                        layout=W.Layout(width="260px"))

    def model_for(k: int, noisy: bool):
        key = (k, noisy)
        if key not in cache:
            panel.status.value = f"training code size {k}, denoising {'on' if noisy else 'off'}…"
            start = time.perf_counter()
            with seeded(seed):  # the notebook's random state stays as it was
                model = ae.Autoencoder(dims(k))
            cache[key] = ae.pretrain(model, train.x, epochs=epochs, lr=lr,
                                     noise=noise if noisy else 0.0, seed=seed, progress=False,
                                     callbacks=[_ProgressBar(bar)])
            panel.status.value = f"trained in {time.perf_counter() - start:.1f} s (now cached)"
        else:
            bar.value = bar.max
            panel.status.value = "from the cache"
        return cache[key]

    def figures(k: int, noisy: bool):
        model = model_for(k, noisy)
        error = ae.reconstruction_error(model, test.x)
        if k not in pca_error:
            pca_error[k] = ae.reconstruction_error(ae.PCA(k).fit(train.x), test.x).mean
        rows = {"input": shown}
        if noisy:
            g = torch.Generator().manual_seed(seed)
            rows["noisy input"] = ae.corrupt(shown, noise, generator=g)
        rows["reconstruction"] = ae.reconstruct(model, rows.get("noisy input", shown))
        # each caption: the error of the image shown against the clean input
        shown_errors = (rows["reconstruction"] - shown).pow(2).flatten(1).mean(dim=1)
        captions = {"input": [names[int(c)] if names else str(int(c)) for c in test.y[:n_show]],
                    "reconstruction": [f"{e:.3f}" for e in shown_errors]}
        title = (f"code size {k}, denoising {'on' if noisy else 'off'}: test error "
                 f"{error.mean:.4f} (PCA {pca_error[k]:.4f})")
        recon = plots.reconstruction_grid(rows, captions, title=title)
        z = ae.codes(model, test.x)
        axes = ("z₁", "z₂")
        if k == 1:  # one number: drawn against the class, spread a little to show density
            how = "the code against the class"
            spread = torch.rand(len(z), generator=torch.Generator().manual_seed(0)) - 0.5
            points = torch.stack([z[:, 0], test.y.float() + 0.6 * spread], dim=1)
            axes = ("z (the code)", "class (points spread a little)")
        elif k == 2:
            how, points = "the code itself", z
        else:
            how, points = "its first two principal components", ae.PCA(2).fit(z).encode(z)
        code_map = plots.code_map_figure(points, test.y, class_names=names, axis_titles=axes,
                                         title=f"2-D map of the code (size {k}: {how})")
        return recon, code_map, model

    def picked_figure(index: int | None, model=None):
        if index is None:
            return plots.image_grid(torch.zeros(2, *shown.shape[1:]), ["", ""], ncols=2,
                                    title="click a point in the map")
        x = test.x[index:index + 1]
        out = ae.reconstruct(model, x)
        label = names[int(test.y[index])] if names else str(int(test.y[index]))
        return plots.image_grid(torch.cat([x, out]), ["input", "decoded"], ncols=2,
                                title=f"example {index} (class {label})")

    panel = Panel([size, denoise, bar], go.Figure(), title="autoencoder explorer")
    panel.map, panel.picked = go.FigureWidget(), go.FigureWidget()
    panel.model, panel.cache = None, cache
    panel.box = W.Box([panel.box, W.HBox([panel.map, panel.picked])],
                      layout=W.Layout(display="flex", flex_flow="column"))

    def show_point(index: int) -> None:
        show_in(panel.picked, picked_figure(int(index), panel.model))

    def on_point(trace, points, _state) -> None:
        if points.point_inds:
            guarded(panel.status, lambda: show_point(trace.customdata[points.point_inds[0]]))()

    def wire_map() -> None:
        for trace in panel.map.data:
            trace.on_click(on_point)
            trace.on_hover(on_point)

    def on_change() -> None:
        recon, code_map, panel.model = figures(size.value, denoise.value)
        show_in(panel.figure, recon)
        show_in(panel.map, code_map)
        show_in(panel.picked, picked_figure(None))
        wire_map()

    on_change()  # the first figures (an error here is raised, not hidden)
    size.observe(guarded(panel.status, on_change), names="value")
    denoise.observe(guarded(panel.status, on_change), names="value")
    panel.controls = {"code size": size, "denoising": denoise}
    panel.show_point = guarded(panel.status, show_point)
    return panel


# --- lesson 04: fine-tuning ------------------------------------------------------------


def stage_reports_html(model: nn.Module, strategy: str, *, k: int = 2, bn: str = "train") -> str:
    """What each stage of ``strategy`` trains in ``model``, as HTML: one
    `transferkit.finetune.trainable_report` table per stage, under its name.

    Freezes and unfreezes ``model`` stage by stage (`set_trainable`), so pass a
    fresh model, not one you still want to train.
    """
    from .finetune import layer_groups, set_trainable, strategy_stages, trainable_report

    reports = []
    for i, (name, _) in enumerate(strategy_stages(strategy, len(layer_groups(model)), k=k)):
        set_trainable(model, strategy, i, k=k, bn=bn)
        reports.append((name, trainable_report(model)))
    return _stages_html(reports)


def _stages_html(reports: list, note: str = "") -> str:
    """(stage name, `TrainableReport`) pairs as one HTML block, a table per stage."""
    parts = [f"<div class='transferkit-stage'><b>stage {i + 1} of {len(reports)}: "
             f"{html.escape(name)}</b>{report._repr_html_()}</div>"
             for i, (name, report) in enumerate(reports)]
    return f"<div class='transferkit-stages'>{''.join(parts)}{note}</div>"


class _StageCurves(Callback):
    """The curves of a multi-stage `fine_tune` run, redrawn after every epoch of every
    stage (the epoch keeps counting from stage to stage; dotted lines mark where a
    stage begins), and a progress bar over all the stages' epochs."""

    def __init__(self, figure: go.FigureWidget, bar: W.IntProgress, strategy: str,
                 stages: list[tuple[str, list[str]]], epochs: int, title: str,
                 model: nn.Module):
        self.figure, self.bar, self.strategy, self.plan = figure, bar, strategy, stages
        self.epochs, self.title, self.model = epochs, title, model
        self.done: list = []  # finished stages (finetune.Stage)
        self.reports: list = []  # (stage name, TrainableReport with that stage's optimizer)
        self.bar.max, self.bar.value = epochs * len(stages), 0

    def on_train_begin(self, state: FitState) -> None:
        from .finetune import trainable_report

        # the model as this stage trains it, and the learning rates of its optimizer
        name = self.plan[len(self.done)][0]
        self.reports.append((name, trainable_report(self.model, state.optimizer)))

    def _stage(self, i: int, state: FitState):
        from .finetune import Stage

        name, trainable = self.plan[i]
        return Stage(name, trainable, max(g["lr"] for g in state.optimizer.param_groups),
                     state.history)

    def on_epoch_end(self, state: FitState) -> None:
        from .finetune import FineTuneResult

        i = len(self.done)
        result = FineTuneResult(self.strategy, [*self.done, self._stage(i, state)])
        self.bar.value = self.epochs * i + state.epoch
        title = f"{self.title}: {self.plan[i][0]}, epoch {state.epoch} of {state.epochs}"
        if state.epoch == 1:  # a new stage: the whole figure, with its boundary line
            show_in(self.figure, result.to_figure(title=title))
            return
        # then only the new points: building the figure again costs more than the epoch
        rows = result.to_rows()
        with self.figure.batch_update():
            for trace, column in zip(self.figure.data, plots.history_columns(self.figure),
                                     strict=True):
                trace.x, trace.y = [r["epoch"] for r in rows], [r[column] for r in rows]
            self.figure.layout.title.text = title

    def on_train_end(self, state: FitState) -> None:
        self.done.append(self._stage(len(self.done), state))


def _fresh(make_model: Callable[[], nn.Module], earlier: nn.Module) -> nn.Module:
    """``make_model()``, refused if it shares a weight with the ``earlier`` model it made:
    fine-tuning it would then change the pre-trained encoder of every later model."""
    model = make_model()
    if not isinstance(model, nn.Module):
        raise TypeError(f"make_model() must return an nn.Module, got {type(model).__name__}.")
    seen = {p.untyped_storage().data_ptr() for p in earlier.parameters()}
    if model is earlier or any(p.untyped_storage().data_ptr() in seen
                               for p in model.parameters()):
        raise ValueError("make_model() returned weights it had returned before, so training "
                         "would change the pre-trained encoder. Copy it each time, e.g. "
                         "make_model = lambda: Classifier(copy.deepcopy(encoder), 10).")
    return model


def finetune_lab(
    make_model: Callable[[], nn.Module],
    splits,
    *,
    budgets=(1, 3, 5, 10, 50, None),
    budget=10,
    strategy: str = "lp_ft",
    lr: float = 1e-3,
    epochs: int = 20,
    k: int = 2,
    bn: str = "train",
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """Fine-tune a pre-trained network your way, and watch what trains and how.

    ``make_model()`` returns a *new* model each time: a
    `transferkit.finetune.Classifier` on a copy of the pre-trained encoder
    (``lambda: Classifier(copy.deepcopy(encoder), 10)``); a model sharing weights
    with an earlier one is refused, since training it would change the encoder.
    ``splits`` is ``(train, val, test)``.

    Controls: the strategy (`transferkit.finetune.STRATEGIES`), the labels per
    class (``budgets``; None = all), the learning rate of the stages that train the
    encoder (a linear probe's head gets 10×, see `fine_tune`), the epochs per stage,
    and a "train" button. Tables under the controls show, for each stage of the
    chosen strategy, which layer groups train and what their BatchNorm layers do
    (`stage_reports_html`); they change as soon as the strategy does. "train" draws
    the labelled subset (`transferkit.data.few_labels` with ``seed``), runs
    `fine_tune` with the curves redrawn after every epoch (the epochs count on
    across stages; a dotted line marks each new stage), and then reports validation
    and test accuracy, the feature drift and the time; the tables then also show
    the learning rate each group trained with. Everything runs inside
    `transferkit.device.seeded`: the same settings give the same run, and the
    notebook's random state is left alone.
    """
    import time

    from .data import few_labels
    from .device import seeded
    from .experiments import budget_label, budget_words, check_budgets
    from .finetune import STRATEGIES, check_strategy, fine_tune, layer_groups, strategy_stages
    from .train import evaluate

    train, val, test = splits
    budgets = check_budgets(budgets, train.y)
    if budget not in budgets:
        raise ValueError(f"budget {budget!r} is not one of the budgets {budgets}.")
    check_strategy(strategy)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    style = {"description_width": "initial"}
    by_label = {budget_label(b): b for b in budgets}
    choice = W.Dropdown(options=STRATEGIES, value=strategy, description="strategy")
    labels = W.SelectionSlider(options=list(by_label), value=budget_label(budget),
                               description="labels per class", continuous_update=False,
                               style=style)
    exponent = math.floor(math.log10(lr))
    rate = W.FloatLogSlider(value=lr, base=10, min=exponent - 2, max=exponent + 2, step=0.25,
                            description="learning rate", readout_format=".2g",
                            continuous_update=False, style=style)
    n_epochs = W.IntSlider(value=epochs, min=1, max=max(200, epochs),
                           description="epochs per stage", continuous_update=False, style=style)
    button = W.Button(description="train", button_style="primary", icon="play")
    bar = W.IntProgress(value=0, min=0, max=1, description="progress",
                        layout=W.Layout(width="260px"))
    with seeded(seed):
        first = make_model()  # kept, so that a later model sharing its weights is caught
    panel = Panel([choice, labels, rate, n_epochs, button, bar],
                  plots.history_figure([], title="press train: the curves appear epoch by "
                                       "epoch"), title="fine-tuning lab")
    panel.report = W.HTML()
    controls, status, figure = panel.box.children
    panel.box = W.VBox([controls, panel.report, status, figure])
    panel.result = panel.model = None

    def show_report() -> None:
        with seeded(seed):
            model = _fresh(make_model, first)
        panel.report.value = stage_reports_html(model, choice.value, k=k, bn=bn)

    def train_now() -> None:
        chosen, name = by_label[labels.value], choice.value
        panel.status.value = (f"<div class='transferkit-readout'>training {html.escape(name)} on "
                              f"{budget_words(chosen)}…</div>")
        labelled = train if chosen is None else few_labels(train.x, train.y, chosen, seed=seed)
        start = time.perf_counter()
        button.disabled = True
        try:
            with seeded(seed):
                model = _fresh(make_model, first)
                groups = [g.name for g in layer_groups(model)]
                plan = [(stage, groups[at:])
                        for stage, at in strategy_stages(name, len(groups), k=k)]
                curves = _StageCurves(panel.figure, bar, name, plan, n_epochs.value,
                                      f"{name}, {budget_words(chosen)}", model)
                result = fine_tune(model, labelled, val, strategy=name, epochs=n_epochs.value,
                                   lr=rate.value, k=k, bn=bn, batch_size=batch_size, seed=seed,
                                   progress=False, callbacks=[curves])
        finally:
            button.disabled = False
        seconds = time.perf_counter() - start
        val_acc, test_acc = evaluate(model, val)["accuracy"], evaluate(model, test)["accuracy"]
        drift = ("— (scratch starts from no pre-trained features)"
                 if result.feature_drift is None else f"{result.feature_drift:.3f}")
        panel.result, panel.model = result, model
        panel.report.value = _stages_html(curves.reports, note=(
            "<div style='color:#555'>as the last run trained: the learning rates are those "
            "of each stage's optimizer</div>"))
        show_in(panel.figure, result.to_figure(
            title=f"{name}, {budget_words(chosen)}: validation accuracy {val_acc:.3f}"))
        panel.status.value = (
            f"<div class='transferkit-readout'><b>{html.escape(name)}</b> on "
            f"{budget_words(chosen)} ({len(labelled)} images), {n_epochs.value} epochs per "
            f"stage: validation accuracy {val_acc:.3f}, test accuracy {test_acc:.3f}, "
            f"feature drift {drift}, {seconds:.1f} s</div>")

    def prompt() -> None:
        panel.status.value = (
            f"<div class='transferkit-readout'>press train to fine-tune with "
            f"{html.escape(choice.value)} on {budget_words(by_label[labels.value])}</div>")

    show_report()  # the first report (an error here is raised, not hidden)
    prompt()

    def on_strategy() -> None:
        prompt()
        show_report()

    choice.observe(guarded(panel.status, on_strategy), names="value")
    labels.observe(guarded(panel.status, prompt), names="value")
    button.on_click(guarded(panel.status, train_now))
    panel.controls = {"strategy": choice, "labels per class": labels, "learning rate": rate,
                      "epochs per stage": n_epochs, "train": button, "progress": bar}
    return panel


# --- lesson 05: CNN transfer ------------------------------------------------------------


def _own_summary(runs: list[dict], budget) -> list[dict]:
    from .transferability import summarise_transfer

    mine = [r for r in runs if r["budget"] == budget]
    return summarise_transfer(mine) if mine else []


def transferability_lab(
    source: nn.Module,
    make_model: Callable[[], nn.Module],
    splits,
    *,
    summary=None,
    budgets=(5, 20, None),
    budget=5,
    n: int = 1,
    mode: str = "frozen",
    steps: int = 150,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """Copy the first n layers of a source network, frozen or fine-tuned, and train the rest.

    ``source`` is the network trained on the source task; ``make_model()`` builds a
    fresh one of the same shape for the target task; ``splits`` are the target's
    ``(train, val, test)``. Controls: n (the layer groups copied, 0 = the target-only
    network), frozen or fine-tuned, the labels per class (``budgets``; None = all), and
    a "train" button, which trains one network exactly as
    `transferkit.transferability.transfer_method` does (``steps`` Adam steps at
    ``lr``, seeded by ``seed``) and reports its target test accuracy. The figure is
    `transferkit.plots.transferability_figure` of ``summary`` (a study run in the
    lesson) with your run as a star; for a budget the study did not run, it shows
    your own runs instead.
    """
    import time

    from .data import few_labels
    from .experiments import budget_label, budget_words, check_budgets
    from .finetune import layer_groups
    from .train import evaluate
    from .transferability import BASELINE, MODES, max_depth, transfer_method

    train, val, test = splits
    budgets = check_budgets(budgets, train.y)
    if budget not in budgets:
        raise ValueError(f"budget {budget!r} is not one of the budgets {budgets}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    depth = max_depth(source)
    if not isinstance(n, int) or not 0 <= n <= depth:
        raise ValueError(f"n must be an integer from 0 to {depth}, got {n!r}.")
    names = [g.name for g in layer_groups(source)[:-1]]
    style = {"description_width": "initial"}
    by_label = {budget_label(b): b for b in budgets}
    copied = W.IntSlider(value=n, min=0, max=depth, description="layers copied (n)",
                         continuous_update=False, style=style)
    how = W.ToggleButtons(options=MODES, value=mode, description="copied layers")
    labels = W.SelectionSlider(options=list(by_label), value=budget_label(budget),
                               description="labels per class", continuous_update=False,
                               style=style)
    button = W.Button(description="train", button_style="primary", icon="play")
    runs: list[dict] = []

    def figure(chosen, highlight=None) -> go.Figure:
        study = [r for r in (summary or []) if r["budget"] == chosen]
        shown = study or _own_summary(runs, chosen)
        if not shown:
            return plots.history_figure([], title=f"press train: your runs on "
                                        f"{budget_words(chosen)} appear here")
        return plots.transferability_figure(
            shown, layer_names=names, highlight=highlight,
            title=(f"{budget_words(chosen)}: " + ("the study" if study else "your runs")
                   + (" and your last run (star)" if highlight else "")))

    panel = Panel([copied, how, labels, button], figure(budget),
                  title="how transferable are the layers?")
    panel.runs = runs

    def describe() -> str:
        k = copied.value
        if k == 0:
            return "nothing copied: the target-only network"
        return f"{how.value} copy of the first {k} group(s) ({', '.join(names[:k])})"

    def prompt() -> None:
        panel.status.value = (f"<div class='transferkit-readout'>press train: "
                              f"{html.escape(describe())}, "
                              f"{budget_words(by_label[labels.value])}</div>")
        show_in(panel.figure, figure(by_label[labels.value]))

    def train_now() -> None:
        chosen, k = by_label[labels.value], copied.value
        chosen_mode = how.value if k else "fine-tuned"  # n = 0: nothing to freeze
        labelled = train if chosen is None else few_labels(train.x, train.y, chosen, seed=seed)
        panel.status.value = ("<div class='transferkit-readout'>training: "
                              f"{html.escape(describe())}…</div>")
        button.disabled = True
        start = time.perf_counter()
        try:
            method = transfer_method(source, make_model, k, chosen_mode, steps=steps, lr=lr,
                                     batch_size=batch_size)
            model = method(labelled, val, seed)
        finally:
            button.disabled = False
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, test)["accuracy"]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        runs.append({"method": f"{chosen_mode} {k}" if k else BASELINE, "budget": chosen,
                     "per_class": len(labelled) / len(set(labelled.y.tolist())),
                     "n_train": len(labelled), "test_accuracy": accuracy})
        study = {(r["mode"], r["n"]): r for r in (summary or []) if r["budget"] == chosen}
        ref = study.get((chosen_mode, k) if k else (BASELINE, 0))
        compare = (f" (the study: {ref['mean']:.3f} ± {ref['std']:.3f} over "
                   f"{ref.get('n_seeds', 1)} seeds)" if ref else "")
        panel.model = model
        show_in(panel.figure, figure(chosen, {"mode": chosen_mode, "n": k,
                                              "accuracy": accuracy}))
        panel.status.value = (
            f"<div class='transferkit-readout'><b>{html.escape(describe())}</b>, "
            f"{budget_words(chosen)} ({len(labelled)} images): target test accuracy "
            f"{accuracy:.3f}{compare}; {trainable:,} of {total:,} parameters trained; "
            f"{seconds:.1f} s</div>")

    prompt()
    for control in (copied, how, labels):
        control.observe(guarded(panel.status, prompt), names="value")
    button.on_click(guarded(panel.status, train_now))
    panel.controls = {"layers copied (n)": copied, "copied layers": how,
                      "labels per class": labels, "train": button}
    panel.model = None
    return panel


# --- lesson 06: choosing a strategy ---------------------------------------------------------


def _make_schedule(name: str, fraction: float):
    """The schedule ``name`` with its one shape setting (warm-up, peak or cut) at ``fraction``."""
    from . import schedules

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
    `transferkit.plots.schedule_figure` of all five, yours drawn thick. With
    ``make_model`` (a fresh pre-trained model each call), ``train`` (the labelled
    data) and ``val``, a "train" button runs `transferkit.finetune.fine_tune`
    with ``strategy`` and your schedule for that many steps and adds the
    validation accuracy to a table of your runs.
    """
    from .experiments import epochs_for_steps
    from .finetune import check_strategy
    from .schedules import SCHEDULES

    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}.")
    check_strategy(strategy)
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
        from .selection import rows_html

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
        from .experiments import accuracy
        from .finetune import fine_tune

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
