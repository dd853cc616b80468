"""Lesson 04's controls: a fine-tuning strategy, what it trains, and how it does."""

from __future__ import annotations

import html
import math
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.foundations.data import budget_label, budget_words, few_labels
from transferkit.foundations.device import seeded
from transferkit.methods.finetune import FineTuneResult, Stage, fine_tune
from transferkit.methods.label_budget import check_budgets
from transferkit.methods.strategies import (
    STRATEGIES,
    check_strategy,
    set_trainable,
    strategy_stages,
)
from transferkit.surgery.freezing import trainable_report
from transferkit.surgery.layer_groups import layer_groups
from transferkit.training.callbacks import Callback, FitState
from transferkit.training.loop import evaluate


def stage_reports_html(model: nn.Module, strategy: str, *, k: int = 2, bn: str = "train") -> str:
    """What each stage of ``strategy`` trains in ``model``, as HTML: one
    `transferkit.surgery.freezing.trainable_report` table per stage, under its name.

    Freezes and unfreezes ``model`` stage by stage (`set_trainable`), so pass a
    fresh model, not one you still want to train.
    """
    reports = []
    for i, (name, _) in enumerate(strategy_stages(strategy, len(layer_groups(model)), k=k)):
        set_trainable(model, strategy, i, k=k, bn=bn)
        reports.append((name, trainable_report(model)))
    return _stages_html(reports)


def _stages_html(reports: list, note: str = "") -> str:
    """(stage name, `TrainableReport`) pairs as one HTML block, a table per stage."""
    parts = [f"<div class='transferkit-stage'><b>stage {i + 1} of {len(reports)}: "
             f"{html.escape(name)}</b>{report._repr_html_()}</div>"
             for i, (name, report) in enumerate(reports)]
    return f"<div class='transferkit-stages'>{''.join(parts)}{note}</div>"


class _StageCurves(Callback):
    """The curves of a multi-stage `fine_tune` run, redrawn after every epoch of every
    stage (the epoch keeps counting from stage to stage; dotted lines mark where a
    stage begins), and a progress bar over all the stages' epochs."""

    def __init__(self, figure: go.FigureWidget, bar: W.IntProgress, strategy: str,
                 stages: list[tuple[str, list[str]]], epochs: int, title: str,
                 model: nn.Module):
        self.figure, self.bar, self.strategy, self.plan = figure, bar, strategy, stages
        self.epochs, self.title, self.model = epochs, title, model
        self.done: list = []  # finished stages (finetune.Stage)
        self.reports: list = []  # (stage name, TrainableReport with that stage's optimizer)
        self.bar.max, self.bar.value = epochs * len(stages), 0

    def on_train_begin(self, state: FitState) -> None:
        # the model as this stage trains it, and the learning rates of its optimizer
        name = self.plan[len(self.done)][0]
        self.reports.append((name, trainable_report(self.model, state.optimizer)))

    def _stage(self, i: int, state: FitState):
        name, trainable = self.plan[i]
        return Stage(name, trainable, max(g["lr"] for g in state.optimizer.param_groups),
                     state.history)

    def on_epoch_end(self, state: FitState) -> None:
        i = len(self.done)
        result = FineTuneResult(self.strategy, [*self.done, self._stage(i, state)])
        self.bar.value = self.epochs * i + state.epoch
        title = f"{self.title}: {self.plan[i][0]}, epoch {state.epoch} of {state.epochs}"
        if state.epoch == 1:  # a new stage: the whole figure, with its boundary line
            show_in(self.figure, plots.history_figure(result, title=title))
            return
        # then only the new points: building the figure again costs more than the epoch
        rows = result.to_rows()
        with self.figure.batch_update():
            for trace, column in zip(self.figure.data, plots.history_columns(self.figure),
                                     strict=True):
                trace.x, trace.y = [r["epoch"] for r in rows], [r[column] for r in rows]
            self.figure.layout.title.text = title

    def on_train_end(self, state: FitState) -> None:
        self.done.append(self._stage(len(self.done), state))


def _fresh(make_model: Callable[[], nn.Module], earlier: nn.Module) -> nn.Module:
    """``make_model()``, refused if it shares a weight with the ``earlier`` model it made:
    fine-tuning it would then change the pre-trained encoder of every later model."""
    model = make_model()
    if not isinstance(model, nn.Module):
        raise TypeError(f"make_model() must return an nn.Module, got {type(model).__name__}.")
    seen = {p.untyped_storage().data_ptr() for p in earlier.parameters()}
    if model is earlier or any(p.untyped_storage().data_ptr() in seen
                               for p in model.parameters()):
        raise ValueError("make_model() returned weights it had returned before, so training "
                         "would change the pre-trained encoder. Copy it each time, e.g. "
                         "make_model = lambda: Classifier(copy.deepcopy(encoder), 10).")
    return model


