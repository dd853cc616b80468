"""Lesson 07's figures: one attention head as a heatmap, and prompt wordings compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ..attention import AttentionMaps
from .common import PALETTE


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
