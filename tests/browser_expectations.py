"""What each lesson must show and do in a real JupyterLab (used by ``test_browser.py``).

This is the one place where per-lesson browser expectations live. Every lesson in
``lessons/`` is opened and run by the browser test, as the learner gets it from
``transferkit lab`` (the student version: each exercise's answer is ``...``), whether or not
it has an entry here: all code cells must execute, no output may be an error, and every
exercise's check must show ``NOT YET <name>: no answer yet`` (`unanswered`). An entry adds:

* ``selectors``: CSS selectors (Playwright syntax) that must each match at least one
  visible element inside the notebook after all cells ran, e.g. ``".widget-slider"``;
* ``interactions``: things to do to the widgets, each followed by a check that the page
  responded (the text of a watched element changes, optionally to a given pattern).

To add a lesson, add one entry to ``EXPECTATIONS``, e.g.::

    "03_finetune.ipynb": LessonExpectation(
        selectors=(WIDGET_SLIDER, PLOTLY_PLOT),
        interactions=(
            press_slider("epoch", watch=plot_title_beside("epoch"), expect=r"epoch 2\\b"),
            choose("model", "frozen", watch=plot_title_beside("model")),
        ),
    ),

Selectors are scoped to the notebook panel. ``expect``/``before`` are regular
expressions searched (``re.search``) in the watched element's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# Widgets as ipywidgets 8 / plotly render them in JupyterLab 4.
WIDGET_SLIDER = ".widget-slider"
WIDGET_DROPDOWN = ".widget-dropdown"
WIDGET_BUTTON = ".widget-button"
WIDGET_CHECKBOX = ".widget-checkbox"
WIDGET_TEXT = ".widget-text"
PLOTLY_PLOT = ".js-plotly-plot"
# The title of a plotly figure is an SVG <text class="gtitle">.
PLOTLY_TITLE = ".js-plotly-plot .gtitle"
# Photos in a plotly figure (plots.photo_grid) are SVG <image> elements.
PLOTLY_IMAGE = ".js-plotly-plot image"
# The one-line summary some widgets show under their controls (transferkit.course.widgets).
READOUT = ".transferkit-readout"
# The tables of what each stage of a fine-tuning strategy trains (widgets.finetune_lab).
STAGES = ".transferkit-stages"


def unanswered(name: str) -> str:
    """Selector of the output of ``check(name, ...)`` in a student version, before the learner
    answers: the stub hands the check ``...``, and the check says NOT YET
    (`transferkit.course.checks` shows the result as ``<div>NOT YET name: no answer yet:
    ...</div>``)."""
    if '"' in name:
        raise ValueError(f"name must not contain a double quote: {name!r}")
    return f'.jp-OutputArea-output:has-text("NOT YET {name}: no answer yet")'


def _label(description: str) -> str:
    """Selector of an ipywidget's description label (``<label class="widget-label">``)."""
    if '"' in description:
        raise ValueError(f"description must not contain a double quote: {description!r}")
    return f'.widget-label:text-is("{description}")'


def _described(widget_class: str, description: str) -> str:
    """Selector of the ipywidget of ``widget_class`` whose description is ``description``."""
    return f"{widget_class}:has({_label(description)})"


def plot_title_beside(description: str) -> str:
    """Selector of the title of the plotly figure in the same ``VBox`` as the control whose
    description is ``description`` (lessons show static plotly figures too, so a bare
    ``PLOTLY_TITLE`` may match another figure)."""
    return f".widget-vbox:has({_label(description)}) {PLOTLY_TITLE}"


def readout_beside(description: str) -> str:
    """Selector of the readout line in the same ``VBox`` as the control labelled
    ``description``."""
    return f".widget-vbox:has({_label(description)}) {READOUT}"


def stages_beside(description: str) -> str:
    """Selector of the per-stage trainable reports (`transferkit.course.widgets.finetune_lab`) in
    the same ``VBox`` as the control labelled ``description``."""
    return f".widget-vbox:has({_label(description)}) {STAGES}"


