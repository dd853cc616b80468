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


# --- lesson 01: gradient descent ---------------------------------------------------------

_RUN_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _runs(trajectories) -> dict:
    """A single `gd.Trajectory`, a list of them, or a name → trajectory mapping → a mapping."""
    if trajectories is None:
        return {}
    if isinstance(trajectories, Mapping):
        return dict(trajectories)
    if hasattr(trajectories, "points"):
        return {"run": trajectories}
    return {f"run {i + 1}": t for i, t in enumerate(trajectories)}


def _finite_rows(points: torch.Tensor) -> np.ndarray:
    """The rows of ``points`` that are finite (a diverged run may end in inf)."""
    arr = points.detach().cpu().numpy()
    return arr[np.isfinite(arr).all(axis=1)]


def contour_figure(objective, trajectories=None, *, bounds=None, resolution: int = 90,
                   title: str | None = None) -> go.Figure:
    """Contour lines of a 2-D `gd.Objective`, its minima (×) and optimiser paths on top.

    Colours follow log10(f − f*) so that the bottom of a steep valley still shows.
    ``trajectories``: one `gd.Trajectory`, a list, or a dict name → trajectory.
    """
    if objective.dim != 2:
        raise ValueError(f"a contour plot needs a 2-D objective; {objective.name} is "
                         f"{objective.dim}-D (use descent_1d_figure).")
    (x0, x1), (y0, y1) = bounds or objective.bounds
    xs = torch.linspace(x0, x1, resolution, dtype=torch.float64)
    ys = torch.linspace(y0, y1, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    with torch.no_grad():
        gap = (objective.fn(grid) - objective.min_value).clamp_min(0)
    z = torch.log10(gap + 1e-3).float().numpy()  # float32: half the bytes in a notebook
    fig = go.Figure(go.Contour(
        x=xs.float().numpy(), y=ys.float().numpy(), z=z, colorscale="Viridis", ncontours=25,
        contours={"coloring": "fill", "showlines": False}, showscale=False, opacity=0.85,
        name="f", hovertemplate="x=%{x:.3f}<br>y=%{y:.3f}<br>log10(f−f*)=%{z:.2f}"
                                "<extra>click to start here</extra>",
    ))
    minima = np.array(objective.minima)
    fig.add_trace(go.Scatter(x=minima[:, 0], y=minima[:, 1], mode="markers", name="minimum",
                             marker={"symbol": "x", "size": 11, "color": "white",
                                     "line": {"width": 1, "color": "black"}}))
    for i, (name, run) in enumerate(_runs(trajectories).items()):
        pts = _finite_rows(run.points)
        colour = _RUN_COLOURS[i % len(_RUN_COLOURS)]
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="lines+markers", name=name,
                                 line={"color": colour, "width": 2},
                                 marker={"size": 4, "color": colour},
                                 hovertemplate="step %{pointNumber}: (%{x:.3f}, %{y:.3f})"))
    fig.update_xaxes(range=[x0, x1], title_text="x", constrain="domain")
    fig.update_yaxes(range=[y0, y1], title_text="y", scaleanchor="x", scaleratio=1)
    fig.update_layout(title=title, height=430, width=470, showlegend=True,
                      legend={"orientation": "h", "y": -0.18},
                      margin={"l": 50, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig


def loss_curve_figure(trajectories, f_min: float = 0.0, *, title: str | None = None,
                      log: bool = True) -> go.Figure:
    """f − f* against the step, one line per run (log scale by default: a straight line
    downwards is linear convergence, its slope is log10 of the rate)."""
    fig = go.Figure()
    for i, (name, run) in enumerate(_runs(trajectories).items()):
        gap = (run.losses - f_min).numpy()
        keep = np.isfinite(gap)
        steps = np.arange(len(gap))[keep]
        values = np.maximum(gap[keep], 1e-300) if log else gap[keep]
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=name,
                                 line={"color": _RUN_COLOURS[i % len(_RUN_COLOURS)]}))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="f(x) − f*", type="log" if log else "linear",
                     exponentformat="power")
    fig.update_layout(title=title, height=330, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def descent_1d_figure(objective, trajectory, *, title: str | None = None) -> go.Figure:
    """A 1-D function with each step of ``trajectory`` drawn on it (numbered points)."""
    if objective.dim != 1:
        raise ValueError(f"descent_1d_figure needs a 1-D objective; {objective.name} is "
                         f"{objective.dim}-D (use contour_figure).")
    pts = _finite_rows(trajectory.points)[:, 0]
    lo, hi = objective.bounds[0]
    lo, hi = min(lo, pts.min()), max(hi, pts.max())
    xs = torch.linspace(lo, hi, 300, dtype=torch.float64)
    with torch.no_grad():
        curve = objective.fn(xs[:, None]).numpy()
        ys = objective.fn(torch.as_tensor(pts[:, None])).numpy()
    fig = go.Figure(go.Scatter(x=xs.numpy(), y=curve, mode="lines", name="f(x)",
                               line={"color": "#7f7f7f"}))
    fig.add_trace(go.Scatter(x=pts, y=ys, mode="lines+markers+text", name="steps",
                             text=[str(k) for k in range(len(pts))], textposition="top center",
                             line={"color": _RUN_COLOURS[0], "width": 1, "dash": "dot"},
                             marker={"size": 8, "color": _RUN_COLOURS[0]}))
    fig.update_xaxes(title_text="x")
    fig.update_yaxes(title_text="f(x)")
    fig.update_layout(title=title, height=330, showlegend=False,
                      margin={"l": 50, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig
