"""Lesson 07's controls: where a transformer's heads look, and how much a prompt's
wording matters."""

from __future__ import annotations

import html
from collections.abc import Mapping

import ipywidgets as W
import torch

from transferkit.course import plots
from transferkit.course.widgets.common import Panel, guarded, show_in
from transferkit.text.attention import attention_maps
from transferkit.text.model import encode
from transferkit.text.reviews import majority_accuracy

DEFAULT_PROMPTS = {"rotten": "a bad movie", "fresh": "a good movie"}


def attention_explorer(text_model, text: str) -> Panel:
    """Every attention head of ``text_model`` on ``text``, one at a time.

    Two sliders pick the layer and the head (counted from 1); the heatmap is
    `transferkit.course.plots.attention_figure` of that head, and the line above it names
    the token ``[CLS]`` attends to most. The maps are computed once
    (`transferkit.text.attention.attention_maps`); moving a slider only redraws.
    """
    maps = attention_maps(text_model, text)
    slider = {"continuous_update": False, "min": 1}
    layer = W.IntSlider(value=1, max=maps.n_layers, description="layer", **slider)
    head = W.IntSlider(value=1, max=maps.n_heads, description="head", **slider)

    def readout() -> str:
        token, share = maps.most_attended(layer.value - 1, head.value - 1)
        line = (f"layer {layer.value}, head {head.value}: {maps.tokens[0]} attends most to "
                f"{token!r} ({share:.2f})")
        return f"<div class='transferkit-readout'>{html.escape(line, quote=False)}</div>"

    panel = Panel([layer, head], plots.attention_figure(maps, 0, 0),
                  title=f"attention explorer: {text}")
    panel.maps = maps
    panel.status.value = readout()

    def redraw() -> None:
        show_in(panel.figure, plots.attention_figure(maps, layer.value - 1, head.value - 1))
        panel.status.value = readout()

    for control in (layer, head):
        control.observe(guarded(panel.status, redraw), names="value")
    panel.controls = {"layer": layer, "head": head}
    return panel


def _check_labels(val, prompts: Mapping[str, str]) -> None:
    if not isinstance(prompts, Mapping) or len(prompts) < 2:
        raise ValueError("prompts must be a dict with one wording per label, in label order, "
                         "e.g. {'rotten': 'a bad movie', 'fresh': 'a good movie'}.")
    if not hasattr(val, "x") or not hasattr(val, "y") or len(val.y) == 0:
        raise TypeError("val must be a labelled Data set of texts (x: the texts, y: the "
                        "labels), e.g. reviews_splits().val.")
    top = int(torch.as_tensor(val.y).max())
    if top >= len(prompts):
        raise ValueError(f"val has labels up to {top}, but there are prompts for only "
                         f"{len(prompts)} labels ({', '.join(prompts)}); give one per label.")
    classes = list(getattr(val, "classes", ()) or ())
    if sorted(classes) == sorted(prompts) and classes != list(prompts):
        raise ValueError(f"the prompts' labels are in the order {list(prompts)}, but val's "
                         f"labels 0, 1, … are {classes}; list the prompts in that order.")


def prompt_lab(text_model, val, prompts: Mapping[str, str] | None = None) -> Panel:
    """Zero-shot classification with prompts you type: which wording works best?

    One text box per label (``prompts``: label → wording, in label order; default
    `DEFAULT_PROMPTS`). Press Enter in a box, or "score", and every snippet of
    ``val`` gets the label whose wording is closest to it in cosine similarity
    (as `transferkit.text.model.zero_shot`); the readout gives the validation accuracy
    beside the majority-class floor, and the figure
    (`transferkit.course.plots.prompt_accuracy_figure`) every wording tried so far.
    The snippets are encoded once and kept; a new wording encodes only the prompts.
    """
    prompts = dict(DEFAULT_PROMPTS if prompts is None else prompts)
    _check_labels(val, prompts)
    y = torch.as_tensor(val.y).long()
    majority = majority_accuracy(y)
    boxes = {label: W.Text(value=str(wording), description=f"{label} prompt",
                           continuous_update=False, style={"description_width": "initial"})
             for label, wording in prompts.items()}
    button = W.Button(description="score", button_style="primary")
    state: dict = {"vectors": None}
    tried: list[dict] = []

    def score() -> tuple[float, str]:
        wordings = [box.value.strip() for box in boxes.values()]
        for label, wording in zip(boxes, wordings, strict=True):
            if not wording:
                example = DEFAULT_PROMPTS.get(label, "a good film")
                raise ValueError(f"the {label} prompt is empty; type a few words that describe "
                                 f"a {label} review, e.g. {example!r}.")
        if state["vectors"] is None:  # the snippets: encoded (or read from the cache) once
            state["vectors"] = encode(text_model, val.x, normalize=True)
        label_vectors = encode(text_model, wordings, normalize=True, cache=False,
                               progress=False)
        predicted = (state["vectors"] @ label_vectors.T).argmax(1)
        accuracy = float((predicted == y).float().mean())
        name = " / ".join(f"{label}: {wording!r}"
                          for label, wording in zip(boxes, wordings, strict=True))
        if all(r["prompts"] != name for r in tried):
            tried.append({"prompts": name, "accuracy": accuracy})
        return accuracy, name

    def readout(accuracy: float, name: str) -> str:
        return (f"<div class='transferkit-readout'>validation accuracy {accuracy:.3f} with these "
                f"prompts (majority class: {majority:.3f}; n = {len(y):,} snippets): "
                f"{html.escape(name, quote=False)}</div>")

    first = score()
    panel = Panel([*boxes.values(), button], plots.prompt_accuracy_figure(tried, majority),
                  title="prompt lab")
    panel.tried = tried
    panel.status.value = readout(*first)

    def rescore() -> None:
        result = score()
        panel.status.value = readout(*result)
        show_in(panel.figure, plots.prompt_accuracy_figure(tried, majority))

    for box in boxes.values():
        box.observe(guarded(panel.status, rescore), names="value")
    button.on_click(guarded(panel.status, rescore))
    panel.controls = {**{box.description: box for box in boxes.values()}, "score": button}
    return panel
