"""Lesson 03's figure builders and the autoencoder explorer, without a browser."""

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plotly.callbacks import Points

from transferkit.course import plots, widgets
from transferkit.foundations.data import Data, load_digits, train_val_test_split
from transferkit.methods.autoencoder import Autoencoder, pretrain


@pytest.fixture(scope="module")
def small():
    x, y = load_digits()
    splits = train_val_test_split(x, y, seed=0)
    return Data(splits.train.x[:300], splits.train.y[:300], splits.train.classes), splits.test


def test_reconstruction_grid_stacks_rows_with_names_and_captions():
    x, xhat = torch.rand(4, 64), torch.rand(4, 64)
    fig = plots.reconstruction_grid({"input": x, "reconstruction": xhat},
                                    {"reconstruction": ["a", "b", "c", "d"]}, title="t")
    z = np.array(fig.data[0].z, dtype=float)
    # 2 rows of 8×8 images, each with a 2-px caption strip above, 1-px gaps
    assert z.shape == (2 * 11 - 1, 4 * 9 - 1)
    assert np.allclose(z[2:10, 9:17], x[1].reshape(8, 8).numpy(), atol=5e-4)  # 3 decimals
    assert np.allclose(z[13:21, 0:8], xhat[0].reshape(8, 8).numpy(), atol=5e-4)
    texts = [a.text for a in fig.layout.annotations]
    assert texts[4:8] == ["a", "b", "c", "d"] and texts[-2:] == ["input", "reconstruction"]


@pytest.mark.parametrize(
    ("rows", "captions", "message"),
    [({}, None, "at least one row"),
     ({"a": torch.rand(2, 64), "b": torch.rand(3, 64)}, None, "same number"),
     ({"a": torch.rand(2, 64)}, {"b": ["x", "y"]}, "not in"),
     ({"a": torch.rand(2, 64)}, {"a": ["x"]}, "2 images but 1 captions")],
)
def test_reconstruction_grid_bad_input(rows, captions, message):
    with pytest.raises(ValueError, match=message):
        plots.reconstruction_grid(rows, captions)


def test_code_size_figure():
    fig = plots.code_size_figure([2, 8, 32], {"PCA": [0.05, 0.02, 0.003],
                                              "autoencoder": [0.03, 0.015, 0.006]})
    assert [t.name for t in fig.data] == ["PCA", "autoencoder"]
    assert list(fig.data[1].y) == [0.03, 0.015, 0.006] and fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="2 errors for 3 code sizes"):
        plots.code_size_figure([2, 8, 32], {"PCA": [1, 2]})


def test_code_map_figure_one_trace_per_class_with_indices():
    points = torch.arange(12.0).reshape(6, 2)
    fig = plots.code_map_figure(points, [1, 0, 1, 2, 0, 1], class_names=["a", "b", "c"])
    assert [t.name for t in fig.data] == ["a", "b", "c"]
    assert list(fig.data[1].customdata) == [0, 2, 5]
    assert list(fig.data[1].x) == [0.0, 4.0, 10.0]
    with pytest.raises(ValueError, match="project longer codes"):
        plots.code_map_figure(torch.rand(5, 3), [0] * 5)


def test_interpolation_figure_captions():
    fig = plots.interpolation_figure(torch.rand(5, 64))
    assert [a.text for a in fig.layout.annotations] == ["t=0.00", "t=0.25", "t=0.50", "t=0.75",
                                                        "t=1.00"]


def click(panel, trace_index, point_index):
    trace = panel.map.data[trace_index]
    trace._dispatch_on_click(
        Points(point_inds=[point_index], xs=[0.0], ys=[0.0], trace_name=trace.name,
               trace_index=trace_index),
        None,
    )


def test_explorer_trains_caches_and_redraws(small):
    train, test = small
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(2, 8), epochs=3)
    size, denoise = panel.controls["code size"], panel.controls["denoising"]
    title = panel.figure.layout.title.text
    assert title.startswith("code size 2, denoising off: test error") and "PCA" in title
    assert panel.status.value.startswith("trained in")
    assert panel.map.layout.title.text.startswith("2-D map of the code (size 2: the code itself")
    first = panel.cache[(2, False)]

    size.value = 8
    assert panel.figure.layout.title.text.startswith("code size 8, denoising off")
    assert "principal components" in panel.map.layout.title.text
    assert len(panel.map.data) == 10
    denoise.value = True
    assert panel.figure.layout.title.text.startswith("code size 8, denoising on")
    texts = [a.text for a in panel.figure.layout.annotations]
    assert texts[-3:] == ["input", "noisy input", "reconstruction"]
    model = panel.cache[(8, True)].eval()
    noisy = np.array(panel.figure.data[0].z, dtype=float)[13:21, 0:8]  # first noisy input
    with torch.no_grad():
        out = model(torch.tensor(noisy, dtype=torch.float32).reshape(1, 64))
    clean = test.x[0]
    expected = float(((out[0] - clean) ** 2).mean())  # caption: error against the clean input
    assert float(texts[20]) == pytest.approx(expected, abs=2e-3)  # rows of 10 captions
    denoise.value = False
    assert panel.status.value == "from the cache"
    size.value = 2
    assert panel.status.value == "from the cache" and panel.model is first
    assert set(panel.cache) == {(2, False), (8, False), (8, True)}


