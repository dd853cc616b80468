"""Lesson 05's control: copy n layers, frozen or fine-tuned, and see where it lands."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations.data import budget_label, budget_words, few_labels
from transferkit.foundations.verdicts import compare_methods
from transferkit.foundations.verdicts import describe as describe_record
from transferkit.methods.label_budget import check_budgets
from transferkit.surgery.layer_groups import layer_groups
from transferkit.training.loop import evaluate
from transferkit.vision.transfer_studies import (
    BASELINE,
    MODES,
    max_depth,
    summarise_transfer,
    transfer_method,
)


def _study_says(summary, rows, budget, mode: str, n: int) -> str:
    """What the study measured for this setting: its mean over seeds and, given its rows,
    its paired verdict against the target-only network (one rule: `compare_methods`)."""
    study = {(r["mode"], r["n"]): r for r in (summary or []) if r["budget"] == budget}
    ref = study.get((mode, n) if n else (BASELINE, 0))
    if ref is None:
        return ""
    text = f" (the study: mean {ref['mean']:.3f} over {ref.get('n_seeds', 1)} seeds"
    mine = [r for r in rows or [] if r["budget"] == budget]
    if n and mine:
        [record] = compare_methods(mine, f"{mode} {n}", BASELINE)
        text += "; " + describe_record({**record, "budget": None})
    return text + ")"


def _own_summary(runs: list[dict], budget) -> list[dict]:
    mine = [r for r in runs if r["budget"] == budget]
    return summarise_transfer(mine) if mine else []


def transferability_lab(
    source: nn.Module,
    make_model: Callable[[], nn.Module],
    splits,
    *,
    summary=None,
    rows=None,
    budgets=(5, 20, None),
    budget=5,
    n: int = 1,
    mode: str = "frozen",
    steps: int = 150,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """Copy the first n layers of a source network, frozen or fine-tuned, and train the rest.

    ``source`` is the network trained on the source task; ``make_model()`` builds a
    fresh one of the same shape for the target task; ``splits`` are the target's
    ``(train, val, test)``. Controls: n (the layer groups copied, 0 = the target-only
    network), frozen or fine-tuned, the labels per class (``budgets``; None = all), and
    a "train" button, which trains one network exactly as
    `transferkit.vision.transfer_studies.transfer_method` does (``steps`` Adam steps at
    ``lr``, seeded by ``seed``) and reports its target test accuracy. The figure is
    `transferkit.course.plots.transferability_figure` of the study run in the lesson
    (``rows``: `transferkit.vision.transfer_studies.transferability_study`'s rows, or only
    its ``summary``) with your run as a star; for a budget the study did not run, it
    shows your own runs instead. Your run is one draw: with the study's ``rows`` the
    readout gives the study's verdict for the same setting against the target-only
    network (paired by seed and test image, `transferkit.foundations.verdicts.compare_methods`),
    the same rule as everywhere in the course.
    """
    import time

    train, val, test = splits
    if summary is None and rows:
        summary = summarise_transfer(rows)
    budgets = check_budgets(budgets, train.y)
    if budget not in budgets:
        raise ValueError(f"budget {budget!r} is not one of the budgets {budgets}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    depth = max_depth(source)
    if not isinstance(n, int) or not 0 <= n <= depth:
        raise ValueError(f"n must be an integer from 0 to {depth}, got {n!r}.")
    names = [g.name for g in layer_groups(source)[:-1]]
    style = {"description_width": "initial"}
    by_label = {budget_label(b): b for b in budgets}
    copied = W.IntSlider(value=n, min=0, max=depth, description="layers copied (n)",
                         continuous_update=False, style=style)
    how = W.ToggleButtons(options=MODES, value=mode, description="copied layers")
    labels = W.SelectionSlider(options=list(by_label), value=budget_label(budget),
                               description="labels per class", continuous_update=False,
                               style=style)
    button = W.Button(description="train", button_style="primary", icon="play")
    runs: list[dict] = []

    def figure(chosen, highlight=None) -> go.Figure:
        study = [r for r in (summary or []) if r["budget"] == chosen]
        shown = study or _own_summary(runs, chosen)
        if not shown:
            return plots.history_figure([], title=f"press train: your runs on "
                                        f"{budget_words(chosen)} appear here")
        return plots.transferability_figure(
            shown, layer_names=names, highlight=highlight,
            title=(f"{budget_words(chosen)}: " + ("the study" if study else "your runs")
                   + (" and your last run (star)" if highlight else "")))

    panel = Panel([copied, how, labels, button], figure(budget),
                  title="how transferable are the layers?")
    panel.runs = runs

    def describe() -> str:
        k = copied.value
        if k == 0:
            return "nothing copied: the target-only network"
        return f"{how.value} copy of the first {k} group(s) ({', '.join(names[:k])})"

    def prompt() -> None:
        panel.status.value = (f"<div class='transferkit-readout'>press train: "
                              f"{html.escape(describe())}, "
                              f"{budget_words(by_label[labels.value])}</div>")
        show_in(panel.figure, figure(by_label[labels.value]))

    def train_now() -> None:
        chosen, k = by_label[labels.value], copied.value
        chosen_mode = how.value if k else "fine-tuned"  # n = 0: nothing to freeze
        labelled = train if chosen is None else few_labels(train.x, train.y, chosen, seed=seed)
        panel.status.value = ("<div class='transferkit-readout'>training: "
                              f"{html.escape(describe())}…</div>")
        button.disabled = True
        start = time.perf_counter()
        try:
            method = transfer_method(source, make_model, k, chosen_mode, steps=steps, lr=lr,
                                     batch_size=batch_size)
            model = method(labelled, val, seed)
        finally:
            button.disabled = False
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, test)["accuracy"]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        runs.append({"method": f"{chosen_mode} {k}" if k else BASELINE, "budget": chosen,
                     "per_class": len(labelled) / len(set(labelled.y.tolist())),
                     "n_train": len(labelled), "test_accuracy": accuracy})
        compare = _study_says(summary, rows, chosen, chosen_mode, k)
        panel.model = model
        show_in(panel.figure, figure(chosen, {"mode": chosen_mode, "n": k,
                                              "accuracy": accuracy}))
        panel.status.value = (
            f"<div class='transferkit-readout'><b>{html.escape(describe())}</b>, "
            f"{budget_words(chosen)} ({len(labelled)} images): target test accuracy "
            f"{accuracy:.3f}{html.escape(compare)}; {trainable:,} of {total:,} parameters "
            f"trained; {seconds:.1f} s</div>")

    prompt()
    for control in (copied, how, labels):
        control.observe(guarded(panel.status, prompt), names="value")
    button.on_click(guarded(panel.status, train_now))
    panel.controls = {"layers copied (n)": copied, "copied layers": how,
                      "labels per class": labels, "train": button}
    panel.model = None
    return panel
