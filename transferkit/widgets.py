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
    """Controls above a figure, and a status line; displays as one widget."""

    def __init__(self, controls: list[W.Widget], figure: go.Figure, title: str):
        self.title = title
        self.figure = go.FigureWidget(figure)
        self.status = W.HTML()
        self.box = W.VBox([W.HBox(controls), self.status, self.figure])
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
            self.figure = go.FigureWidget(fig)
            display(self.figure)
        else:
            show_in(self.figure, fig)


# --- lesson 02: training a network -------------------------------------------------------


def _budget_title(budget, n_train: int, rows) -> str:
    last = rows[-1]
    labels = ("all labels" if budget is None
              else f"{budget} label{'s' if budget != 1 else ''} per class")
    return (f"{labels} ({n_train} training images): accuracy train {last['accuracy']:.2f}, "
            f"validation {last['val_accuracy']:.2f}")


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
    from .device import seed_everything
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
        seed_everything(seed)
        model = make_model()
        history = fit(model, labelled, val, epochs=epochs_for_steps(len(labelled), batch_size,
                                                                     steps),
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
