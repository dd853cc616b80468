"""Building blocks shared by the course's figures: colours, image grids, training curves.

Every function here is pure: data in, a plotly `Figure` (or a plain value) out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from transferkit.methods.finetune import FineTuneResult
from transferkit.training.callbacks import History

TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#ff7f0e"  # training and validation curves
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def as_image_array(images: torch.Tensor | np.ndarray) -> np.ndarray:
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
    arr = as_image_array(images)
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


def history_figure(history: History | FineTuneResult | Sequence[Mapping[str, float]],
                   title: str | None = None) -> go.Figure:
    """Loss per epoch (train and validation), and accuracy beside it when measured.

    ``history``: what `transferkit.training.loop.fit` returned (a `History`), what
    `transferkit.methods.finetune.fine_tune` returned (a `FineTuneResult`: every stage, one
    after the other, with a dotted line where a stage ends), or their rows.
    """
    if isinstance(history, FineTuneResult):
        rows = [{k: v for k, v in row.items() if k != "stage"} for row in history.to_rows()]
        fig = history_figure(rows, title=title or f"fine-tuning: {history.strategy}")
        for end in history.stage_ends():
            fig.add_vline(x=end + 0.5, line_dash="dot", line_color="#888")
        return fig
    rows = history.rows if isinstance(history, History) else list(history)
    columns = set(rows[0]) if rows else {"loss"}
    has_acc = "accuracy" in columns
    fig = make_subplots(rows=1, cols=2 if has_acc else 1,
                        subplot_titles=("loss", "accuracy") if has_acc else ("loss",))
    epochs = [row["epoch"] for row in rows]
    panels = [("loss", 1)] + ([("accuracy", 2)] if has_acc else [])
    for metric, col in panels:
        for prefix, colour, name in (("", TRAIN_COLOUR, "train"),
                                     ("val_", VAL_COLOUR, "validation")):
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


def rgba(hex_colour: str, alpha: float) -> str:
    """``"#1f77b4"`` with opacity ``alpha`` as plotly's ``"rgba(31,119,180,0.2)"``."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def as_labels(values, name: str) -> np.ndarray:
    """Class labels (a tensor, array or list) as a 1-D integer NumPy array, or a clear error."""
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.size == 0:  # np.asarray([]) is float
        arr = arr.astype(int)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D sequence of integer class labels, got dtype "
                         f"{arr.dtype} and shape {arr.shape}.")
    return arr


# --- summaries of label-budget studies ---------------------------------------------


def budgets_in(summary: Sequence[Mapping[str, object]]) -> list:
    """The label budgets of a summary, in the order they first appear."""
    return list(dict.fromkeys(row["budget"] for row in summary))


def pick_budget(summary: Sequence[Mapping[str, object]], budget, what: str):
    """The budget to draw: ``budget`` itself (``"all"`` stands for None, every label), or,
    when ``budget`` is None, the summary's only budget."""
    budgets = budgets_in(summary)
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


def half_width(row: Mapping[str, object]) -> float:
    """A summary row's 95 % interval half-width (0 where one seed gives none)."""
    value = float(row.get("half_width", math.nan))
    return 0.0 if math.isnan(value) else value


def check_summary(summary, what: str) -> None:
    """Refuse rows that are not `transferkit.methods.label_budget.summarise`'s, saying what to
    pass."""
    if not summary:
        raise ValueError(f"{what} is empty; pass rows of "
                         "transferkit.methods.label_budget.summarise.")
    missing = {"method", "budget", "mean", "std", "n"} - set(summary[0])
    if missing:
        raise ValueError(f"{what} rows lack {sorted(missing)}; pass the rows of "
                         "transferkit.methods.label_budget.summarise(rows, metric), not the "
                         "study's rows.")
