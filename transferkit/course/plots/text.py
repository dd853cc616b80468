"""Lesson 07's figures: one attention head as a heatmap, prompt wordings compared, a
fine-tuning run's learning curve, and a live study drawn over a stored one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from transferkit.course.plots.common import PALETTE, half_width
from transferkit.course.plots.training import label_budget_figure
from transferkit.text.attention import AttentionMaps


def attention_figure(maps: AttentionMaps, layer: int, head: int, *,
                     title: str | None = None) -> go.Figure:
    """One head's attention map: row i (a query token, top to bottom) shows how token i
    shares its attention over the key tokens (left to right); each row sums to 1.

    ``layer`` and ``head`` count from 0, as in `AttentionMaps`; the title counts from
    1, as the widget's sliders do. The colour scale is fixed at 0–1, so heads can be
    compared by eye.
    """
    weights = maps.head(layer, head).tolist()
    n = len(maps.tokens)
    # Positions, not token strings, on the axes: a text can repeat a token ("a", ".")
    # and plotly would merge equal category names into one row.
    positions = list(range(n))
    hover = [[f"{maps.tokens[i]} → {maps.tokens[j]}" for j in positions] for i in positions]
    fig = go.Figure(go.Heatmap(
        z=weights, x=positions, y=positions, zmin=0.0, zmax=1.0, colorscale="Blues",
        text=hover, colorbar={"title": {"text": "share"}},
        hovertemplate="%{text}: %{z:.2f}<extra></extra>"))
    axis = {"tickmode": "array", "tickvals": positions, "ticktext": maps.tokens}
    fig.update_xaxes(title_text="key: the token looked at", side="bottom", tickangle=-45,
                     **axis)
    fig.update_yaxes(title_text="query: the token looking", autorange="reversed",
                     scaleanchor="x", **axis)
    fig.update_layout(
        title=title or f"layer {layer + 1}, head {head + 1}: how much each token attends to "
                       "each other token",
        height=520, margin={"l": 110, "r": 20, "t": 60, "b": 110})
    return fig


def prompt_accuracy_figure(results: Sequence[Mapping[str, object]], majority: float | None = None,
                           *, title: str | None = None) -> go.Figure:
    """Validation accuracy of each prompt wording tried, as horizontal bars (the first
    tried on top), with a dashed line at ``majority``: the accuracy of always answering
    the most frequent class, the floor a wording has to beat.

    ``results``: ``[{"prompts": "rotten: 'a bad movie' / fresh: 'a good movie'",
    "accuracy": 0.71}, ...]``.
    """
    if not results:
        raise ValueError("no prompt wordings to draw; pass "
                         "[{'prompts': 'a bad movie / a good movie', 'accuracy': 0.7}].")
    missing = [k for k in ("prompts", "accuracy") if any(k not in r for r in results)]
    if missing:
        raise KeyError(f"every result needs {missing}; the first has {list(results[0])}.")
    positions = list(range(len(results)))
    accuracies = [float(r["accuracy"]) for r in results]
    labels = [str(r["prompts"]) for r in results]
    fig = go.Figure(go.Bar(
        x=accuracies, y=positions, orientation="h", text=[f"{a:.3f}" for a in accuracies],
        textposition="outside", marker={"color": PALETTE[0]}, customdata=labels,
        hovertemplate="%{customdata}<br>validation accuracy %{x:.3f}<extra></extra>"))
    if majority is not None:
        fig.add_vline(x=majority, line={"dash": "dash", "color": "#555"},
                      annotation_text=f"majority class {majority:.3f}",
                      annotation_position="top")
    fig.update_xaxes(title_text="validation accuracy", range=[0, 1.05])
    # Positions with the wordings as labels: two tries may read the same.
    fig.update_yaxes(tickmode="array", tickvals=positions, ticktext=labels, autorange="reversed")
    fig.update_layout(title=title or f"{len(results)} prompt wording(s) tried",
                      height=160 + 40 * len(results), showlegend=False,
                      margin={"l": 20, "r": 20, "t": 70, "b": 50})
    fig.update_yaxes(automargin=True)
    return fig


def step_curve_figure(curves: Mapping[str, Sequence[Mapping[str, float]]], *,
                      metric: str = "accuracy", majority: float | None = None,
                      title: str | None = None) -> go.Figure:
    """One line per run: ``metric`` (e.g. validation accuracy) against optimizer steps.

    ``curves``: name → `transferkit.training.callbacks.StepCurve` rows ``[{"step": 0,
    "accuracy": 0.55}, ...]``; ``majority`` draws the floor dashed.
    """
    if not curves:
        raise ValueError("no curves to draw; pass {'full': curve.rows}.")
    fig = go.Figure()
    for i, (name, rows) in enumerate(curves.items()):
        if not rows or any("step" not in r or metric not in r for r in rows):
            raise KeyError(f"curve {name!r} needs rows with 'step' and {metric!r}.")
        fig.add_trace(go.Scatter(
            x=[r["step"] for r in rows], y=[r[metric] for r in rows], mode="lines+markers",
            name=name, line={"color": PALETTE[i % len(PALETTE)]},
            hovertemplate=f"{name}<br>step %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>"))
    if majority is not None:
        fig.add_hline(y=majority, line={"dash": "dash", "color": "#555"},
                      annotation_text=f"majority class {majority:.3f}",
                      annotation_position="bottom right")
    fig.update_xaxes(title_text="optimizer steps")
    fig.update_yaxes(title_text=f"validation {metric}")
    fig.update_layout(title=title, height=380, legend={"orientation": "h", "y": -0.25},
                      margin={"l": 60, "r": 20, "t": 60, "b": 80})
    return fig


def live_and_stored_figure(live: Sequence[Mapping[str, object]],
                           stored: Sequence[Mapping[str, object]], *, stored_label: str,
                           title: str | None = None) -> go.Figure:
    """A stored study (lines with their 95 % interval bands) with this run's live numbers
    over it (diamonds with interval bars, same colour per method), so a reader sees at
    once which numbers were computed just now and which were stored (``stored_label``,
    e.g. `transferkit.text.grid.StoredGrid.label`). Both are `summarise` rows."""
    fig = label_budget_figure(stored, title=title)
    colours = {}
    for trace in fig.data:
        if trace.mode == "lines+markers":
            colours[trace.name] = trace.line.color
            trace.name = f"{trace.name} (stored)"
            trace.line.dash = "dot"
    for i, method in enumerate(dict.fromkeys(r["method"] for r in live)):
        rows = sorted((r for r in live if r["method"] == method), key=lambda r: r["per_class"])
        colour = colours.get(method, PALETTE[(len(colours) + i) % len(PALETTE)])
        fig.add_trace(go.Scatter(
            x=[r["per_class"] for r in rows], y=[r["mean"] for r in rows], mode="markers",
            name=f"{method} (live)", marker={"symbol": "diamond", "size": 11, "color": colour,
                                             "line": {"width": 1, "color": "#222"}},
            error_y={"type": "data", "array": [half_width(r) for r in rows],
                     "color": colour},
            hovertemplate=(f"{method}, this run<br>%{{x}} labels per class<br>"
                           "mean %{y:.3f}<extra></extra>")))
    fig.add_annotation(text=f"dotted lines: {stored_label}; diamonds: this run",
                       xref="paper", yref="paper", x=0, y=1.08, xanchor="left",
                       showarrow=False, font={"size": 11, "color": "#555"})
    fig.update_layout(height=460)
    return fig
