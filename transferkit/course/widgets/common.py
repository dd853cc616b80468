"""Shared pieces of every lesson's controls: a panel of controls above figures, errors
shown in the widget, and `LivePlot`, the live training curves (a `fit` callback).
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
from IPython.display import display

from transferkit.course import plots
from transferkit.training.callbacks import Callback, FitState


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
                "<div class='transferkit-error' style='color:#b00020'>Error: "
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
