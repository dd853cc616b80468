"""Lesson 06's figures: learning-rate schedules, cost against accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from transferkit.course.plots.common import PALETTE, half_width


def schedule_figure(schedules: Mapping[str, object], total_steps: int, *, lr: float = 1.0,
                    highlight: str | None = None, title: str | None = None) -> go.Figure:
    """The learning rate at every optimizer step, one line per schedule.

    ``schedules``: name → `transferkit.foundations.schedules.Schedule`; the rate plotted is
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
            line={"color": PALETTE[i % len(PALETTE)], "width": 1.5 if faint else 3},
            hovertemplate=f"{name}<br>step %{{x}}: lr %{{y:.3g}}<extra></extra>"))
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="learning rate" if lr != 1.0 else "× the optimizer's lr")
    fig.update_layout(title=title or f"learning-rate schedules over {total_steps} steps",
                      height=360, legend={"orientation": "h", "y": -0.25},
                      margin={"l": 60, "r": 20, "t": 60, "b": 60})
    return fig


def cost_figure(board: Sequence[Mapping[str, object]], *, cost: str = "seconds_per_epoch",
                title: str | None = None) -> go.Figure:
    """Validation accuracy (mean ± its 95 % interval over seeds) against a cost column of a
    `transferkit.methods.selection.leaderboard`, one labelled point per candidate: the
    best strategies sit top left."""
    if not board:
        raise ValueError("the leaderboard is empty; pass selection.leaderboard(rows).")
    if any(cost not in entry for entry in board):
        raise KeyError(f"leaderboard rows lack {cost!r}; they have {list(board[0])}.")
    labels = {"seconds_per_epoch": "seconds per epoch", "seconds": "seconds per run",
              "trainable_params": "trainable parameters"}
    fig = go.Figure(go.Scatter(
        x=[entry[cost] for entry in board], y=[entry["mean"] for entry in board],
        error_y={"type": "data", "array": [half_width(entry) for entry in board]},
        mode="markers+text", text=[str(entry["method"]) for entry in board],
        textposition="top center", marker={"size": 11, "color": PALETTE[0]},
        hovertemplate="%{text}<br>%{x:.3g}<br>val accuracy %{y:.3f}<extra></extra>"))
    fig.update_xaxes(title_text=labels.get(cost, cost), type="log")
    fig.update_yaxes(title_text="validation accuracy (mean ± 95 % interval over seeds)")
    fig.update_layout(title=title or "accuracy against cost", height=400,
                      margin={"l": 70, "r": 20, "t": 60, "b": 50}, showlegend=False)
    return fig
