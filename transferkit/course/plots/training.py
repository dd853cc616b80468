"""Lesson 02's figures: confusion matrix, learning curves, sweeps, label budgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from transferkit.course.plots.common import PALETTE, as_labels, half_width, rgba
from transferkit.foundations.data import budget_label


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
    true, pred = as_labels(y_true, "y_true"), as_labels(y_pred, "y_pred")
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
            mode="lines", name=name, line={"color": PALETTE[i % len(PALETTE)]},
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
            line={"color": PALETTE[i % len(PALETTE)]},
        ))
    fig.update_xaxes(title_text=x.replace("_", " "), type="log" if log_x else None)
    fig.update_yaxes(title_text=y.replace("_", " "))
    fig.update_layout(title=title, height=360, showlegend=group is not None,
                      margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


BANDS = {"interval": "95 % interval of the mean", "std": "spread, ± one standard deviation",
         "range": "spread, lowest to highest seed"}


def label_budget_figure(
    summary: Sequence[Mapping[str, object]],
    *,
    spread: str = "interval",
    title: str | None = None,
) -> go.Figure:
    """Accuracy against labels per class, one line per method, with how sure the mean is.

    ``summary`` is `transferkit.methods.label_budget.summarise`'s rows. The x axis is
    logarithmic; the "all labels" budget sits at its actual number of labels
    per class and is marked "all". ``spread="interval"`` (default) shades the 95 %
    interval of the mean over seeds (it narrows as seeds are added); ``"std"``
    shades the *spread*, mean ± one standard deviation over seeds, and
    ``"range"`` the lowest to the highest seed (neither shrinks with more seeds).
    Per method the figure has two traces: the band (legend hidden) and the mean
    line with markers.
    """
    if spread not in BANDS:
        raise ValueError(f"spread must be one of {sorted(BANDS)}, got {spread!r}.")
    if not summary:
        raise ValueError("label_budget_figure needs summary rows (experiments.summarise).")
    fig = go.Figure()
    methods = list(dict.fromkeys(row["method"] for row in summary))
    for i, method in enumerate(methods):
        colour = PALETTE[i % len(PALETTE)]
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["per_class"])
        xs = [r["per_class"] for r in rows]
        means = [r["mean"] for r in rows]
        if spread in ("std", "interval"):
            width = [half_width(r) if spread == "interval" else r["std"] for r in rows]
            low = [r["mean"] - w for r, w in zip(rows, width, strict=True)]
            high = [r["mean"] + w for r, w in zip(rows, width, strict=True)]
        else:
            low, high = [r["min"] for r in rows], [r["max"] for r in rows]
        fig.add_trace(go.Scatter(
            x=xs + xs[::-1], y=high + low[::-1], mode="lines", fill="toself",
            fillcolor=rgba(colour, 0.18), line={"width": 0}, hoverinfo="skip",
            showlegend=False, legendgroup=method, name=f"{method} spread",
        ))
        labels = [budget_label(r["budget"]) for r in rows]
        fig.add_trace(go.Scatter(
            x=xs, y=means, mode="lines+markers", name=method, legendgroup=method,
            line={"color": colour}, customdata=[[lab, r["n"]] for lab, r in zip(
                labels, rows, strict=True)],
            hovertemplate=(f"{method}<br>%{{customdata[0]}} labels per class<br>"
                           "mean %{y:.3f} over %{customdata[1]} seeds<extra></extra>"),
        ))
    ticks = {}
    for row in summary:
        ticks[row["per_class"]] = budget_label(row["budget"])
    metric = str(summary[0].get("metric", "accuracy")).replace("_", " ")
    fig.update_xaxes(type="log", title_text="labels per class (log scale)",
                     tickvals=list(ticks), ticktext=list(ticks.values()))
    fig.update_yaxes(title_text=metric)
    band = BANDS[spread]
    fig.update_layout(title=title, height=400, margin={"l": 60, "r": 20, "t": 60, "b": 80},
                      legend={"orientation": "h", "y": -0.2},
                      annotations=[{"text": f"mean over seeds; band: {band}",
                                    "xref": "paper", "yref": "paper", "x": 1, "y": 0.02,
                                    "xanchor": "right", "showarrow": False,
                                    "font": {"size": 11, "color": "#555"}}])
    return fig
