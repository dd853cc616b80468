"""Lesson 03's control: train an autoencoder and look at what it learned."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.foundations.device import seeded
from transferkit.methods import autoencoder as ae
from transferkit.training.callbacks import Callback, FitState


class _ProgressBar(Callback):
    """Moves an `ipywidgets.IntProgress` one step per epoch of `fit`."""

    def __init__(self, bar: W.IntProgress):
        self.bar = bar

    def on_train_begin(self, state: FitState) -> None:
        self.bar.max, self.bar.value = state.epochs, 0

    def on_epoch_end(self, state: FitState) -> None:
        self.bar.value = state.epoch


def autoencoder_explorer(  # noqa: C901, PLR0915  (its controls' callbacks nest inside)
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

    ``train`` / ``test``: `transferkit.foundations.data.Data` (default: the digits split by
    ``train_val_test_split(seed=0)``); the model learns from ``train.x`` only (no
    labels) and is shown on ``test``. ``dims(k)`` gives the encoder widths for
    code size k (default ``[D, 128, 64, k]``). A model is trained the first time
    its settings are chosen (a progress bar shows it) and kept in a cache keyed
    by ``(code size, denoising)``; ``models`` pre-fills that cache with models
    you trained already; their train/eval modes are left as they were. Click (or
    hover) a point of the 2-D map of the codes to see that image and its
    reconstruction. For code size 1 the map draws the code against the class.

    A new model's initial weights are drawn from ``seed`` inside
    `transferkit.foundations.device.seeded`, so the notebook's own random state is not changed.
    """
    import time

    import torch

    if (train is None) != (test is None):
        raise ValueError("pass both train and test (or neither, for the digits).")
    if train is None:
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
