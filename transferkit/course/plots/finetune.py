"""Lesson 04's figures: accuracy under a shift, feature drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from transferkit.course.plots.common import (
    PALETTE,
    budgets_in,
    check_summary,
    half_width,
    pick_budget,
)
from transferkit.foundations.data import budget_words


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
    ``also_test={"shifted": ...}``). Bars show the mean over seeds, error bars the
    95 % interval of that mean; the text on a shifted bar is its change from the
    in-distribution one, and hovering gives the number of seeds.

    ``budget``: the label budget to draw (labels per class, or ``"all"``). It can be
    left out when the summaries hold a single budget; with several it is an error
    that lists them, since averaging over budgets would mix very different numbers.
    """
    check_summary(in_summary, "in_summary")
    check_summary(shifted_summary, "shifted_summary")
    metrics = (in_summary[0].get("metric"), shifted_summary[0].get("metric"))
    if metrics[0] is not None and metrics[0] == metrics[1]:
        raise ValueError(f"both summaries are of {metrics[0]!r}; pass summarise(rows) and "
                         "summarise(rows, 'shifted_accuracy').")
    chosen = pick_budget(in_summary, budget, "in_summary")
    inside = {r["method"]: r for r in in_summary if r["budget"] == chosen}
    shifted = {r["method"]: r for r in shifted_summary if r["budget"] == chosen}
    missing = [m for m in inside if m not in shifted]
    if missing:
        raise ValueError(f"shifted_summary has no rows for {missing} at "
                         f"{budget_words(chosen)}; summarise the same study's rows with "
                         "metric='shifted_accuracy' (the study needs also_test={'shifted': ...}).")
    methods = list(inside)
    fig = go.Figure()
    for i, (name, rows) in enumerate((("in-distribution test", inside),
                                      ("shifted test", shifted))):
        drops = [rows[m]["mean"] - inside[m]["mean"] for m in methods]
        fig.add_trace(go.Bar(
            x=methods, y=[rows[m]["mean"] for m in methods], name=name,
            marker_color=PALETTE[0 if i == 0 else 3],
            error_y={"type": "data", "array": [half_width(rows[m]) for m in methods]},
            text=None if i == 0 else [f"{d:+.2f}" for d in drops],
            textposition="outside" if i else None,
            customdata=[[rows[m]["n"], half_width(rows[m])] for m in methods],
            hovertemplate=(f"%{{x}}, {name}<br>mean %{{y:.3f}} ± %{{customdata[1]:.3f}} "
                           "(95 % interval) over %{customdata[0]} seeds<extra></extra>"),
        ))
    fig.update_xaxes(title_text="method")
    fig.update_yaxes(title_text="accuracy (mean over seeds ± 95 % interval)", range=[0, 1.08])
    fig.update_layout(
        title=title or f"accuracy in distribution and under shift, {budget_words(chosen)}",
        barmode="group", height=380, legend={"orientation": "h", "y": -0.25},
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
    )
    return fig


def feature_drift_figure(drift_summary: Sequence[Mapping[str, object]], *,
                         title: str | None = None) -> go.Figure:
    """How far fine-tuning moved the encoder's features, one bar per method.

    ``drift_summary`` is ``summarise(rows, "feature_drift")``; the height is the
    mean over seeds of ‖F_after − F_before‖ / ‖F_before‖ on the validation inputs
    (`transferkit.methods.finetune.feature_drift`), the error bar the 95 % interval of that mean.
    With several label budgets the bars are grouped: one colour per budget.
    """
    check_summary(drift_summary, "drift_summary")
    metric = drift_summary[0].get("metric")
    if metric is not None and metric != "feature_drift":
        raise ValueError(f"drift_summary is of {metric!r}; pass summarise(rows, "
                         "'feature_drift').")
    methods = list(dict.fromkeys(row["method"] for row in drift_summary))
    fig = go.Figure()
    for i, budget in enumerate(budgets_in(drift_summary)):
        rows = {r["method"]: r for r in drift_summary if r["budget"] == budget}
        shown = [m for m in methods if m in rows]
        fig.add_trace(go.Bar(
            x=shown, y=[rows[m]["mean"] for m in shown], name=budget_words(budget),
            marker_color=PALETTE[i % len(PALETTE)],
            error_y={"type": "data", "array": [half_width(rows[m]) for m in shown]},
            customdata=[[rows[m]["n"], half_width(rows[m])] for m in shown],
            hovertemplate=(f"%{{x}}, {budget_words(budget)}<br>drift %{{y:.3f}} ± "
                           "%{customdata[1]:.3f} (95 % interval) over %{customdata[0]} seeds"
                           "<extra></extra>"),
        ))
    fig.update_xaxes(title_text="method", categoryorder="array", categoryarray=methods)
    fig.update_yaxes(title_text="‖F_after − F_before‖ / ‖F_before‖", rangemode="tozero")
    budgets = budgets_in(drift_summary)
    default = "how far fine-tuning moved the encoder's features" + (
        f", {budget_words(budgets[0])}" if len(budgets) == 1 else "")
    fig.update_layout(title=title or default,
                      barmode="group", height=380, showlegend=len(fig.data) > 1,
                      legend={"orientation": "h", "y": -0.25},
                      margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return fig
