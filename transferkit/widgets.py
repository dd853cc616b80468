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
    you trained already. Click (or hover) a point of the 2-D map of the codes to
    see that image and its reconstruction.
    """
    import time

    import torch

    from . import autoencoder as ae

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
            torch.manual_seed(seed)
            cache[key] = ae.pretrain(ae.Autoencoder(dims(k)), train.x, epochs=epochs, lr=lr,
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
        with torch.no_grad():
            model.eval()
            rows["reconstruction"] = model(rows.get("noisy input", shown))
        # each caption: the error of the image shown against the clean input
        shown_errors = (rows["reconstruction"] - shown).pow(2).flatten(1).mean(dim=1)
        captions = {"input": [names[int(c)] if names else str(int(c)) for c in test.y[:n_show]],
                    "reconstruction": [f"{e:.3f}" for e in shown_errors]}
        title = (f"code size {k}, denoising {'on' if noisy else 'off'}: test error "
                 f"{error.mean:.4f} (PCA {pca_error[k]:.4f})")
        recon = plots.reconstruction_grid(rows, captions, title=title)
        z = ae.codes(model, test.x)
        how = "the code itself" if k == 2 else "its first two principal components"
        points = z if k == 2 else ae.PCA(2).fit(z).encode(z)
        code_map = plots.code_map_figure(points, test.y, class_names=names,
                                         title=f"2-D map of the code (size {k}: {how})")
        return recon, code_map, model

    def picked_figure(index: int | None, model=None):
        if index is None:
            return plots.image_grid(torch.zeros(2, *shown.shape[1:]), ["", ""], ncols=2,
                                    title="click a point in the map")
        x = test.x[index:index + 1]
        with torch.no_grad():
            model.eval()
            out = model(x)
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
