"""Lesson 01's figures: objectives as contours, descent paths, loss curves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
import torch

from transferkit.course.plots.common import PALETTE


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
        colour = PALETTE[i % len(PALETTE)]
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
                                 line={"color": PALETTE[i % len(PALETTE)]}))
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
                             line={"color": PALETTE[3], "width": 1, "dash": "dot"},
                             marker={"size": 8, "color": PALETTE[3]}))
    fig.update_xaxes(title_text="x")
    fig.update_yaxes(title_text="f(x)")
    fig.update_layout(title=title, height=330, showlegend=False,
                      margin={"l": 50, "r": 20, "t": 50 if title else 20, "b": 40})
    return fig
