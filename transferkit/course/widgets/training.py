"""Lesson 02's control: how accuracy depends on the number of labels."""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations.data import budget_label, budget_words, few_labels
from transferkit.foundations.device import seeded
from transferkit.methods.label_budget import check_budgets
from transferkit.training.loop import epochs_for_steps, fit


def _budget_title(budget, n_train: int, rows) -> str:
    last = rows[-1]
    return (f"{budget_words(budget)} ({n_train} training images): "
            f"accuracy train {last['accuracy']:.2f}, validation {last['val_accuracy']:.2f}")


def label_budget_explorer(
    splits,
    make_model: Callable[[], nn.Module],
    *,
    budgets=(1, 3, 5, 10, 50, None),
    value=3,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """Pick a label budget and watch a network overfit it.

    A "labels per class" slider chooses how many labelled training examples of
    each class the network gets (``None`` in ``budgets`` = all of them). Each
    choice trains a fresh ``make_model()`` with `fit` (Adam, about ``steps``
    optimizer steps, seeded, so the same choice always gives the same curves)
    and draws its train and validation curves. With a few labels the training
    accuracy reaches 1 while the validation accuracy stays far below, and the
    validation loss turns upward: that gap is overfitting.

    ``splits`` is ``(train, val, test)``; the test set is not used here.
    """
    train, val, _ = splits
    budgets = check_budgets(budgets, train.y)
    if value not in budgets:
        raise ValueError(f"value {value!r} is not one of the budgets {budgets}.")
    by_label = {budget_label(b): b for b in budgets}
    slider = W.SelectionSlider(options=list(by_label), value=budget_label(value),
                               description="labels per class", continuous_update=False,
                               style={"description_width": "initial"},
                               layout=W.Layout(width="420px"))

    def draw() -> go.Figure:
        budget = by_label[slider.value]
        labelled = train if budget is None else few_labels(train.x, train.y, budget, seed=seed)
        with seeded(seed):
            model = make_model()
            history = fit(model, labelled, val,
                          epochs=epochs_for_steps(len(labelled), batch_size, steps),
                          lr=lr, batch_size=batch_size, seed=seed, restore_best=False,
                          progress=False)
        return plots.history_figure(history.rows,
                                    title=_budget_title(budget, len(labelled), history.rows))

    panel = Panel([slider], draw(), title="train on a label budget and watch it overfit")

    def on_change() -> None:
        panel.status.value = ""
        show_in(panel.figure, draw())

    slider.observe(guarded(panel.status, on_change), names="value")
    panel.controls = {"labels per class": slider}
    return panel
