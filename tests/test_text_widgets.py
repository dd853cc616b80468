"""Lesson 07's figures and controls (attention explorer, prompt lab), without a browser,
on the real MiniLM and 120 validation snippets."""

import html
import re

import pytest
import torch

from transferkit.course import plots, widgets
from transferkit.course.widgets import text as text_widgets
from transferkit.foundations.data import Data
from transferkit.text.attention import attention_maps
from transferkit.text.model import load_text_model, zero_shot
from transferkit.text.reviews import majority_accuracy, reviews_splits

TEXT = "A three-hour cinema master class."


@pytest.fixture(scope="module")
def minilm():
    return load_text_model(device="cpu")


@pytest.fixture(scope="module")
def val_subset():
    val = reviews_splits().val
    return Data(val.x[:120], val.y[:120], val.classes)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Encodings go to a fresh folder: nothing depends on (or lands in) a user's cache."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))


def readout(panel) -> str:
    """The readout's text as a browser shows it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", panel.status.value))


def readout_accuracy(panel) -> float:
    found = re.search(r"^validation accuracy (\d\.\d{3}) with these prompts", readout(panel))
    assert found, readout(panel)
    return float(found.group(1))


# --- the figures ----------------------------------------------------------------------------


def test_attention_figure_shows_one_head_with_token_labels(minilm):
    maps = attention_maps(minilm, TEXT)
    fig = plots.attention_figure(maps, 1, 4)
    assert fig.layout.title.text == ("layer 2, head 5: how much each token attends to each "
                                     "other token")
    z = torch.tensor(fig.data[0].z)
    assert torch.allclose(z, maps.weights[1, 4]) and torch.allclose(z.sum(1), torch.ones(10))
    assert list(fig.layout.yaxis.ticktext) == maps.tokens == list(fig.layout.xaxis.ticktext)
    with pytest.raises(IndexError, match="layer must be an integer from 0 to 5"):
        plots.attention_figure(maps, 6, 0)


def test_prompt_accuracy_figure_draws_a_bar_per_wording_and_the_floor():
    results = [{"prompts": "a / b", "accuracy": 0.6}, {"prompts": "a / b", "accuracy": 0.7},
               {"prompts": "c / d", "accuracy": 0.8}]
    fig = plots.prompt_accuracy_figure(results, 0.578)
    assert list(fig.data[0].x) == [0.6, 0.7, 0.8]  # equal labels stay separate bars
    assert list(fig.layout.yaxis.ticktext) == ["a / b", "a / b", "c / d"]
    [line] = fig.layout.shapes
    assert line.x0 == line.x1 == 0.578 and line.line.dash == "dash"
    with pytest.raises(ValueError, match="no prompt wordings"):
        plots.prompt_accuracy_figure([], 0.5)
    with pytest.raises(KeyError, match="accuracy"):
        plots.prompt_accuracy_figure([{"prompts": "x"}], 0.5)


# --- the attention explorer -----------------------------------------------------------------


def test_attention_explorer_redraws_when_a_slider_moves(minilm):
    panel = widgets.attention_explorer(minilm, TEXT)
    layer, head = panel.controls["layer"], panel.controls["head"]
    assert (layer.description, layer.min, layer.max) == ("layer", 1, 6)
    assert (head.description, head.min, head.max) == ("head", 1, 12)
    assert panel.figure.layout.title.text.startswith("layer 1, head 1: how much each token")
    first = torch.tensor(panel.figure.data[0].z)
    assert torch.allclose(first.sum(1), torch.ones(len(panel.maps.tokens)), atol=1e-5)
    assert "class='transferkit-readout'" in panel.status.value
    assert re.fullmatch(r"layer 1, head 1: \[CLS\] attends most to '[^']+' \(\d\.\d\d\)",
                        readout(panel))

    layer.value = 2
    assert panel.figure.layout.title.text.startswith("layer 2, head 1:")
    second = torch.tensor(panel.figure.data[0].z)
    assert not torch.allclose(first, second)
    assert torch.allclose(second, panel.maps.weights[1, 0])
    head.value = 5
    assert panel.figure.layout.title.text.startswith("layer 2, head 5:")
    assert torch.allclose(torch.tensor(panel.figure.data[0].z), panel.maps.weights[1, 4])
    token, share = panel.maps.most_attended(1, 4)
    assert readout(panel) == f"layer 2, head 5: [CLS] attends most to {token!r} ({share:.2f})"


# --- the prompt lab -------------------------------------------------------------------------


def test_prompt_lab_starts_with_the_default_prompts_accuracy(minilm, val_subset):
    panel = widgets.prompt_lab(minilm, val_subset)
    expected = zero_shot(minilm, val_subset.x, {"rotten": "a bad movie",
                                                "fresh": "a good movie"})
    accuracy = float((expected == val_subset.y).float().mean())
    assert readout_accuracy(panel) == pytest.approx(accuracy, abs=5e-4)
    majority = majority_accuracy(val_subset.y)
    assert f"(majority class: {majority:.3f}; n = 120 snippets)" in panel.status.value
    assert [box.description for box in list(panel.controls.values())[:2]] == [
        "rotten prompt", "fresh prompt"]
    assert not panel.controls["fresh prompt"].continuous_update
    assert len(panel.tried) == 1 and len(panel.figure.data[0].x) == 1


def test_typing_a_prompt_rescored_and_adds_a_bar(minilm, val_subset, monkeypatch):
    panel = widgets.prompt_lab(minilm, val_subset)
    before = readout_accuracy(panel)
    calls = []
    real_encode = text_widgets.encode
    monkeypatch.setattr(text_widgets, "encode",
                        lambda model, texts, **kw: calls.append(len(texts))
                        or real_encode(model, texts, **kw))
    # Swap the wordings in two steps: then every prediction flips, and so does the accuracy.
    panel.controls["rotten prompt"].value = "a good movie"
    assert calls == [2]  # only the two prompts were encoded: the snippets are kept
    panel.controls["fresh prompt"].value = "a bad movie"
    assert readout_accuracy(panel) == pytest.approx(1 - before, abs=1.5e-3)
    assert readout_accuracy(panel) != before
    assert readout(panel).endswith("rotten: 'a good movie' / fresh: 'a bad movie'")
    assert calls == [2, 2]
    assert len(panel.tried) == 3 and len(panel.figure.data[0].x) == 3
    assert list(panel.figure.layout.yaxis.ticktext)[2] == (
        "rotten: 'a good movie' / fresh: 'a bad movie'")
    assert panel.figure.layout.title.text == "3 prompt wording(s) tried"

    panel.controls["score"].click()  # the same wordings again: no new bar
    assert len(panel.tried) == 3 and calls == [2, 2, 2]


def test_an_empty_prompt_shows_an_error_not_a_traceback(minilm, val_subset):
    panel = widgets.prompt_lab(minilm, val_subset)
    panel.controls["rotten prompt"].value = "   "
    assert readout(panel).startswith("Error: ValueError: the rotten prompt is empty")
    assert len(panel.tried) == 1
    panel.controls["rotten prompt"].value = "a dull, boring film"
    assert readout_accuracy(panel) >= 0 and len(panel.tried) == 2


def test_prompt_lab_refuses_prompts_that_do_not_fit_the_labels(minilm, val_subset):
    with pytest.raises(ValueError, match="list the prompts in that order"):
        widgets.prompt_lab(minilm, val_subset, {"fresh": "a good movie", "rotten": "a bad one"})
    with pytest.raises(ValueError, match="one wording per label"):
        widgets.prompt_lab(minilm, val_subset, {"fresh": "a good movie"})


def test_step_curve_figure_draws_a_line_per_run_and_the_floor():
    curve = [{"step": 0, "accuracy": 0.55}, {"step": 8, "accuracy": 0.52},
             {"step": 16, "accuracy": 0.70}]
    fig = plots.step_curve_figure({"fresh head": curve, "LP-FT": curve[:2]}, majority=0.58)
    assert [t.name for t in fig.data] == ["fresh head", "LP-FT"]
    assert list(fig.data[0].x) == [0, 8, 16] and list(fig.data[0].y) == [0.55, 0.52, 0.70]
    assert any("0.580" in a.text for a in fig.layout.annotations)
    with pytest.raises(KeyError, match="'step' and 'accuracy'"):
        plots.step_curve_figure({"bad": [{"step": 0}]})
    with pytest.raises(ValueError, match="no curves"):
        plots.step_curve_figure({})


def test_live_and_stored_figure_tells_live_from_stored():
    def summary(method, means):
        return [{"method": method, "budget": b, "per_class": b, "mean": m, "half_width": 0.02,
                 "std": 0.01, "n": 5, "min": m - 0.02, "max": m + 0.02}
                for b, m in zip((8, 32, 128), means, strict=True)]

    stored = summary("full", (0.6, 0.7, 0.75)) + summary("TF-IDF", (0.55, 0.6, 0.65))
    live = [r for r in summary("full", (0.61, 0.69, 0.76)) if r["budget"] == 128]
    fig = plots.live_and_stored_figure(live, stored, stored_label="stored: 2026-12-04, cpu")
    names = [t.name for t in fig.data]
    assert "full (stored)" in names and "TF-IDF (stored)" in names and "full (live)" in names
    live_trace = fig.data[names.index("full (live)")]
    stored_trace = fig.data[names.index("full (stored)")]
    assert list(live_trace.x) == [128] and list(live_trace.y) == [0.76]
    assert live_trace.marker.color == stored_trace.line.color  # one colour per method
    assert stored_trace.line.dash == "dot"
    assert any("stored: 2026-12-04" in a.text for a in fig.layout.annotations)
