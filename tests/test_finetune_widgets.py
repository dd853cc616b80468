"""Lesson 04's figure builders and the fine-tuning lab, without a browser."""

import copy
import random
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import scipy.stats
import torch
from torch import nn

from transferkit.course import plots, widgets
from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.methods.label_budget import summarise
from transferkit.surgery.heads import Classifier
from transferkit.training.loop import evaluate

# --- figures --------------------------------------------------------------------------

T3 = scipy.stats.t.ppf(0.975, 2) / 3 ** 0.5  # a 95 % interval from 3 seeds: T3 × std


def study_rows():
    """Rows as label_budget_study returns them: 2 methods × 3 budgets × 3 seeds."""
    rows = []
    for method, base, drop, drift in (("linear_probe", 0.80, -0.05, 0.0),
                                      ("full", 0.85, -0.20, 0.4)):
        for budget, gain in ((1, 0.0), (10, 0.1), (None, 0.12)):
            for seed in range(3):
                acc = base + gain + 0.01 * seed
                rows.append({"method": method, "budget": budget,
                             "per_class": budget or 107.7, "n_train": 10 * (budget or 107.7),
                             "n_test": 360, "seed": seed, "test_accuracy": acc,
                             "shifted_accuracy": acc + drop + 0.02 * seed,
                             "feature_drift": drift + 0.1 * (budget or 100) / 100 + 0.01 * seed})
    return rows


def test_shift_figure_pairs_in_distribution_and_shifted_bars():
    rows = study_rows()
    inside, shifted = summarise(rows), summarise(rows, "shifted_accuracy")
    fig = plots.shift_figure(inside, shifted, budget=10)
    assert [t.type for t in fig.data] == ["bar", "bar"] and fig.layout.barmode == "group"
    assert [t.name for t in fig.data] == ["in-distribution test", "shifted test"]
    held, moved = fig.data
    assert list(held.x) == list(moved.x) == ["linear_probe", "full"]
    assert np.allclose(held.y, [0.91, 0.96]) and np.allclose(moved.y, [0.88, 0.78])
    # error bars: the 95 % interval of each mean over 3 seeds, t · s / √3
    assert np.allclose(held.error_y.array, [0.01 * T3] * 2)
    assert np.allclose(moved.error_y.array, [0.03 * T3] * 2)
    assert list(moved.text) == ["-0.03", "-0.18"]  # the change under shift, on the bar
    assert [c[0] for c in moved.customdata] == [3, 3] and "seeds" in moved.hovertemplate
    assert "10 labels per class" in fig.layout.title.text
    every = plots.shift_figure(inside, shifted, budget="all", title="t")
    assert np.allclose(every.data[0].y, [0.93, 0.98]) and every.layout.title.text == "t"


def test_shift_figure_needs_a_budget_when_there_are_several():
    rows = study_rows()
    inside, shifted = summarise(rows), summarise(rows, "shifted_accuracy")
    with pytest.raises(ValueError, match=r"several label budgets \(1, 10, 'all'\)"):
        plots.shift_figure(inside, shifted)
    with pytest.raises(ValueError, match="no rows for budget 5; it has 1, 10, 'all'"):
        plots.shift_figure(inside, shifted, budget=5)
    one = [r for r in rows if r["budget"] == 1]
    fig = plots.shift_figure(summarise(one), summarise(one, "shifted_accuracy"))
    assert np.allclose(fig.data[0].y, [0.81, 0.86])


def test_shift_figure_bad_input():
    rows = study_rows()
    inside = summarise(rows)
    with pytest.raises(ValueError, match="both summaries are of 'test_accuracy'"):
        plots.shift_figure(inside, inside, budget=1)
    only_probe = summarise([r for r in rows if r["method"] == "linear_probe"],
                           "shifted_accuracy")
    with pytest.raises(ValueError, match=r"no rows for \['full'\] at 1 label per class"):
        plots.shift_figure(inside, only_probe, budget=1)
    with pytest.raises(ValueError, match="in_summary is empty"):
        plots.shift_figure([], inside, budget=1)
    with pytest.raises(ValueError, match=r"lack \['mean', 'n', 'std'\]"):
        plots.shift_figure(rows, inside, budget=1)  # the study's rows, not a summary


def test_feature_drift_figure_groups_budgets():
    rows = study_rows()
    fig = plots.feature_drift_figure(summarise(rows, "feature_drift"))
    assert [t.name for t in fig.data] == ["1 label per class", "10 labels per class",
                                          "all labels"]
    assert all(list(t.x) == ["linear_probe", "full"] for t in fig.data)
    assert np.allclose(fig.data[1].y, [0.02, 0.42])
    assert np.allclose(fig.data[1].error_y.array, [0.01 * T3] * 2)
    assert fig.layout.barmode == "group" and fig.layout.showlegend
    assert "F_after" in fig.layout.yaxis.title.text