def finetune_lab(  # noqa: PLR0915  (its controls' callbacks nest inside)
    make_model: Callable[[], nn.Module],
    splits,
    *,
    budgets=(1, 3, 5, 10, 50, None),
    budget=10,
    strategy: str = "lp_ft",
    lr: float = 1e-3,
    epochs: int = 20,
    k: int = 2,
    bn: str = "train",
    batch_size: int = 64,
    seed: int = 0,
) -> Panel:
    """Fine-tune a pre-trained network your way, and watch what trains and how.

    ``make_model()`` returns a *new* model each time: a
    `transferkit.surgery.heads.Classifier` on a copy of the pre-trained encoder
    (``lambda: Classifier(copy.deepcopy(encoder), 10)``); a model sharing weights
    with an earlier one is refused, since training it would change the encoder.
    ``splits`` is ``(train, val, test)``.

    Controls: the strategy (`transferkit.methods.strategies.STRATEGIES`), the labels per
    class (``budgets``; None = all), the learning rate of the stages that train the
    encoder (a linear probe's head gets 10×, see `fine_tune`), the epochs per stage,
    and a "train" button. Tables under the controls show, for each stage of the
    chosen strategy, which layer groups train and what their BatchNorm layers do
    (`stage_reports_html`); they change as soon as the strategy does. "train" draws
    the labelled subset (`transferkit.foundations.data.few_labels` with ``seed``), runs
    `fine_tune` with the curves redrawn after every epoch (the epochs count on
    across stages; a dotted line marks each new stage), and then reports validation
    and test accuracy, the feature drift and the time; the tables then also show
    the learning rate each group trained with. Everything runs inside
    `transferkit.foundations.device.seeded`: the same settings give the same run, and the
    notebook's random state is left alone.
    """
    import time

    train, val, test = splits
    budgets = check_budgets(budgets, train.y)
    if budget not in budgets:
        raise ValueError(f"budget {budget!r} is not one of the budgets {budgets}.")
    check_strategy(strategy, STRATEGIES)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    style = {"description_width": "initial"}
    by_label = {budget_label(b): b for b in budgets}
    choice = W.Dropdown(options=STRATEGIES, value=strategy, description="strategy")
    labels = W.SelectionSlider(options=list(by_label), value=budget_label(budget),
                               description="labels per class", continuous_update=False,
                               style=style)
    exponent = math.floor(math.log10(lr))
    rate = W.FloatLogSlider(value=lr, base=10, min=exponent - 2, max=exponent + 2, step=0.25,
                            description="learning rate", readout_format=".2g",
                            continuous_update=False, style=style)
    n_epochs = W.IntSlider(value=epochs, min=1, max=max(200, epochs),
                           description="epochs per stage", continuous_update=False, style=style)
    button = W.Button(description="train", button_style="primary", icon="play")
    bar = W.IntProgress(value=0, min=0, max=1, description="progress",
                        layout=W.Layout(width="260px"))
    with seeded(seed):
        first = make_model()  # kept, so that a later model sharing its weights is caught
    panel = Panel([choice, labels, rate, n_epochs, button, bar],
                  plots.history_figure([], title="press train: the curves appear epoch by "
                                       "epoch"), title="fine-tuning lab")
    panel.report = W.HTML()
    controls, status, figure = panel.box.children
    panel.box = W.VBox([controls, panel.report, status, figure])
    panel.result = panel.model = None

    def show_report() -> None:
        with seeded(seed):
            model = _fresh(make_model, first)
        panel.report.value = stage_reports_html(model, choice.value, k=k, bn=bn)

    def train_now() -> None:
        chosen, name = by_label[labels.value], choice.value
        panel.status.value = (f"<div class='transferkit-readout'>training {html.escape(name)} on "
                              f"{budget_words(chosen)}…</div>")
        labelled = train if chosen is None else few_labels(train.x, train.y, chosen, seed=seed)
        start = time.perf_counter()
        button.disabled = True
        try:
            with seeded(seed):
                model = _fresh(make_model, first)
                groups = [g.name for g in layer_groups(model)]
                plan = [(stage, groups[at:])
                        for stage, at in strategy_stages(name, len(groups), k=k)]
                curves = _StageCurves(panel.figure, bar, name, plan, n_epochs.value,
                                      f"{name}, {budget_words(chosen)}", model)
                result = fine_tune(model, labelled, val, strategy=name, epochs=n_epochs.value,
                                   lr=rate.value, k=k, bn=bn, batch_size=batch_size, seed=seed,
                                   progress=False, callbacks=[curves])
        finally:
            button.disabled = False
        seconds = time.perf_counter() - start
        val_acc, test_acc = evaluate(model, val)["accuracy"], evaluate(model, test)["accuracy"]
        drift = ("— (scratch starts from no pre-trained features)"
                 if result.feature_drift is None else f"{result.feature_drift:.3f}")
        panel.result, panel.model = result, model
        panel.report.value = _stages_html(curves.reports, note=(
            "<div style='color:#555'>as the last run trained: the learning rates are those "
            "of each stage's optimizer</div>"))
        show_in(panel.figure, plots.history_figure(result,
            title=f"{name}, {budget_words(chosen)}: validation accuracy {val_acc:.3f}"))
        panel.status.value = (
            f"<div class='transferkit-readout'><b>{html.escape(name)}</b> on "
            f"{budget_words(chosen)} ({len(labelled)} images), {n_epochs.value} epochs per "
            f"stage: validation accuracy {val_acc:.3f}, test accuracy {test_acc:.3f}, "
            f"feature drift {drift}, {seconds:.1f} s</div>")

    def prompt() -> None:
        panel.status.value = (
            f"<div class='transferkit-readout'>press train to fine-tune with "
            f"{html.escape(choice.value)} on {budget_words(by_label[labels.value])}</div>")

    show_report()  # the first report (an error here is raised, not hidden)
    prompt()

    def on_strategy() -> None:
        prompt()
        show_report()

    choice.observe(guarded(panel.status, on_strategy), names="value")
    labels.observe(guarded(panel.status, prompt), names="value")
    button.on_click(guarded(panel.status, train_now))
    panel.controls = {"strategy": choice, "labels per class": labels, "learning rate": rate,
                      "epochs per stage": n_epochs, "train": button, "progress": bar}
    return panel
