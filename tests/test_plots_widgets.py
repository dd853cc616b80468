import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from transferkit import plots, widgets
from transferkit.data import Data, load_digits


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


def test_live_plot_grows_with_every_epoch():
    from transferkit.train import fit

    x, y = load_digits()
    live = widgets.LivePlot()
    fit(torch.nn.Linear(64, 10), (x[:200], y[:200]), (x[200:300], y[200:300]), epochs=3,
        callbacks=[live], progress=False)
    assert isinstance(live.figure, go.FigureWidget)
    assert list(live.figure.data[0].x) == [1, 2, 3]
