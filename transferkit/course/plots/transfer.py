"""Lesson 05's figures: a network's guesses on photos (`photo_grid`), and how
transferable each layer is (Yosinski et al. 2014, `transferability_figure`).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from transferkit.course.plots.common import PALETTE, as_image_array, half_width, pick_budget, rgba
from transferkit.foundations.data import budget_words


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

    ``summary`` is `transferkit.vision.transfer_studies.summarise_transfer`'s rows: one line
    per mode (frozen, fine-tuned) over ``n`` = 1, 2, …, each point the mean over
    seeds with the 95 % interval of that mean as its error bar, and the
    target-only network (n = 0) as a dashed line with its interval as a band, as
    in Yosinski et al. (2014), Figure 2. ``layer_names`` label the x axis
    (``layer_names[n-1]`` is the n-th copied group). ``baselines`` adds more
    horizontal lines, name → (mean, half-width of its interval), e.g. logistic
    regression. ``highlight`` marks one run, e.g. the
    widget's last: ``{"mode": ..., "n": ..., "accuracy": ...}``. ``budget`` picks
    the label budget when the summary holds several (``"all"`` = every label).
    """
    if not summary:
        raise ValueError("summary is empty; pass transferability.summarise_transfer(rows).")
    missing = {"mode", "n", "budget", "mean", "std"} - set(summary[0])
    if missing:
        raise ValueError(f"summary rows lack {sorted(missing)}; pass "
                         "transferability.summarise_transfer(rows), not the study's rows.")
    chosen = pick_budget(summary, budget, "summary")
    rows = [r for r in summary if r["budget"] == chosen]
    depths = sorted({int(r["n"]) for r in rows if r["mode"] != "target only"})
    fig = go.Figure()
    lines = dict(baselines or {})
    base = [r for r in rows if r["mode"] == "target only"]
    if base:
        lines = {"target only (n = 0)": (base[0]["mean"], half_width(base[0])), **lines}
    x_range = [0.5, max(depths, default=1) + 0.5]
    for i, (name, (mean, std)) in enumerate(lines.items()):
        colour = ("#444444", "#8c564b", "#7f7f7f")[i % 3]
        fig.add_trace(go.Scatter(
            x=[*x_range, *x_range[::-1]], y=[mean + std] * 2 + [mean - std] * 2,
            fill="toself", fillcolor=rgba(colour, 0.12), line={"width": 0},
            hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(
            x=x_range, y=[mean, mean], mode="lines", name=name,
            line={"color": colour, "dash": "dash"},
            hovertemplate=f"{name}: %{{y:.3f}} ± {std:.3f}<extra></extra>"))
    for mode, colour in (("frozen", PALETTE[3]), ("fine-tuned", PALETTE[0])):
        points = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["n"])
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[r["n"] for r in points], y=[r["mean"] for r in points], name=mode,
            mode="lines+markers", line={"color": colour}, marker={"size": 9},
            error_y={"type": "data", "array": [half_width(r) for r in points]},
            customdata=[[r.get("n_seeds", 1), half_width(r)] for r in points],
            hovertemplate=(f"{mode}, first %{{x}} groups copied<br>accuracy %{{y:.3f}} ± "
                           "%{customdata[1]:.3f} (95 % interval) over %{customdata[0]} seeds"
                           "<extra></extra>")))
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
    fig.update_yaxes(title_text="target test accuracy (mean ± 95 % interval over seeds)")
    fig.update_layout(
        title=title or f"how transferable are the layers? {budget_words(chosen)}",
        height=420, legend={"orientation": "h", "y": -0.25},
        margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return fig


def _jpeg_uri(image: np.ndarray, quality: int = 88) -> str:
    """An (H, W, 3) image in [0, 1] as a JPEG data URI (a few kB, where plotly's list of
    numbers would be hundreds)."""
    from PIL import Image  # Pillow comes with torchvision; only photos need it

    buffer = io.BytesIO()
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def photo_grid(images: torch.Tensor | np.ndarray, captions: Sequence[str], *, ncols: int = 4,
               title: str | None = None, cell_px: int = 180, caption_lines: int = 3) -> go.Figure:
    """Colour photos (N, 3, H, W) in [0, 1] in a grid, each under a caption of up to
    ``caption_lines`` lines (separate lines with ``<br>``), e.g. a network's top guesses.

    The photos travel as JPEG images, so a lesson that stores the figure stays small.
    """
    arr = as_image_array(images)
    n = len(arr)
    if arr.ndim != 4 or n == 0:
        raise ValueError(f"photo_grid takes colour images (N, 3, H, W), at least one; got "
                         f"{tuple(np.shape(images))}.")
    if len(captions) != n:
        raise ValueError(f"{n} images but {len(captions)} captions.")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    h, w = arr.shape[1:3]
    top, gap = round(0.16 * h * caption_lines), max(2, w // 20)  # room for the caption
    step_x, step_y = w + gap, top + h + gap
    fig = go.Figure()
    for i, (image, caption) in enumerate(zip(arr, captions, strict=True)):
        r, c = divmod(i, ncols)
        fig.add_trace(go.Image(source=_jpeg_uri(image), x0=c * step_x, y0=r * step_y + top,
                               hoverinfo="skip"))
        fig.add_annotation(x=c * step_x + w / 2, y=r * step_y + top - 2, text=str(caption),
                           showarrow=False, yanchor="bottom", align="center",
                           font={"size": 12})
    fig.update_xaxes(visible=False, range=[-gap, ncols * step_x])
    fig.update_yaxes(visible=False, range=[nrows * step_y, -gap], scaleanchor="x")
    fig.update_layout(title=title, width=ncols * cell_px + 40,
                      height=round(nrows * cell_px * step_y / step_x) + (70 if title else 30),
                      margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
                      plot_bgcolor="white")
    return fig
