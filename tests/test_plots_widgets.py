import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from transferkit.course import plots, widgets
from transferkit.foundations.data import Data, load_digits


def test_image_grid_places_every_image():
    x, y = load_digits()
    fig = plots.image_grid(x[:12], [str(int(c)) for c in y[:12]], ncols=5, title="digits")
    assert isinstance(fig, go.Figure)
    z = np.array(fig.data[0].z, dtype=float)
    # 3 rows × 5 columns of 8×8 images, 1-px gaps, and a 2-px caption strip above each row
    assert z.shape == (3 * 11 - 1, 5 * 9 - 1)
    assert np.allclose(z[2:10, 9:17], x[1].reshape(8, 8).numpy())
    assert np.isnan(z[0:2, :]).all()  # the caption strip is background
    captions = fig.layout.annotations
    assert captions[1].x == 9 + 3.5 and captions[6].y < 11 + 2  # above its image
    assert [a.text for a in fig.layout.annotations] == [str(int(c)) for c in y[:12]]


@pytest.mark.parametrize("shape", [(4, 64), (4, 8, 8), (4, 1, 8, 8)])
def test_image_grid_accepts_grey_shapes(shape):
    fig = plots.image_grid(torch.rand(shape), ncols=2)
    assert np.array(fig.data[0].z, dtype=float).shape == (17, 17)


def test_image_grid_colour_images():
    fig = plots.image_grid(torch.rand(3, 3, 4, 4), ncols=3)
    assert fig.data[0].type == "image"


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [(torch.rand(2, 10), None, "not square"), (torch.rand(2, 2, 2, 2, 2), None, "cannot draw"),
     (torch.rand(0, 4, 4), None, "at least one"), (torch.rand(3, 4, 4), ["a"], "3 images")],
)
def test_image_grid_bad_input(images, labels, message):
    with pytest.raises(ValueError, match=message):
        plots.image_grid(images, labels)


def test_history_figure_without_accuracy():
    fig = plots.history_figure([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.3}])
    assert len(fig.data) == 1 and list(fig.data[0].y) == [0.5, 0.3]


def test_class_counts_figure():
    fig = plots.class_counts_figure(torch.tensor([0, 0, 1, 2, 2, 2]))
    assert list(fig.data[0].y) == [2, 1, 3]


def test_digits_browser_page_and_class_controls_change_the_figure():
    panel = widgets.digits_browser()
    page, klass = panel.controls["page"], panel.controls["class"]
    assert panel.figure.layout.title.text == "images 1–30 of 1797"
    assert page.max == 59
    page.value = 1
    assert panel.figure.layout.title.text == "images 31–60 of 1797"
    klass.value = 3
    assert page.value == 0 and panel.figure.layout.title.text == "images 1–30 of 183"
    assert {a.text for a in panel.figure.layout.annotations} == {"3"}
    assert panel.status.value == ""
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("[interactive: browse")


def test_widget_callback_errors_are_shown_in_the_widget(monkeypatch):
    panel = widgets.digits_browser()

    def broken(*args, **kwargs):
        raise ValueError("the figure could not be drawn")

    monkeypatch.setattr(plots, "image_grid", broken)
    panel.controls["page"].value = 2
    assert "ValueError: the figure could not be drawn" in panel.status.value


def test_digits_browser_on_other_data():
    data = Data(torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 0, 1, 1]), ("cat", "dog"))
    panel = widgets.digits_browser(data, per_page=2)
    assert panel.controls["page"].max == 2
    assert [o[0] for o in panel.controls["class"].options] == ["all", "cat", "dog"]


def test_show_in_replaces_traces_of_another_kind():
    target = go.FigureWidget(go.Figure(go.Scatter(y=[1, 2])))
    widgets.show_in(target, go.Figure([go.Bar(y=[3]), go.Bar(y=[4])]))
    assert [t.type for t in target.data] == ["bar", "bar"]


def test_live_plot_grows_with_every_epoch(monkeypatch):
    from transferkit.training.loop import fit

    shown = []
    monkeypatch.setattr(widgets.common, "display", shown.append)
    x, y = load_digits()
    live = widgets.LivePlot()
    fit(torch.nn.Linear(64, 10), (x[:200], y[:200]), (x[200:300], y[200:300]), epochs=3,
        callbacks=[live], progress=False)
    assert isinstance(live.figure, go.FigureWidget)
    assert list(live.figure.data[0].x) == [1, 2, 3]
    # displayed once; a saved notebook shows one line instead of the figure's JSON
    assert len(shown) == 1
    assert shown[0]._repr_mimebundle_()["text/plain"].startswith("[interactive: training curves")


# --- lesson 02: training a network -------------------------------------------------------


