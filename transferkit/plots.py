"""Figures for the course, as pure functions: data in, plotly `Figure` out.

Nothing here touches widgets or global state, so every figure can be built and
checked in a test without a browser; `transferkit.widgets` wires controls to
these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

_TRAIN, _VAL = "#1f77b4", "#ff7f0e"


def _as_image_array(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, H, W), (N, 1, H, W), (N, 3, H, W) or flat square (N, H*W) → (N, H, W[, 3])."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1]:
            raise ValueError(f"flat images of {arr.shape[1]} pixels are not square; "
                             "reshape them to (N, H, W) first.")
        arr = arr.reshape(-1, side, side)
    elif arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    elif arr.ndim != 3:
        raise ValueError(f"cannot draw images of shape {arr.shape}; expected (N, H, W), "
                         "(N, 1, H, W), (N, 3, H, W) or (N, H*W).")
    return arr


def image_grid(
    images: torch.Tensor | np.ndarray,
    labels: Sequence | None = None,
    *,
    ncols: int = 10,
    title: str | None = None,
    cell_px: int = 56,
) -> go.Figure:
    """A grid of images (grey or colour, values in [0, 1]) with optional captions."""
    arr = _as_image_array(images)
    n = len(arr)
    if n == 0:
        raise ValueError("image_grid needs at least one image.")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels.")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    h, w = arr.shape[1:3]
    pad = 1
    top = max(1, round(0.3 * h)) if labels is not None else 0  # room for a caption
    step_y, step_x = top + h + pad, w + pad
    canvas_shape = (nrows * step_y - pad, ncols * step_x - pad) + arr.shape[3:]
    canvas = np.full(canvas_shape, np.nan if arr.ndim == 3 else 1.0, dtype=float)
    for i, img in enumerate(arr):
        r, c = divmod(i, ncols)
        y0, x0 = r * step_y + top, c * step_x
        canvas[y0:y0 + h, x0:x0 + w] = img
    if arr.ndim == 3:
        # Gaps between images are None (drawn as background): NaN would not survive the
        # JSON that carries a FigureWidget to the browser.
        z = [[None if np.isnan(v) else float(v) for v in row] for row in canvas]
        trace = go.Heatmap(z=z, colorscale="gray_r", zmin=0, zmax=1, showscale=False,
                           hoverinfo="skip")
    else:
        trace = go.Image(z=np.clip(canvas, 0, 1) * 255, hoverinfo="skip")
    fig = go.Figure(trace)
    if labels is not None:
        for i, label in enumerate(labels):
            r, c = divmod(i, ncols)
            fig.add_annotation(x=c * step_x + (w - 1) / 2, y=r * step_y + (top - 1) / 2,
                               text=str(label), showarrow=False, font={"size": 11})
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(
        title=title, width=max(260, ncols * cell_px + 40),
        height=round(nrows * cell_px * step_y / step_x) + (70 if title else 30),
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        plot_bgcolor="white",
    )
    return fig


def history_figure(rows: Sequence[Mapping[str, float]], title: str | None = None) -> go.Figure:
    """Loss per epoch (train and validation), and accuracy beside it when measured."""
    columns = set(rows[0]) if rows else {"loss"}
    has_acc = "accuracy" in columns
    fig = make_subplots(rows=1, cols=2 if has_acc else 1,
                        subplot_titles=("loss", "accuracy") if has_acc else ("loss",))
    epochs = [row["epoch"] for row in rows]
    panels = [("loss", 1)] + ([("accuracy", 2)] if has_acc else [])
    for metric, col in panels:
        for prefix, colour, name in (("", _TRAIN, "train"), ("val_", _VAL, "validation")):
            key = prefix + metric
            if key in columns or (not rows and prefix == ""):
                fig.add_trace(
                    go.Scatter(x=epochs, y=[row[key] for row in rows], mode="lines+markers",
                               name=name, legendgroup=name, showlegend=col == 1,
                               line={"color": colour}),
                    row=1, col=col,
                )
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(title=title, height=330, margin={"l": 50, "r": 20, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def class_counts_figure(y: torch.Tensor | Sequence[int], title: str | None = None) -> go.Figure:
    """A bar chart of how many examples each class has."""
    y = torch.as_tensor(y)
    classes, counts = torch.unique(y, return_counts=True)
    fig = go.Figure(go.Bar(x=[str(int(c)) for c in classes], y=counts.tolist(),
                           text=counts.tolist(), textposition="outside"))
    fig.update_layout(title=title, xaxis_title="class", yaxis_title="examples", height=300,
                      margin={"l": 50, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig


# --- lesson 03: autoencoders -----------------------------------------------------------


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
    arrays = [np.round(_as_image_array(rows[name]).astype(float), 3) for name in names]
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
) -> go.Figure:
    """Test reconstruction error against code size, one line per method (log-2 x axis)."""
    code_sizes = [int(k) for k in code_sizes]
    fig = go.Figure()
    for name, values in errors.items():
        if len(values) != len(code_sizes):
            raise ValueError(f"{name!r} has {len(values)} errors for {len(code_sizes)} "
                             "code sizes.")
        fig.add_trace(go.Scatter(x=code_sizes, y=list(values), mode="lines+markers", name=name))
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
    n = len(_as_image_array(images))
    captions = [f"t={i / max(1, n - 1):.2f}" for i in range(n)]
    return image_grid(np.round(_as_image_array(images).astype(float), 3), captions, ncols=n,
                      title=title)
