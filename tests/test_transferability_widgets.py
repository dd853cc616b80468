"""Lesson 05's transferability figure and lab, without a browser."""

import numpy as np
import pytest
import scipy.stats
import torch

from transferkit.course import plots, widgets
from transferkit.vision.transfer_studies import summarise_transfer

T3 = scipy.stats.t.ppf(0.975, 2) / 3 ** 0.5  # a 95 % interval from 3 seeds: T3 × std


def study_rows():
    """Rows as transferability_study returns them: baseline + 2 depths × 2 modes, 3 seeds."""
    rows = []
    for method, acc in (("target only", 0.80), ("frozen 1", 0.82), ("fine-tuned 1", 0.83),
                        ("frozen 2", 0.70), ("fine-tuned 2", 0.84)):
        for budget in (5, None):
            for seed in range(3):
                rows.append({"method": method, "budget": budget, "seed": seed,
                             "per_class": budget or 107, "n_train": 5 * (budget or 107),
                             "test_accuracy": acc + (0.1 if budget is None else 0)
                             + 0.01 * seed})
    return rows


def test_transferability_figure_draws_modes_against_n_and_the_baseline():
    summary = summarise_transfer(study_rows())
    fig = plots.transferability_figure(summary, budget=5, layer_names=["conv1", "conv2"],
                                       baselines={"logistic regression": (0.9, 0.02)})
    named = {t.name: t for t in fig.data if t.name}
    assert set(named) == {"target only (n = 0)", "logistic regression", "frozen", "fine-tuned"}
    assert list(named["frozen"].x) == [1, 2]
    assert np.allclose(named["frozen"].y, [0.83, 0.71])
    assert np.allclose(named["fine-tuned"].y, [0.84, 0.85])
    # error bars: the 95 % interval of each mean over 3 seeds, t · s / √3
    assert np.allclose(named["frozen"].error_y.array, [0.01 * T3] * 2)
    assert np.allclose(named["target only (n = 0)"].y, [0.81, 0.81])
    assert list(fig.layout.xaxis.ticktext) == ["1: conv1", "2: conv2"]
    every = plots.transferability_figure(summary, budget="all")
    assert np.allclose({t.name: t for t in every.data}["frozen"].y, [0.93, 0.81])
    star = plots.transferability_figure(summary, budget=5,
                                        highlight={"mode": "frozen", "n": 2, "accuracy": 0.5})
    assert star.data[-1].marker.symbol == "star" and list(star.data[-1].y) == [0.5]


def test_transferability_figure_explains_bad_input():
    summary = summarise_transfer(study_rows())
    with pytest.raises(ValueError, match="several label budgets"):
        plots.transferability_figure(summary)
    with pytest.raises(ValueError, match="summarise_transfer"):
        plots.transferability_figure(study_rows())
    with pytest.raises(ValueError, match="empty"):
        plots.transferability_figure([])


def test_lab_trains_the_chosen_copy_and_marks_it(digit_tasks, tiny_cnn):
    target = digit_tasks[1]
    torch.manual_seed(0)
    source = tiny_cnn()
    panel = widgets.transferability_lab(source, tiny_cnn, target, rows=study_rows(),
                                        budgets=(5, None), budget=5, steps=5)
    controls = panel.controls
    assert "press train" in panel.status.value
    before = len(panel.figure.data)
    controls["layers copied (n)"].value = 2
    controls["copied layers"].value = "frozen"
    controls["train"].click()
    status = panel.status.value
    assert "error" not in status, status
    assert "frozen copy of the first 2 group(s)" in status and "target test accuracy" in status
    # one run is one draw: the readout gives the study's mean and its paired verdict for
    # this setting against the target-only network (the rule every lesson uses)
    assert "the study: mean 0.710 over 3 seeds; frozen 2 loses to target only: gap -0.100" \
        in status
    assert "spread" not in status
    assert panel.figure.data[-1].marker.symbol == "star" and len(panel.figure.data) == before + 1
    assert torch.equal(panel.model[3].weight, source[3].weight)  # copied and frozen
    assert not panel.model[3].weight.requires_grad


def test_lab_with_only_a_summary_gives_the_mean(digit_tasks, tiny_cnn):
    panel = widgets.transferability_lab(tiny_cnn(), tiny_cnn, digit_tasks[1],
                                        summary=summarise_transfer(study_rows()),
                                        budgets=(5, None), budget=5, n=1, steps=5)
    panel.controls["train"].click()
    assert "(the study: mean 0.830 over 3 seeds)" in panel.status.value


def test_lab_without_a_study_plots_your_own_runs(digit_tasks, tiny_cnn):
    target = digit_tasks[1]
    panel = widgets.transferability_lab(tiny_cnn(), tiny_cnn, target, budgets=(5,), budget=5,
                                        n=0, steps=5)
    assert "press train" in panel.figure.layout.title.text
    panel.controls["train"].click()
    assert "target-only network" in panel.status.value
    assert "your runs" in panel.figure.layout.title.text
    assert any(t.name == "target only (n = 0)" for t in panel.figure.data)


def test_lab_refuses_bad_settings(digit_tasks, tiny_cnn):
    target = digit_tasks[1]
    with pytest.raises(ValueError, match="from 0 to 2"):
        widgets.transferability_lab(tiny_cnn(), tiny_cnn, target, n=5)
    with pytest.raises(ValueError, match="mode must be one of"):
        widgets.transferability_lab(tiny_cnn(), tiny_cnn, target, mode="thawed")