@dataclass(frozen=True)
class Interaction:
    """Operate one control, then require the text of ``watch`` to change.

    ``action``:
      * ``"keys"``: click ``control`` (e.g. a slider's handle) and press ``keys`` in turn;
      * ``"select"``: pick ``option`` (an option label, or an index when an int) in the
        ``<select>`` matched by ``control``;
      * ``"click"``: click ``control`` once (e.g. a checkbox, or a button: `press_button`);
      * ``"fill"``: replace the text in the ``<input>`` matched by ``control`` with ``text``
        and press Enter (a Text widget: `type_into`).
    ``watch``: selector of the element whose text must differ from its text before the
    action, within ``timeout_ms``; if ``expect`` is given it must also match the new text,
    and ``before`` (if given) must match the text before the action. ``control`` and
    ``watch`` must each match exactly one element.
    """

    control: str
    watch: str
    action: Literal["keys", "select", "click", "fill"] = "keys"
    keys: tuple[str, ...] = ("ArrowRight",)
    option: str | int | None = None
    text: str | None = None
    expect: str | None = None
    before: str | None = None
    timeout_ms: int = 20_000

    def __post_init__(self) -> None:
        if self.action not in ("keys", "select", "click", "fill"):
            raise ValueError(f"unknown action {self.action!r}")
        if self.action == "fill" and self.text is None:
            raise ValueError("a 'fill' interaction needs a text")
        if self.action == "select" and self.option is None:
            raise ValueError("a 'select' interaction needs an option")
        if self.action == "keys" and not self.keys:
            raise ValueError("a 'keys' interaction needs at least one key")
        for pattern in (self.expect, self.before):
            if pattern is not None:
                re.compile(pattern)

    def describe(self) -> str:
        if self.action == "keys":
            what = f"press {'+'.join(self.keys)}"
        elif self.action == "click":
            what = "click"
        elif self.action == "fill":
            what = f"type {self.text!r} and Enter"
        else:
            what = f"select {self.option!r}"
        return f"{what} on {self.control!r}, watching {self.watch!r}"


def press_slider(
    description: str,
    *,
    watch: str,
    keys: tuple[str, ...] = ("ArrowRight",),
    expect: str | None = None,
    before: str | None = None,
) -> Interaction:
    """Click the handle of the IntSlider/FloatSlider labelled ``description`` and press keys."""
    return Interaction(
        control=f"{_described(WIDGET_SLIDER, description)} .noUi-handle",
        watch=watch,
        action="keys",
        keys=keys,
        expect=expect,
        before=before,
    )


def choose(
    description: str,
    option: str | int,
    *,
    watch: str,
    expect: str | None = None,
    before: str | None = None,
) -> Interaction:
    """Pick ``option`` in the Dropdown labelled ``description``."""
    return Interaction(
        control=f"{_described(WIDGET_DROPDOWN, description)} select",
        watch=watch,
        action="select",
        option=option,
        expect=expect,
        before=before,
    )


def tick(
    description: str,
    *,
    watch: str,
    expect: str | None = None,
    before: str | None = None,
) -> Interaction:
    """Click the Checkbox whose description is ``description`` (ticks or unticks it)."""
    if '"' in description:
        raise ValueError(f"description must not contain a double quote: {description!r}")
    return Interaction(
        control=f'{WIDGET_CHECKBOX}:has(:text-is("{description}")) input[type="checkbox"]',
        watch=watch,
        action="click",
        expect=expect,
        before=before,
    )


def press_button(
    description: str,
    *,
    watch: str,
    expect: str | None = None,
    before: str | None = None,
    timeout_ms: int = 20_000,
) -> Interaction:
    """Click the Button whose text is ``description`` (e.g. "train"); ``timeout_ms`` leaves
    time for the work it starts."""
    if '"' in description:
        raise ValueError(f"description must not contain a double quote: {description!r}")
    return Interaction(
        control=f'{WIDGET_BUTTON}:text-is("{description}")',
        watch=watch,
        action="click",
        expect=expect,
        before=before,
        timeout_ms=timeout_ms,
    )


def type_into(
    description: str,
    text: str,
    *,
    watch: str,
    expect: str | None = None,
    before: str | None = None,
    timeout_ms: int = 20_000,
) -> Interaction:
    """Replace the text of the Text widget labelled ``description`` with ``text`` and press
    Enter (which submits a Text with ``continuous_update=False``)."""
    return Interaction(
        control=f"{_described(WIDGET_TEXT, description)} input",
        watch=watch,
        action="fill",
        text=text,
        expect=expect,
        before=before,
        timeout_ms=timeout_ms,
    )


