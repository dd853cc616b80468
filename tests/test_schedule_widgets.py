"""Lesson 06's schedule lab and the selection tables, without a browser."""

import re

import pytest

from transferkit.course import widgets
from transferkit.foundations.data import Data, load_digits
from transferkit.methods.selection import rows_html
from transferkit.vision.backbones import small_cnn


def table_text(html: str) -> str:
    """The text a browser's ``textContent`` gives for ``html``: the tags dropped, nothing added."""
    return re.sub(r"<[^>]+>", "", html)


def small_task():
    digits = load_digits(images=True)
    train = Data(digits.x[:100], digits.y[:100])
    val = Data(digits.x[100:160], digits.y[100:160])
    return train, val


def test_schedule_lab_redraws_the_figure_when_a_control_moves():
    lab = widgets.schedule_lab(steps=100)
    assert len(lab.box.children[0].children) == 4  # no train button without a model and data
    title = lab.figure.layout.title.text
    assert title == "slanted_triangular: the learning rate at each of 100 steps"
    lab.controls["steps"].value = 120
    assert lab.figure.layout.title.text.endswith("each of 120 steps")
    lab.controls["schedule"].value = "cosine"
    assert lab.figure.layout.title.text.startswith("cosine:")
    assert "cosine: mean rate" in lab.status.value


def test_schedule_lab_train_adds_a_run_whose_text_reads_as_words():
    train, val = small_task()
    lab = widgets.schedule_lab(lambda: small_cnn(10, width=4), train, val, steps=20, lr=3e-3)
    assert "press train to try it" in lab.status.value and not lab.runs
    lab.controls["train"].click()
    assert len(lab.runs) == 1 and 0.0 <= lab.runs[0]["val_accuracy"] <= 1.0
    assert lab.runs[0]["schedule"] == "slanted_triangular" and lab.runs[0]["steps"] == 20
    # What a browser test (and a screen reader) reads: cells separated by white space.
    text = table_text(lab.status.value)
    assert re.search(r"validation accuracy\s+slanted_triangular\s+3e-03\s+20\s+\d\.\d{3}", text)
    assert not lab.controls["train"].disabled


def test_schedule_lab_asks_for_all_three_of_model_train_and_val():
    train, _ = small_task()
    with pytest.raises(ValueError, match="pass all of make_model, train and val"):
        widgets.schedule_lab(lambda: small_cnn(10), train)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        widgets.schedule_lab(schedule="linear")


def test_rows_html_cells_read_as_separate_words():
    html = rows_html([{"method": "full", "val_accuracy": 0.9271}, {"method": "scratch",
                                                                  "val_accuracy": 0.91}])
    assert re.search(r"method\s+val_accuracy\s+full\s+0\.927\s+scratch\s+0\.910", table_text(html))
    assert rows_html([]) == "<p>(no rows)</p>"
    assert "&lt;b&gt;" in rows_html([{"method": "<b>"}])  # names are escaped
