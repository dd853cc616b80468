"""Lesson 00's control: browse the digits by class, a page at a time."""

from __future__ import annotations

import ipywidgets as W

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations.data import load_digits


def digits_browser(data=None, per_page: int = 30) -> Panel:
    """Browse a dataset's images by class, a page at a time.

    ``data`` is a `transferkit.foundations.data.Data` of images (default: the digits).
    """
    if data is None:
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