def test_feature_drift_figure_one_budget_and_missing_methods():
    rows = study_rows() + [{"method": "logistic", "budget": 10, "per_class": 10,
                            "n_train": 100, "seed": 0, "test_accuracy": 0.8}]
    ten = [r for r in rows if r["budget"] == 10]
    fig = plots.feature_drift_figure(summarise(ten, "feature_drift"))  # logistic: no drift
    assert len(fig.data) == 1 and list(fig.data[0].x) == ["linear_probe", "full"]
    assert not fig.layout.showlegend and "10 labels per class" in fig.layout.title.text
    with pytest.raises(ValueError, match="pass summarise\\(rows, 'feature_drift'\\)"):
        plots.feature_drift_figure(summarise(ten))
    with pytest.raises(ValueError, match="drift_summary is empty"):
        plots.feature_drift_figure([])


def test_history_columns_names_the_column_of_each_curve():
    rows = [{"epoch": 1, "loss": 2.0, "accuracy": 0.1, "val_loss": 2.1, "val_accuracy": 0.2}]
    fig = plots.history_figure(rows)
    columns = plots.history_columns(fig)
    assert sorted(columns) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert [t.y[0] for t in fig.data] == [rows[0][c] for c in columns]
    assert plots.history_columns(plots.history_figure([{"epoch": 1, "loss": 1.0}])) == ["loss"]
    with pytest.raises(ValueError, match="not one of history_figure's curves"):
        plots.history_columns(go.Figure(go.Scatter(y=[1], name="other")))


# --- the fine-tuning lab --------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return train_val_test_split(*load_digits(), seed=0)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU())


def lab(encoder, splits, **options):
    options = {"budgets": (1, 3, None), "budget": 3, "epochs": 3, **options}
    return widgets.finetune_lab(lambda: Classifier(copy.deepcopy(encoder), 10), splits,
                                **options)


def report_tables(html_text, with_lr=False):
    """Per stage: its title and its rows as {group: (trainable, batchnorm or lr)}."""
    stages = []
    for title, table in re.findall(r"<b>(.*?)</b>(<table.*?</table>)", html_text, re.S):
        rows = {}
        for cells in re.findall(r"<tr>(.*?)</tr>", table, re.S):
            cell = re.findall(r"<td>(.*?)</td>", cells)
            if cell and cell[0] != "total":
                rows[cell[0]] = (cell[3], cell[4]) if not with_lr else (cell[3], cell[5])
        stages.append((title, rows))
    return stages


def test_report_follows_the_strategy_before_any_training(encoder, splits):
    panel = lab(encoder, splits)
    stages = report_tables(panel.report.value)
    assert [t for t, _ in stages] == ["stage 1 of 2: linear probe", "stage 2 of 2: fine-tune all"]
    probe, full = stages[0][1], stages[1][1]
    assert probe == {"encoder.0": ("0", "frozen stats"), "encoder.3": ("0", "frozen stats"),
                     "head": ("170", "—")}
    assert full == {"encoder.0": ("2,144", "train"), "encoder.3": ("560", "train"),
                    "head": ("170", "—")}
    panel.controls["strategy"].value = "full"
    assert report_tables(panel.report.value) == [("stage 1 of 1: fine-tune all", full)]
    panel.controls["strategy"].value = "linear_probe"
    assert report_tables(panel.report.value) == [("stage 1 of 1: linear probe", probe)]
    panel.controls["strategy"].value = "gradual"
    assert [t for t, _ in report_tables(panel.report.value)] == [
        "stage 1 of 3: top 1 of 3 groups", "stage 2 of 3: top 2 of 3 groups",
        "stage 3 of 3: top 3 of 3 groups"]
    assert "press train to fine-tune with gradual on 3 labels per class" in panel.status.value
    panel.controls["labels per class"].value = "all"
    assert "press train to fine-tune with gradual on all labels" in panel.status.value
    assert panel.figure.data[0].x in (None, ())  # nothing trained yet
    frozen = lab(encoder, splits, strategy="partial", k=1, bn="freeze")
    assert report_tables(frozen.report.value)[0][1]["encoder.3"] == ("0", "frozen stats")