@dataclass(frozen=True)
class LessonExpectation:
    """What must be visible after running all cells, and how the widgets must respond."""

    selectors: tuple[str, ...] = ()
    interactions: tuple[Interaction, ...] = ()


EXPECTATIONS: dict[str, LessonExpectation] = {
    # The digits browser (transferkit.course.widgets.digits_browser): a "class" Dropdown, a "page"
    # IntSlider (continuous_update=False) and a plotly FigureWidget titled
    # "images 1–30 of 1797". One step of the slider shows the next 30 images; picking
    # class "3" shows the first page of its 183 images.
    "00_welcome.ipynb": LessonExpectation(
        selectors=(WIDGET_SLIDER, WIDGET_DROPDOWN, PLOTLY_PLOT, plot_title_beside("page")),
        interactions=(
            press_slider(
                "page",
                watch=plot_title_beside("page"),
                before=r"images 1–30 of 1797",
                expect=r"images 31–60 of 1797",
            ),
            choose(
                "class",
                "3",
                watch=plot_title_beside("class"),
                expect=r"images 1–30 of 183\b",
            ),
        ),
    ),
    # The gradient-descent explorer (widgets.gd_explorer("quadratic")): a "learning rate"
    # FloatLogSlider (log10 step 0.05, starting at 0.1 = half of 2/L) whose readout names α
    # and the stability limit; and the optimiser race (widgets.optimizer_race) with a
    # "surface" Dropdown and a "race steps" slider, titled "<surface>: <n> steps from ...".
    "01_gradient_descent.ipynb": LessonExpectation(
        selectors=(WIDGET_SLIDER, WIDGET_DROPDOWN, PLOTLY_PLOT, readout_beside("learning rate"),
                   plot_title_beside("learning rate"), plot_title_beside("surface")),
        interactions=(
            press_slider(
                "learning rate",
                watch=readout_beside("learning rate"),
                before=r"α = 0\.1 is 0\.50× the stability limit 2/L = 0\.2\b",
                expect=r"α = 0\.112 is 0\.56×",
            ),
            press_slider(
                "learning rate",
                watch=plot_title_beside("learning rate"),
                expect=r"quadratic: α = 0\.126",
            ),
            press_slider(
                "race steps",
                watch=plot_title_beside("surface"),
                before=r"rosenbrock: 300 steps",
                expect=r"rosenbrock: 310 steps",
            ),
            choose(
                "surface",
                "himmelblau",
                watch=plot_title_beside("surface"),
                expect=r"himmelblau: 310 steps",
            ),
        ),
    ),
    # The label-budget explorer (transferkit.course.widgets.label_budget_explorer): a "labels per
    # class" SelectionSlider (1, 3, 5, 10, 50, all; continuous_update=False) starting at 3,
    # above a FigureWidget of train/validation curves titled "3 labels per class (30 training
    # images): …". One step right trains a fresh network on 5 labels per class and redraws.
    "02_training_a_network.ipynb": LessonExpectation(
        selectors=(WIDGET_SLIDER, PLOTLY_PLOT, plot_title_beside("labels per class")),
        interactions=(
            press_slider(
                "labels per class",
                watch=plot_title_beside("labels per class"),
                before=r"^3 labels per class \(30 training images\)",
                expect=r"^5 labels per class \(50 training images\)",
            ),
        ),
    ),
    # The autoencoder explorer (transferkit.course.widgets.autoencoder_explorer): a "code size"
    # Dropdown, a "denoising" Checkbox and a FigureWidget of reconstructions titled
    # "code size 2, denoising off: test error … (PCA …)"; a 2-D code map and a picked-image
    # figure sit outside that VBox. The lesson passes in the models it trained (code sizes
    # 2-32, and 8 with denoising), so both changes below redraw from the cache at once.
    "03_autoencoders.ipynb": LessonExpectation(
        selectors=(WIDGET_DROPDOWN, WIDGET_CHECKBOX, PLOTLY_PLOT, plot_title_beside("code size")),
        interactions=(
            choose(
                "code size",
                "8",
                watch=plot_title_beside("code size"),
                before=r"code size 2, denoising off: test error",
                expect=r"code size 8, denoising off: test error",
            ),
            tick(
                "denoising",
                watch=plot_title_beside("code size"),
                expect=r"code size 8, denoising on: test error",
            ),
        ),
    ),
    # The fine-tuning lab (transferkit.course.widgets.finetune_lab): a "strategy" Dropdown
    # (starting at lp_ft), "labels per class" / "learning rate" / "epochs per stage" sliders, a
    # "train" Button and a progress bar; under them one trainable-report table per stage
    # (.transferkit-stages: "stage 1 of 2: linear probe" …), the readout line, and a
    # FigureWidget of the curves. Choosing "full" redraws the tables at once (no training);
    # "train" fine-tunes and the readout gives the validation and test accuracy.
    "04_fine_tuning.ipynb": LessonExpectation(
        selectors=(WIDGET_DROPDOWN, WIDGET_SLIDER, WIDGET_BUTTON, PLOTLY_PLOT,
                   stages_beside("strategy"), readout_beside("strategy")),
        interactions=(
            choose(
                "strategy",
                "full",
                watch=stages_beside("strategy"),
                before=r"^stage 1 of 2: linear probe",
                expect=r"^stage 1 of 1: fine-tune all",
            ),
            press_button(
                "train",
                watch=readout_beside("strategy"),
                before=r"press train to fine-tune with full on 10 labels per class",
                expect=r"validation accuracy \d\.\d{3}, test accuracy \d\.\d{3}",
            ),
        ),
    ),
    # First, "use it as is": EfficientNet-Lite0's top 3 for seven photos (plots.photo_grid,
    # titled "EfficientNet-Lite0's top 3, as it is ..."). Then the transferability lab.
    "05_cnn_transfer.ipynb": LessonExpectation(
        selectors=(PLOTLY_IMAGE, f'{PLOTLY_TITLE}:has-text("top 3, as it is")', WIDGET_SLIDER,
                   WIDGET_BUTTON, PLOTLY_PLOT, readout_beside("layers copied (n)")),
        interactions=(
            press_slider(
                "layers copied (n)",
                keys=("ArrowLeft",),
                watch=readout_beside("layers copied (n)"),
                before=r"press train: frozen copy of the first 4 group\(s\)",
                expect=r"press train: frozen copy of the first 3 group\(s\) \(conv1, conv2, "
                       r"conv3\), 3 labels per class",
            ),
            press_button(
                "train",
                watch=readout_beside("layers copied (n)"),
                expect=r"target test accuracy \d\.\d{3} \(the study: mean \d\.\d{3} over \d+ seeds",
            ),
        ),
    ),
    "06_choosing_a_strategy.ipynb": LessonExpectation(
        selectors=(WIDGET_SLIDER, WIDGET_BUTTON, PLOTLY_PLOT, readout_beside("steps")),
        interactions=(
            press_slider(
                "steps",
                watch=plot_title_beside("steps"),
                before=r"slanted_triangular: the learning rate at each of 100 steps",
                expect=r"slanted_triangular: the learning rate at each of 120 steps",
            ),
            press_button(
                "train",
                watch=readout_beside("steps"),
                before=r"press train to try it$",
                expect=r"validation accuracy\s+slanted_triangular\s+3e-03\s+120\s+\d\.\d{3}",
            ),
        ),
    ),
    # The attention explorer (transferkit.course.widgets.attention_explorer on "A three-hour cinema
    # master class."): "layer" and "head" IntSliders (from 1) over a FigureWidget heatmap
    # titled "layer 1, head 1: how much each token attends to each other token", and a
    # readout naming where [CLS] looks. Then the prompt lab (widgets.prompt_lab): "rotten
    # prompt" and "fresh prompt" Text boxes (continuous_update=False), a "score" Button and
    # a readout "validation accuracy 0.xxx with these prompts (majority class: …)". Enter in
    # a box scores the validation snippets (encoded once, at construction) with the wording.
    "07_transformers.ipynb": LessonExpectation(
        selectors=(WIDGET_SLIDER, PLOTLY_PLOT, readout_beside("layer"),
                   plot_title_beside("layer"), f"{WIDGET_TEXT} input",
                   readout_beside("fresh prompt")),
        interactions=(
            press_slider(
                "layer",
                watch=plot_title_beside("layer"),
                before=r"layer 1, head 1",
                expect=r"layer 2, head 1",
            ),
            type_into(
                "fresh prompt",
                "a brilliant, moving film",
                watch=readout_beside("fresh prompt"),
                before=r"validation accuracy \d\.\d{3}",
                expect=r"validation accuracy \d\.\d{3}",
            ),
        ),
    ),
}