def test_explorer_click_on_the_map_shows_the_decoded_image(small):
    train, test = small
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(2, 4), epochs=2)
    assert panel.picked.layout.title.text == "click a point in the map"
    trace = panel.map.data[3]
    index = int(trace.customdata[2])
    click(panel, 3, 2)
    assert panel.picked.layout.title.text == f"example {index} (class 3)"
    z = np.array(panel.picked.data[0].z, dtype=float)
    with torch.no_grad():
        decoded = panel.model.eval()(test.x[index:index + 1])[0].reshape(8, 8).numpy()
    assert np.allclose(z[2:10, 0:8], test.x[index].reshape(8, 8).numpy())
    assert np.allclose(z[2:10, 9:17], decoded, atol=1e-6)
    assert not np.allclose(decoded, test.x[index].reshape(8, 8).numpy(), atol=1e-3)
    # callbacks survive a change of settings
    panel.controls["code size"].value = 4
    click(panel, 0, 0)
    assert panel.picked.layout.title.text.startswith("example ")


def test_explorer_uses_models_passed_in(small):
    train, test = small
    torch.manual_seed(0)
    model = pretrain(Autoencoder([64, 16, 2]), train.x, epochs=1, progress=False)
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(2,), models={(2, False): model})
    assert panel.model is model and panel.status.value == "from the cache"
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_explorer_errors_are_shown_in_the_widget(small, monkeypatch):
    train, test = small
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(2, 4), epochs=1)

    def broken(*args, **kwargs):
        raise ValueError("training failed here")

    monkeypatch.setattr("transferkit.methods.autoencoder.pretrain", broken)
    panel.controls["code size"].value = 4
    assert "ValueError: training failed here" in panel.status.value
    with pytest.raises(ValueError, match="both train and test"):
        widgets.autoencoder_explorer(train)


def test_the_explorer_title_is_the_only_one_beside_its_controls(small):
    """The browser test watches the title in the VBox of the controls: it must be unique."""
    import ipywidgets as W

    train, test = small
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(2,), epochs=1)
    vboxes = [w for w in _walk(panel.box) if isinstance(w, W.VBox)
              and any(isinstance(c, W.Dropdown) for c in _walk(w))]
    for vbox in vboxes:
        assert sum(isinstance(c, go.FigureWidget) for c in _walk(vbox)) == 1


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_explorer_code_size_1_draws_the_code_against_the_class(small):
    train, test = small
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(1,), epochs=1)
    assert "size 1: the code against the class" in panel.map.layout.title.text
    assert panel.map.layout.yaxis.title.text.startswith("class")
    for trace in panel.map.data:  # each class's points sit in a band around its index
        label = int(test.y[int(trace.customdata[0])])
        assert np.all(np.abs(np.array(trace.y) - label) <= 0.3)
    with torch.no_grad():
        z = panel.model.eval().encode(test.x)[:, 0].numpy()
    assert np.allclose(panel.map.data[0].x, z[np.array(panel.map.data[0].customdata)], atol=1e-4)


def test_explorer_leaves_the_notebooks_random_state_alone(small):
    train, test = small
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    widgets.autoencoder_explorer(train, test, code_sizes=(2,), epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_explorer_keeps_the_modes_of_models_passed_in(small):
    train, test = small
    model = Autoencoder([64, 16, 2])
    model.decoder = torch.nn.Sequential(torch.nn.BatchNorm1d(2), *model.decoder)
    model.train()
    model.decoder[0].eval()  # frozen statistics, on purpose
    panel = widgets.autoencoder_explorer(train, test, code_sizes=(2,), models={(2, False): model})
    click(panel, 0, 0)
    assert panel.picked.layout.title.text.startswith("example ")
    assert model.training and model.encoder.training and not model.decoder[0].training