def test_train_draws_curves_epoch_by_epoch_then_the_readout(encoder, splits, monkeypatch):
    before = copy.deepcopy(encoder.state_dict())
    panel = lab(encoder, splits, epochs=2)
    seen = []  # what the figure shows after each epoch
    epoch_end = widgets.finetune._StageCurves.on_epoch_end

    def watched(self, state):
        epoch_end(self, state)
        seen.append((panel.figure.layout.title.text, [list(t.x) for t in panel.figure.data],
                     len(panel.figure.layout.shapes), panel.controls["progress"].value))

    monkeypatch.setattr(widgets.finetune._StageCurves, "on_epoch_end", watched)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    panel.controls["train"].click()
    assert torch.equal(torch.get_rng_state(), states[0])  # the notebook's RNG is untouched
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    # redrawn after every epoch of both stages, the epochs counted on, the boundary marked
    assert [title for title, *_ in seen] == [
        f"lp_ft, 3 labels per class: {stage}, epoch {e} of 2"
        for stage in ("linear probe", "fine-tune all") for e in (1, 2)]
    assert [(x, lines, bar) for _, x, lines, bar in seen] == [
        ([[1]] * 4, 0, 1), ([[1, 2]] * 4, 0, 2), ([[1, 2, 3]] * 4, 2, 3),
        ([[1, 2, 3, 4]] * 4, 2, 4)]
    assert panel.figure.layout.title.text.startswith("lp_ft, 3 labels per class: validation")
    assert all(list(t.x) == [1, 2, 3, 4] for t in panel.figure.data)
    assert [s.x0 for s in panel.figure.layout.shapes] == [2.5, 2.5]  # the stage boundary
    bar = panel.controls["progress"]
    assert bar.max == 4 and bar.value == 4 and not panel.controls["train"].disabled
    readout = panel.status.value
    assert "transferkit-readout" in readout and "(30 images)" in readout
    val_acc = evaluate(panel.model, splits.val)["accuracy"]
    test_acc = evaluate(panel.model, splits.test)["accuracy"]
    assert f"validation accuracy {val_acc:.3f}, test accuracy {test_acc:.3f}" in readout
    assert f"feature drift {panel.result.feature_drift:.3f}" in readout
    # the tables now show each stage's learning rates, as its optimizer had them
    assert report_tables(panel.report.value, with_lr=True) == [
        ("stage 1 of 2: linear probe", {"encoder.0": ("0", "—"), "encoder.3": ("0", "—"),
                                        "head": ("170", "0.01")}),
        ("stage 2 of 2: fine-tune all", {"encoder.0": ("2,144", "0.001"),
                                         "encoder.3": ("560", "0.001"),
                                         "head": ("170", "0.001")})]
    for name, value in encoder.state_dict().items():  # the pre-trained encoder is unchanged
        assert torch.equal(value, before[name]), name
    ys = [list(t.y) for t in panel.figure.data]
    panel.controls["train"].click()  # seeded: the same settings give the same run
    assert [list(t.y) for t in panel.figure.data] == ys


def test_train_uses_the_controls(encoder, splits):
    panel = lab(encoder, splits, strategy="scratch")
    panel.controls["labels per class"].value = "1"
    panel.controls["epochs per stage"].value = 2
    panel.controls["learning rate"].value = 1e-2
    panel.controls["train"].click()
    result = panel.result
    assert [s.name for s in result.stages] == ["from scratch"] and result.stages[0].lr == 1e-2
    assert len(result.stages[0].history) == 2
    assert "on 1 label per class (10 images)" in panel.status.value
    assert "feature drift — (scratch" in panel.status.value
    panel.controls["strategy"].value = "discriminative"
    panel.controls["epochs per stage"].value = 1
    panel.controls["train"].click()
    rates = report_tables(panel.report.value, with_lr=True)[0][1]
    assert {g: lr for g, (_, lr) in rates.items()} == {  # ÷2.6 per group down from the head
        "encoder.0": "0.00148", "encoder.3": "0.00385", "head": "0.01"}


def test_bad_settings_show_in_the_widget(encoder, splits):
    panel = lab(encoder, splits, k=5)  # partial: the model has only 3 layer groups
    panel.controls["strategy"].value = "partial"
    assert "ValueError: partial trains the top k groups: k must be 1 … 3" in panel.status.value
    panel.controls["train"].click()
    assert "ValueError: partial trains" in panel.status.value
    assert not panel.controls["train"].disabled
    panel.controls["strategy"].value = "full"  # a good setting clears the error
    assert "transferkit-error" not in panel.status.value


def test_a_model_sharing_the_encoder_is_refused(encoder, splits):
    shared = copy.deepcopy(encoder)
    with pytest.raises(ValueError, match="would change the pre-trained encoder"):
        widgets.finetune_lab(lambda: Classifier(shared, 10), splits)
    made = []

    def sometimes_shared():  # copies at first, then (a bug) hands out the same encoder
        made.append(Classifier(copy.deepcopy(encoder) if len(made) < 2 else made[0].encoder, 10))
        return made[-1]

    panel = widgets.finetune_lab(sometimes_shared, splits, budgets=(3,), budget=3, epochs=1)
    panel.controls["train"].click()
    assert "would change the pre-trained encoder" in panel.status.value


def test_bad_arguments(encoder, splits):
    with pytest.raises(ValueError, match="budget 5 is not one of the budgets"):
        lab(encoder, splits, budget=5)
    with pytest.raises(ValueError, match="unknown strategy 'lora'"):
        lab(encoder, splits, strategy="lora")
    with pytest.raises(ValueError, match="smallest class"):
        lab(encoder, splits, budgets=(3, 1000))
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        lab(encoder, splits, epochs=0)


def test_lab_displays_as_one_widget(encoder, splits):
    panel = lab(encoder, splits)
    assert isinstance(panel.figure, go.FigureWidget)
    assert panel.report in panel.box.children
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"].startswith("[interactive: fine-tuning lab")