def test_confusion_matrix_counts_true_rows_predicted_columns():
    y_true = torch.tensor([0, 0, 0, 1, 1, 2])
    y_pred = torch.tensor([0, 0, 1, 1, 2, 2])
    fig = plots.confusion_matrix_figure(y_true, y_pred, classes=["a", "b", "c"], title="cm")
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.x) == ["a", "b", "c"]
    assert np.array_equal(np.array(heat.z), [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert fig.layout.xaxis.title.text == "predicted class"
    normalised = plots.confusion_matrix_figure(y_true, y_pred, normalize=True)
    z = np.array(normalised.data[0].z)
    assert np.allclose(z.sum(axis=1), 1) and z[0, 0] == pytest.approx(2 / 3)
    # a class that is never predicted and never true still gets its row and column
    assert np.array(plots.confusion_matrix_figure([0, 1], [0, 1], classes="abc").data[0].z
                    ).shape == (3, 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [([0, 1], [0], "2 labels but y_pred has 1"), ([], [], "at least one"),
     ([0.5], [0], "integer class labels"), ([0, -1], [0, 1], "negative")],
)
def test_confusion_matrix_bad_input(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        plots.confusion_matrix_figure(y_true, y_pred)


def test_curves_figure_one_trace_per_run():
    runs = {"SGD": [{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 1.5}],
            "Adam": [{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}]}
    fig = plots.curves_figure(runs, "val_loss", log_y=True)
    assert [t.name for t in fig.data] == ["SGD", "Adam"]
    assert list(fig.data[1].y) == [1.0, 0.5] and fig.layout.yaxis.type == "log"
    with pytest.raises(KeyError, match="no column 'accuracy'"):
        plots.curves_figure(runs, "accuracy")


def test_sweep_figure_groups_and_sorts_by_the_setting():
    rows = [{"optimizer": "sgd", "lr": 0.1, "acc": 0.9}, {"optimizer": "adam", "lr": 0.1,
            "acc": 0.5}, {"optimizer": "sgd", "lr": 0.01, "acc": 0.7}]
    fig = plots.sweep_figure(rows, "lr", "acc", group="optimizer", log_x=True)
    assert [t.name for t in fig.data] == ["sgd", "adam"]
    assert list(fig.data[0].x) == [0.01, 0.1] and list(fig.data[0].y) == [0.7, 0.9]
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(KeyError, match="'batch'"):
        plots.sweep_figure(rows, "batch", "acc")


def test_label_budget_figure_has_a_band_and_a_mean_per_method():
    from transferkit.methods.label_budget import summarise

    rows = [{"method": m, "budget": b, "per_class": b or 107.7, "n_train": 10 * (b or 107.7),
             "test_accuracy": acc + 0.01 * s}
            for m, base in (("MLP", 0.0), ("logistic", -0.02))
            for b, acc in ((1, 0.6 + base), (10, 0.9 + base), (None, 0.96 + base))
            for s in range(3)]
    summary = summarise(rows)
    fig = plots.label_budget_figure(summary, title="t")
    assert [t.name for t in fig.data] == ["MLP spread", "MLP", "logistic spread", "logistic"]
    band, mean = fig.data[0], fig.data[1]
    assert list(mean.x) == [1, 10, 107.7] and np.allclose(mean.y, [0.61, 0.91, 0.97])
    half = summary[0]["half_width"]  # the default band: the 95 % interval of the mean
    assert max(band.y) == pytest.approx(0.97 + half) and min(band.y) == pytest.approx(0.61 - half)
    assert "95 % interval of the mean" in fig.layout.annotations[0].text
    spread = plots.label_budget_figure(summary, spread="std")
    std = summary[0]["std"]
    assert max(spread.data[0].y) == pytest.approx(0.97 + std)
    assert "spread" in spread.layout.annotations[0].text
    assert band.fill == "toself" and band.mode == "lines" and not band.showlegend
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.ticktext) == ["1", "10", "all"]
    ranged = plots.label_budget_figure(summary, spread="range")
    assert min(ranged.data[0].y) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="spread"):
        plots.label_budget_figure(summary, spread="iqr")


def _small_mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


@pytest.fixture(scope="module")
def digit_splits():
    from transferkit.foundations.data import train_val_test_split

    return train_val_test_split(*load_digits(), seed=0)


def test_label_budget_explorer_retrains_when_the_slider_moves(digit_splits):
    panel = widgets.label_budget_explorer(digit_splits, _small_mlp, budgets=(1, 3, None),
                                          value=3, steps=40)
    slider = panel.controls["labels per class"]
    assert list(slider.options) == ["1", "3", "all"] and not slider.continuous_update
    title = panel.figure.layout.title.text
    assert title.startswith("3 labels per class (30 training images)")
    before = [list(t.y) for t in panel.figure.data]
    slider.value = "1"
    assert panel.figure.layout.title.text.startswith("1 label per class (10 training images)")
    after = [list(t.y) for t in panel.figure.data]
    assert after != before and len(after[0]) == 40  # 40 steps of one batch of 10
    slider.value = "all"
    assert panel.figure.layout.title.text.startswith(
        f"all labels ({len(digit_splits.train)} training images)")
    slider.value = "3"
    assert panel.figure.layout.title.text == title  # seeded: the same run again
    assert [list(t.y) for t in panel.figure.data] == before
    assert panel.status.value == ""


def test_label_budget_explorer_shows_overfitting_at_one_label(digit_splits):
    panel = widgets.label_budget_explorer(digit_splits, _small_mlp, budgets=(1, None), value=1,
                                          steps=150, lr=1e-2)
    names = [t.name for t in panel.figure.data]
    train_acc = panel.figure.data[names.index("train", 1)].y  # the accuracy panel's traces
    val_acc = panel.figure.data[len(names) - 1].y
    assert train_acc[-1] == 1.0 and val_acc[-1] < 0.8


def test_label_budget_explorer_errors_show_in_the_widget(digit_splits, monkeypatch):
    panel = widgets.label_budget_explorer(digit_splits, _small_mlp, budgets=(1, 3), value=1,
                                          steps=5)

    def broken(*args, **kwargs):
        raise ValueError("cannot draw")

    monkeypatch.setattr(plots, "history_figure", broken)
    panel.controls["labels per class"].value = "3"
    assert "ValueError: cannot draw" in panel.status.value


def test_label_budget_explorer_bad_arguments(digit_splits):
    with pytest.raises(ValueError, match="not one of the budgets"):
        widgets.label_budget_explorer(digit_splits, _small_mlp, budgets=(1, 3), value=5)
    with pytest.raises(ValueError, match="smallest class"):
        widgets.label_budget_explorer(digit_splits, _small_mlp, budgets=(1, 1000), value=1)


# --- lesson 06: choosing a strategy -------------------------------------------------------


def _schedules():
    from transferkit.foundations import schedules

    return {"constant": schedules.constant(), "cosine": schedules.cosine(),
            "step": schedules.step_decay((0.5,), 0.1)}


def test_schedule_figure_draws_lr_times_the_multipliers():
    chosen = _schedules()
    fig = plots.schedule_figure(chosen, 20, lr=3e-3)
    assert [t.name for t in fig.data] == list(chosen)
    for trace, schedule in zip(fig.data, chosen.values(), strict=True):
        assert list(trace.x) == list(range(20))
        assert np.allclose(trace.y, [3e-3 * m for m in schedule.values(20)])
        assert trace.opacity == 1.0
    assert np.allclose(fig.data[2].y, [3e-3] * 10 + [3e-4] * 10)
    assert fig.data[1].y[0] == pytest.approx(3e-3) and fig.data[1].y[-1] < 1e-4


def test_schedule_figure_highlight_makes_the_others_faint():
    fig = plots.schedule_figure(_schedules(), 10, highlight="cosine")
    opacity = {t.name: t.opacity for t in fig.data}
    width = {t.name: t.line.width for t in fig.data}
    assert opacity["cosine"] == 1.0 and opacity["constant"] < 1.0 and opacity["step"] < 1.0
    assert width["cosine"] > width["constant"]
    with pytest.raises(KeyError, match="no schedule 'cosin'.*'cosine'"):
        plots.schedule_figure(_schedules(), 10, highlight="cosin")
    with pytest.raises(ValueError, match="no schedules"):
        plots.schedule_figure({}, 10)


def _board():
    return [
        {"method": "full", "mean": 0.95, "half_width": 0.01, "std": 0.004, "n": 3,
         "seconds_per_epoch": 0.2, "trainable_params": 2000.0},
        {"method": "linear probe", "mean": 0.90, "half_width": 0.03, "std": 0.012, "n": 3,
         "seconds_per_epoch": 0.01, "trainable_params": 50.0},
    ]


def test_cost_figure_puts_each_candidate_at_its_cost_and_accuracy():
    fig = plots.cost_figure(_board())
    (trace,) = fig.data
    assert list(trace.x) == [0.2, 0.01] and list(trace.y) == [0.95, 0.90]
    assert list(trace.error_y.array) == [0.01, 0.03]  # the 95 % intervals, not the spread
    assert "95 % interval" in fig.layout.yaxis.title.text
    assert list(trace.text) == ["full", "linear probe"]
    params = plots.cost_figure(_board(), cost="trainable_params").data[0]
    assert list(params.x) == [2000.0, 50.0]
    with pytest.raises(KeyError, match="lack 'seconds'"):
        plots.cost_figure(_board(), cost="seconds")
    with pytest.raises(ValueError, match="empty"):
        plots.cost_figure([])
