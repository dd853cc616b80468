"""transferkit.foundations.metrics: one definition of accuracy, recall and macro-F1."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from transferkit.foundations.metrics import classification_metrics


def test_the_majority_guesser_is_exposed():
    y = torch.tensor([1] * 58 + [0] * 42)
    m = classification_metrics(y, torch.ones(100, dtype=torch.long), ("rotten", "fresh"))
    assert m["accuracy"] == pytest.approx(0.58)
    assert m["recall_fresh"] == 1.0 and m["recall_rotten"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 * 0.58 / 1.58 + 0) / 2)


def test_it_matches_scikit_learn_on_three_classes():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    m = classification_metrics(list(y_true), y_pred)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["recall_2"] == pytest.approx(((y_pred == 2) & (y_true == 2)).sum()
                                          / (y_true == 2).sum())
    assert m["accuracy"] == pytest.approx((y_true == y_pred).mean())


def test_an_absent_class_has_no_recall():
    m = classification_metrics([1, 1], [1, 0], ("a", "b"))
    assert math.isnan(m["recall_a"]) and m["recall_b"] == 0.5


@pytest.mark.parametrize("y_true, y_pred, names, words", [
    ([0, 1, 1], [0, 1], None, "3 labels but y_pred has 2"),
    ([], [], None, "no predictions"),
    ([0.5, 1.0], [0, 1], None, "integer"),
    ([0, 2], [0, 1], ("a", "b"), "labels \\[2\\] have no name"),
])
def test_bad_input_gets_a_clear_error(y_true, y_pred, names, words):
    with pytest.raises(ValueError, match=words):
        classification_metrics(y_true, y_pred, names)
