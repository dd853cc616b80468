"""Lesson 03's figures: reconstructions, code sizes, the 2-D code map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from transferkit.course.plots.common import as_image_array, image_grid


def reconstruction_grid(
    rows: Mapping[str, torch.Tensor | np.ndarray],
    captions: Mapping[str, Sequence[str]] | None = None,
    *,
    title: str | None = None,
    cell_px: int = 56,
) -> go.Figure:
    """Rows of images one above the other, e.g. ``{"input": x, "reconstruction": x_hat}``.

    Every row must hold the same number of images (column i shows example i in
    each row); the row's name is written at its left. ``captions`` optionally
    gives one caption per image for some rows (a label, an error …).
    """
    if not rows:
        raise ValueError("reconstruction_grid needs at least one row of images.")
    names = list(rows)
    # three decimals are more than the eye sees, and keep the stored figure small
    arrays = [np.round(as_image_array(rows[name]).astype(float), 3) for name in names]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"every row needs the same number of images; got "
                         f"{ {name: len(a) for name, a in zip(names, arrays, strict=True)} }.")
    captions = dict(captions or {})
    unknown = set(captions) - set(names)
    if unknown:
        raise ValueError(f"captions for rows {sorted(unknown)} that are not in {names}.")
    for name, caps in captions.items():
        if len(caps) != n:
            raise ValueError(f"row {name!r} has {n} images but {len(caps)} captions.")
    labels = None
    if captions:
        labels = [str(c) for name in names for c in captions.get(name, [""] * n)]
    fig = image_grid(np.concatenate(arrays), labels, ncols=n, title=title, cell_px=cell_px)
    h = arrays[0].shape[1]
    top = max(1, round(0.3 * h)) if labels is not None else 0
    for r, name in enumerate(names):
        fig.add_annotation(x=-0.8, y=r * (top + h + 1) + top + (h - 1) / 2, text=name,
                           showarrow=False, xanchor="right", font={"size": 12})
    fig.update_layout(margin={"l": 110}, width=fig.layout.width + 100)
    return fig


def code_size_figure(
    code_sizes: Sequence[int],
    errors: Mapping[str, Sequence[float]],
    title: str | None = "reconstruction error vs code size",
    *,
    intervals: Mapping[str, Sequence[float]] | None = None,
) -> go.Figure:
    """Test reconstruction error against code size, one line per method (log-2 x axis).

    ``errors``: method → one error per code size (e.g. the mean over seeds);
    ``intervals``: method → the half-width of each mean's 95 % interval, drawn as
    error bars (a method left out, like the deterministic PCA, gets none).
    """
    code_sizes = [int(k) for k in code_sizes]
    fig = go.Figure()
    for name, values in errors.items():
        if len(values) != len(code_sizes):
            raise ValueError(f"{name!r} has {len(values)} errors for {len(code_sizes)} "
                             "code sizes.")
        bars = (intervals or {}).get(name)
        fig.add_trace(go.Scatter(
            x=code_sizes, y=list(values), mode="lines+markers", name=name,
            error_y=None if bars is None else {"type": "data", "array": list(bars)}))
    fig.update_xaxes(type="log", tickvals=code_sizes, ticktext=[str(k) for k in code_sizes],
                     title_text="code size k (numbers per image)")
    fig.update_yaxes(title_text="mean squared error per pixel (test)", rangemode="tozero")
    fig.update_layout(title=title, height=360, margin={"l": 60, "r": 20, "t": 60, "b": 50})
    return fig


def code_map_figure(
    points: torch.Tensor | np.ndarray,
    labels: torch.Tensor | Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = "the 2-D code of every image",
    axis_titles: tuple[str, str] = ("z₁", "z₂"),
) -> go.Figure:
    """A scatter of 2-D codes, one colour (and legend entry) per class.

    Each point's ``customdata`` is its row in ``points``, so a click callback can
    find the example it belongs to.
    """
    pts = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    pts = np.round(pts.astype(float), 4)
    labels = np.asarray(torch.as_tensor(labels).cpu())
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}; project longer "
                         "codes to 2-D first (e.g. with PCA).")
    if len(labels) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(labels)} labels.")
    fig = go.Figure()
    for c in sorted(set(labels.tolist())):
        index = np.flatnonzero(labels == c)
        name = class_names[c] if class_names is not None else str(c)
        fig.add_trace(go.Scatter(
            x=pts[index, 0], y=pts[index, 1], mode="markers", name=name,
            customdata=index, marker={"size": 6, "opacity": 0.8},
            hovertemplate=f"class {name}<br>example %{{customdata}}<extra></extra>",
        ))
    fig.update_layout(title=title, height=420, width=520, xaxis_title=axis_titles[0],
                      yaxis_title=axis_titles[1], legend_title_text="class",
                      margin={"l": 50, "r": 20, "t": 60, "b": 50})
    return fig


def interpolation_figure(
    images: torch.Tensor | np.ndarray,
    title: str | None = "decoding the straight line between two codes",
) -> go.Figure:
    """Decoded images along a path of codes, captioned with the position t from 0 to 1."""
    n = len(as_image_array(images))
    captions = [f"t={i / max(1, n - 1):.2f}" for i in range(n)]
    return image_grid(np.round(as_image_array(images).astype(float), 3), captions, ncols=n,
                      title=title)
