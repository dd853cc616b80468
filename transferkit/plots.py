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
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")


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
        colour = _PALETTE[i % len(_PALETTE)]
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
                                 line={"color": _PALETTE[i % len(_PALETTE)]}))
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
                             line={"color": _PALETTE[3], "width": 1, "dash": "dot"},
                             marker={"size": 8, "color": _PALETTE[3]}))
    fig.update_xaxes(title_text="x")
    fig.update_yaxes(title_text="f(x)")
    fig.update_layout(title=title, height=330, showlegend=False,
                      margin={"l": 50, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig


# --- lesson 02: training a network -------------------------------------------------------



def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _as_labels(values, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.size == 0:  # np.asarray([]) is float
        arr = arr.astype(int)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D sequence of integer class labels, got dtype "
                         f"{arr.dtype} and shape {arr.shape}.")
    return arr


def confusion_matrix_figure(
    y_true: torch.Tensor | Sequence[int],
    y_pred: torch.Tensor | Sequence[int],
    classes: Sequence[str] | None = None,
    *,
    normalize: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Confusion matrix as a heatmap: row = true class, column = predicted class.

    Cell (i, j) counts the examples of class i predicted as j, so the diagonal
    holds the correct predictions. ``normalize=True`` divides each row by its
    class's size (each row then sums to 1: the diagonal is each class's recall).
    The counts (or fractions) are the heatmap's ``z``.
    """
    true, pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} labels but y_pred has {len(pred)}.")
    if len(true) == 0:
        raise ValueError("confusion_matrix_figure needs at least one example.")
    if min(true.min(), pred.min()) < 0:
        raise ValueError("class labels must be 0, 1, 2, …; found a negative label.")
    n = int(max(true.max(), pred.max())) + 1
    if classes is not None:
        if len(classes) < n:
            raise ValueError(f"{len(classes)} class names for labels up to {n - 1}.")
        n = len(classes)
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (true, pred), 1)
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        z = np.divide(counts, totals, out=np.zeros((n, n)), where=totals > 0)
        text = [[f"{v:.2f}" for v in row] for row in z]
    else:
        z = counts
        text = [[str(v) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues",
        showscale=False,
        hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>",
    ))
    fig.update_xaxes(title_text="predicted class", type="category", side="bottom")
    fig.update_yaxes(title_text="true class", type="category", autorange="reversed")
    size = 90 + 34 * n
    fig.update_layout(title=title, width=size + 40, height=size + (40 if title else 0),
                      margin={"l": 60, "r": 20, "t": 50 if title else 20, "b": 50})
    return fig


def curves_figure(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    metric: str = "val_loss",
    *,
    title: str | None = None,
    log_y: bool = False,
) -> go.Figure:
    """One curve per run of ``metric`` against the epoch, to compare training runs.

    ``runs`` maps a name (e.g. ``"SGD, lr 0.1"``) to that run's history rows
    (``History.rows``).
    """
    if not runs:
        raise ValueError("curves_figure needs at least one run.")
    fig = go.Figure()
    for i, (name, rows) in enumerate(runs.items()):
        if rows and metric not in rows[0]:
            raise KeyError(f"run {name!r} has no column {metric!r}; it has {list(rows[0])}.")
        fig.add_trace(go.Scatter(
            x=[row["epoch"] for row in rows], y=[row[metric] for row in rows],
            mode="lines", name=name, line={"color": _PALETTE[i % len(_PALETTE)]},
        ))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=metric.replace("_", " "), type="log" if log_y else None)
    fig.update_layout(title=title, height=360, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


def sweep_figure(
    rows: Sequence[Mapping[str, object]],
    x: str,
    y: str,
    *,
    group: str | None = None,
    log_x: bool = False,
    title: str | None = None,
) -> go.Figure:
    """A measurement ``y`` against a setting ``x`` (e.g. the learning rate), one line per
    value of ``group`` (e.g. the optimizer). ``rows`` are dicts holding those keys."""
    if not rows:
        raise ValueError("sweep_figure needs at least one row.")
    for key in (x, y) + ((group,) if group else ()):
        if key not in rows[0]:
            raise KeyError(f"no column {key!r} in the rows; they have {list(rows[0])}.")
    groups = list(dict.fromkeys(row[group] for row in rows)) if group else [None]
    fig = go.Figure()
    for i, name in enumerate(groups):
        members = sorted((row for row in rows if group is None or row[group] == name),
                         key=lambda row: row[x])
        fig.add_trace(go.Scatter(
            x=[row[x] for row in members], y=[row[y] for row in members],
            mode="lines+markers", name=str(name) if group else y,
            line={"color": _PALETTE[i % len(_PALETTE)]},
        ))
    fig.update_xaxes(title_text=x.replace("_", " "), type="log" if log_x else None)
    fig.update_yaxes(title_text=y.replace("_", " "))
    fig.update_layout(title=title, height=360, showlegend=group is not None,
                      margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


def label_budget_figure(
    summary: Sequence[Mapping[str, object]],
    *,
    spread: str = "std",
    title: str | None = None,
) -> go.Figure:
    """Accuracy against labels per class, one line per method, with its spread over seeds.

    ``summary`` is `transferkit.experiments.summarise`'s rows. The x axis is
    logarithmic; the "all labels" budget sits at its actual number of labels
    per class and is marked "all". ``spread="std"`` shades mean ± one standard
    deviation, ``"range"`` the lowest to the highest seed. Per method the figure
    has two traces: the band (legend hidden) and the mean line with markers.
    """
    if spread not in ("std", "range"):
        raise ValueError(f"spread must be 'std' or 'range', got {spread!r}.")
    if not summary:
        raise ValueError("label_budget_figure needs summary rows (experiments.summarise).")
    fig = go.Figure()
    methods = list(dict.fromkeys(row["method"] for row in summary))
    for i, method in enumerate(methods):
        colour = _PALETTE[i % len(_PALETTE)]
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["per_class"])
        xs = [r["per_class"] for r in rows]
        means = [r["mean"] for r in rows]
        if spread == "std":
            low = [r["mean"] - r["std"] for r in rows]
            high = [r["mean"] + r["std"] for r in rows]
        else:
            low, high = [r["min"] for r in rows], [r["max"] for r in rows]
        fig.add_trace(go.Scatter(
            x=xs + xs[::-1], y=high + low[::-1], mode="lines", fill="toself",
            fillcolor=_rgba(colour, 0.18), line={"width": 0}, hoverinfo="skip",
            showlegend=False, legendgroup=method, name=f"{method} spread",
        ))
        labels = ["all" if r["budget"] is None else str(r["budget"]) for r in rows]
        fig.add_trace(go.Scatter(
            x=xs, y=means, mode="lines+markers", name=method, legendgroup=method,
            line={"color": colour}, customdata=[[lab, r["n"]] for lab, r in zip(
                labels, rows, strict=True)],
            hovertemplate=(f"{method}<br>%{{customdata[0]}} labels per class<br>"
                           "mean %{y:.3f} over %{customdata[1]} seeds<extra></extra>"),
        ))
    ticks = {}
    for row in summary:
        ticks[row["per_class"]] = ("all" if row["budget"] is None
                                   else str(row["budget"]))
    metric = str(summary[0].get("metric", "accuracy")).replace("_", " ")
    fig.update_xaxes(type="log", title_text="labels per class (log scale)",
                     tickvals=list(ticks), ticktext=list(ticks.values()))
    fig.update_yaxes(title_text=metric)
    band = "± one standard deviation" if spread == "std" else "lowest to highest seed"
    fig.update_layout(title=title, height=400, margin={"l": 60, "r": 20, "t": 60, "b": 80},
                      legend={"orientation": "h", "y": -0.2},
                      annotations=[{"text": f"mean over seeds; band: {band}",
                                    "xref": "paper", "yref": "paper", "x": 1, "y": 0.02,
                                    "xanchor": "right", "showarrow": False,
                                    "font": {"size": 11, "color": "#555"}}])
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


# --- lesson 04: fine-tuning ------------------------------------------------------------


def _budgets_in(summary: Sequence[Mapping[str, object]]) -> list:
    return list(dict.fromkeys(row["budget"] for row in summary))


def _budget_name(budget) -> str:
    from .experiments import budget_words

    return budget_words(budget)


def _pick_budget(summary: Sequence[Mapping[str, object]], budget, what: str):
    """The budget to draw: ``budget`` itself (``"all"`` stands for None, every label), or,
    when ``budget`` is None, the summary's only budget."""
    budgets = _budgets_in(summary)
    if budget is None:
        if len(budgets) > 1:
            listed = ", ".join("'all'" if b is None else str(b) for b in budgets)
            raise ValueError(f"{what} has several label budgets ({listed}); choose one, e.g. "
                             f"budget={'all' if budgets[-1] is None else budgets[-1]!r}.")
        return budgets[0]
    wanted = None if budget == "all" else budget
    if wanted not in budgets:
        listed = ", ".join("'all'" if b is None else str(b) for b in budgets)
        raise ValueError(f"{what} has no rows for budget {budget!r}; it has {listed}.")
    return wanted


def _check_summary(summary, what: str) -> None:
    if not summary:
        raise ValueError(f"{what} is empty; pass rows of transferkit.experiments.summarise.")
    missing = {"method", "budget", "mean", "std", "n"} - set(summary[0])
    if missing:
        raise ValueError(f"{what} rows lack {sorted(missing)}; pass the rows of "
                         "transferkit.experiments.summarise(rows, metric), not the study's rows.")


def history_columns(figure: go.Figure) -> list[str]:
    """The `History` column each trace of a `history_figure` draws, in trace order
    (``"loss"``, ``"val_loss"``, ``"accuracy"``, ``"val_accuracy"``): what a live plot
    updates when an epoch ends, without building the figure again."""
    prefix = {"train": "", "validation": "val_"}
    metric = {"x": "loss", "x2": "accuracy"}
    columns = []
    for trace in figure.data:
        if trace.name not in prefix or (trace.xaxis or "x") not in metric:
            raise ValueError(f"trace {trace.name!r} on axis {trace.xaxis!r} is not one of "
                             "history_figure's curves.")
        columns.append(prefix[trace.name] + metric[trace.xaxis or "x"])
    return columns


def shift_figure(
    in_summary: Sequence[Mapping[str, object]],
    shifted_summary: Sequence[Mapping[str, object]],
    *,
    budget=None,
    title: str | None = None,
) -> go.Figure:
    """In-distribution against shifted-test accuracy, one pair of bars per method.

    ``in_summary`` is ``summarise(rows)`` (test accuracy) and ``shifted_summary``
    ``summarise(rows, "shifted_accuracy")`` of the same study (one that had
    ``also_test={"shifted": ...}``). Bars show the mean over seeds, error bars one
    standard deviation; the text on a shifted bar is its change from the
    in-distribution one, and hovering gives the number of seeds.

    ``budget``: the label budget to draw (labels per class, or ``"all"``). It can be
    left out when the summaries hold a single budget; with several it is an error
    that lists them, since averaging over budgets would mix very different numbers.
    """
    _check_summary(in_summary, "in_summary")
    _check_summary(shifted_summary, "shifted_summary")
    metrics = (in_summary[0].get("metric"), shifted_summary[0].get("metric"))
    if metrics[0] is not None and metrics[0] == metrics[1]:
        raise ValueError(f"both summaries are of {metrics[0]!r}; pass summarise(rows) and "
                         "summarise(rows, 'shifted_accuracy').")
    chosen = _pick_budget(in_summary, budget, "in_summary")
    inside = {r["method"]: r for r in in_summary if r["budget"] == chosen}
    shifted = {r["method"]: r for r in shifted_summary if r["budget"] == chosen}
    missing = [m for m in inside if m not in shifted]
    if missing:
        raise ValueError(f"shifted_summary has no rows for {missing} at "
                         f"{_budget_name(chosen)}; summarise the same study's rows with "
                         "metric='shifted_accuracy' (the study needs also_test={'shifted': ...}).")
    methods = list(inside)
    fig = go.Figure()
    for i, (name, rows) in enumerate((("in-distribution test", inside),
                                      ("shifted test", shifted))):
        drops = [rows[m]["mean"] - inside[m]["mean"] for m in methods]
        fig.add_trace(go.Bar(
            x=methods, y=[rows[m]["mean"] for m in methods], name=name,
            marker_color=_PALETTE[0 if i == 0 else 3],
            error_y={"type": "data", "array": [rows[m]["std"] for m in methods]},
            text=None if i == 0 else [f"{d:+.2f}" for d in drops],
            textposition="outside" if i else None,
            customdata=[[rows[m]["n"], rows[m]["std"]] for m in methods],
            hovertemplate=(f"%{{x}}, {name}<br>mean %{{y:.3f}} ± %{{customdata[1]:.3f}} "
                           "over %{customdata[0]} seeds<extra></extra>"),
        ))
    fig.update_xaxes(title_text="method")
    fig.update_yaxes(title_text="accuracy (mean over seeds)", range=[0, 1.08])
    fig.update_layout(
        title=title or f"accuracy in distribution and under shift, {_budget_name(chosen)}",
        barmode="group", height=380, legend={"orientation": "h", "y": -0.25},
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
    )
    return fig


def feature_drift_figure(drift_summary: Sequence[Mapping[str, object]], *,
                         title: str | None = None) -> go.Figure:
    """How far fine-tuning moved the encoder's features, one bar per method.

    ``drift_summary`` is ``summarise(rows, "feature_drift")``; the height is the
    mean over seeds of ‖F_after − F_before‖ / ‖F_before‖ on the validation inputs
    (`transferkit.finetune.feature_drift`), the error bar one standard deviation.
    With several label budgets the bars are grouped: one colour per budget.
    """
    _check_summary(drift_summary, "drift_summary")
    metric = drift_summary[0].get("metric")
    if metric is not None and metric != "feature_drift":
        raise ValueError(f"drift_summary is of {metric!r}; pass summarise(rows, "
                         "'feature_drift').")
    methods = list(dict.fromkeys(row["method"] for row in drift_summary))
    fig = go.Figure()
    for i, budget in enumerate(_budgets_in(drift_summary)):
        rows = {r["method"]: r for r in drift_summary if r["budget"] == budget}
        shown = [m for m in methods if m in rows]
        fig.add_trace(go.Bar(
            x=shown, y=[rows[m]["mean"] for m in shown], name=_budget_name(budget),
            marker_color=_PALETTE[i % len(_PALETTE)],
            error_y={"type": "data", "array": [rows[m]["std"] for m in shown]},
            customdata=[[rows[m]["n"], rows[m]["std"]] for m in shown],
            hovertemplate=(f"%{{x}}, {_budget_name(budget)}<br>drift %{{y:.3f}} ± "
                           "%{customdata[1]:.3f} over %{customdata[0]} seeds<extra></extra>"),
        ))
    fig.update_xaxes(title_text="method", categoryorder="array", categoryarray=methods)
    fig.update_yaxes(title_text="‖F_after − F_before‖ / ‖F_before‖", rangemode="tozero")
    budgets = _budgets_in(drift_summary)
    default = "how far fine-tuning moved the encoder's features" + (
        f", {_budget_name(budgets[0])}" if len(budgets) == 1 else "")
    fig.update_layout(title=title or default,
                      barmode="group", height=380, showlegend=len(fig.data) > 1,
                      legend={"orientation": "h", "y": -0.25},
                      margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return fig


# --- lesson 05: CNN transfer ------------------------------------------------------------


def transferability_figure(
    summary: Sequence[Mapping[str, object]],
    *,
    budget=None,
    layer_names: Sequence[str] | None = None,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    highlight: Mapping[str, object] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Target accuracy against the number of layers copied from the source network.

    ``summary`` is `transferkit.transferability.summarise_transfer`'s rows: one line
    per mode (frozen, fine-tuned) over ``n`` = 1, 2, …, each point the mean over
    seeds with one standard deviation as its error bar, and the target-only
    network (n = 0) as a dashed line with a ±1 std band, as in Yosinski et al.
    (2014), Figure 2. ``layer_names`` label the x axis (``layer_names[n-1]`` is
    the n-th copied group). ``baselines`` adds more horizontal lines, name →
    (mean, std), e.g. logistic regression. ``highlight`` marks one run, e.g. the
    widget's last: ``{"mode": ..., "n": ..., "accuracy": ...}``. ``budget`` picks
    the label budget when the summary holds several (``"all"`` = every label).
    """
    if not summary:
        raise ValueError("summary is empty; pass transferability.summarise_transfer(rows).")
    missing = {"mode", "n", "budget", "mean", "std"} - set(summary[0])
    if missing:
        raise ValueError(f"summary rows lack {sorted(missing)}; pass "
                         "transferability.summarise_transfer(rows), not the study's rows.")
    chosen = _pick_budget(summary, budget, "summary")
    rows = [r for r in summary if r["budget"] == chosen]
    depths = sorted({int(r["n"]) for r in rows if r["mode"] != "target only"})
    fig = go.Figure()
    lines = dict(baselines or {})
    base = [r for r in rows if r["mode"] == "target only"]
    if base:
        lines = {"target only (n = 0)": (base[0]["mean"], base[0]["std"]), **lines}
    x_range = [0.5, max(depths, default=1) + 0.5]
    for i, (name, (mean, std)) in enumerate(lines.items()):
        colour = ("#444444", "#8c564b", "#7f7f7f")[i % 3]
        fig.add_trace(go.Scatter(
            x=[*x_range, *x_range[::-1]], y=[mean + std] * 2 + [mean - std] * 2,
            fill="toself", fillcolor=_rgba(colour, 0.12), line={"width": 0},
            hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(
            x=x_range, y=[mean, mean], mode="lines", name=name,
            line={"color": colour, "dash": "dash"},
            hovertemplate=f"{name}: %{{y:.3f}} ± {std:.3f}<extra></extra>"))
    for mode, colour in (("frozen", _PALETTE[3]), ("fine-tuned", _PALETTE[0])):
        points = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"])
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[r["n"] for r in points], y=[r["mean"] for r in points], name=mode,
            mode="lines+markers", line={"color": colour}, marker={"size": 9},
            error_y={"type": "data", "array": [r["std"] for r in points]},
            customdata=[[r.get("n_seeds", 1), r["std"]] for r in points],
            hovertemplate=(f"{mode}, first %{{x}} groups copied<br>accuracy %{{y:.3f}} ± "
                           "%{customdata[1]:.3f} over %{customdata[0]} seeds<extra></extra>")))
    if highlight is not None:
        fig.add_trace(go.Scatter(
            x=[highlight["n"]], y=[highlight["accuracy"]], mode="markers",
            name=f"your run ({highlight['mode']})",
            marker={"symbol": "star", "size": 18, "color": "#ffbf00",
                    "line": {"color": "#000000", "width": 1}},
            hovertemplate="your run: %{y:.3f}<extra></extra>"))
    ticks = [f"{n}: {layer_names[n - 1]}" if layer_names and n <= len(layer_names) else str(n)
             for n in depths]
    fig.update_xaxes(title_text="layer groups copied from the source network (n)",
                     tickvals=depths, ticktext=ticks, range=x_range)
    fig.update_yaxes(title_text="target test accuracy (mean over seeds)")
    fig.update_layout(
        title=title or f"how transferable are the layers? {_budget_name(chosen)}",
        height=420, legend={"orientation": "h", "y": -0.25},
        margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return fig


# --- lesson 06: choosing a strategy -------------------------------------------------------


def schedule_figure(schedules: Mapping[str, object], total_steps: int, *, lr: float = 1.0,
                    highlight: str | None = None, title: str | None = None) -> go.Figure:
    """The learning rate at every optimizer step, one line per schedule.

    ``schedules``: name → `transferkit.schedules.Schedule`; the rate plotted is
    ``lr × schedule(step, total_steps)``. ``highlight`` draws that schedule
    thick and the others faint (the widget's choice).
    """
    if not schedules:
        raise ValueError("no schedules to draw; pass e.g. {'cosine': schedules.cosine()}.")
    if highlight is not None and highlight not in schedules:
        raise KeyError(f"no schedule {highlight!r}; the schedules are {list(schedules)}.")
    steps = list(range(total_steps))
    fig = go.Figure()
    for i, (name, schedule) in enumerate(schedules.items()):
        faint = highlight is not None and name != highlight
        fig.add_trace(go.Scatter(
            x=steps, y=[lr * m for m in schedule.values(total_steps)], mode="lines", name=name,
            opacity=0.3 if faint else 1.0,
            line={"color": _PALETTE[i % len(_PALETTE)], "width": 1.5 if faint else 3},
            hovertemplate=f"{name}<br>step %{{x}}: lr %{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="learning rate" if lr != 1.0 else "× the optimizer's lr")
    fig.update_layout(title=title or f"learning-rate schedules over {total_steps} steps",
                      height=360, legend={"orientation": "h", "y": -0.25},
                      margin={"l": 60, "r": 20, "t": 60, "b": 60})
    return fig


def cost_figure(board: Sequence[Mapping[str, object]], *, cost: str = "seconds_per_epoch",
                title: str | None = None) -> go.Figure:
    """Validation accuracy (mean ± std over seeds) against a cost column of a
    `transferkit.selection.leaderboard`, one labelled point per candidate: the
    best strategies sit top left."""
    if not board:
        raise ValueError("the leaderboard is empty; pass selection.leaderboard(rows).")
    if any(cost not in entry for entry in board):
        raise KeyError(f"leaderboard rows lack {cost!r}; they have {list(board[0])}.")
    labels = {"seconds_per_epoch": "seconds per epoch", "seconds": "seconds per run",
              "trainable_params": "trainable parameters"}
    fig = go.Figure(go.Scatter(
        x=[entry[cost] for entry in board], y=[entry["mean"] for entry in board],
        error_y={"type": "data", "array": [entry["std"] for entry in board]},
        mode="markers+text", text=[str(entry["method"]) for entry in board],
        textposition="top center", marker={"size": 11, "color": _PALETTE[0]},
        hovertemplate="%{text}<br>%{x:.3g}<br>val accuracy %{y:.3f}<extra></extra>"))
    fig.update_xaxes(title_text=labels.get(cost, cost), type="log")
    fig.update_yaxes(title_text="validation accuracy (mean ± std over seeds)")
    fig.update_layout(title=title or "accuracy against cost", height=400,
                      margin={"l": 70, "r": 20, "t": 60, "b": 50}, showlegend=False)
    return fig
