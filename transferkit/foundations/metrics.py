"""How good are the predictions? Accuracy, per-class recall and macro-F1, in one place.

Accuracy alone misleads when the classes are unbalanced: on the reviews, 58 % of
the snippets are *fresh*, so a model that always says "fresh" scores 0.58 and has
learnt nothing. Two more numbers expose it:

* **recall of class c**: of the examples that *are* c, the fraction predicted c,
  ``TP_c / (TP_c + FN_c)``. The always-fresh model has recall 1 on fresh and 0 on
  rotten.
* **macro-F1**: for each class its F1 score, the harmonic mean of precision
  ``TP_c / (TP_c + FP_c)`` and recall, ``F1_c = 2·P_c·R_c / (P_c + R_c)``; then the
  plain mean over classes, so a small class counts as much as a large one. The
  always-fresh model gets F1 = 0.73 on fresh and 0 on rotten: macro-F1 0.37.

`classification_metrics` computes all of them with scikit-learn's implementations,
and every comparison table of the course takes its numbers from it, so the
definitions cannot drift apart between lessons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _labels(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.size == 0:  # np.asarray([]) is float: an empty list is not a dtype error
        array = array.astype(np.int64).reshape(-1)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D sequence of integer class labels, got "
                         f"dtype {array.dtype} and shape {array.shape}.")
    return array


def classification_metrics(y_true: Any, y_pred: Any,
                           label_names: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy, macro-F1 and each class's recall of the predictions ``y_pred``.

    ``y_true`` and ``y_pred`` are integer labels (tensors, arrays or lists) of the
    same length. ``label_names`` names the classes 0, 1, …; the recall columns are
    ``recall_<name>`` (``recall_<label>`` without names). Macro-F1 averages over
    the named classes (without names: the labels that occur in either argument);
    a class that never occurs in ``y_true`` has no recall (NaN).

    >>> classification_metrics([1, 1, 1, 0], [1, 1, 1, 1], ("rotten", "fresh"))
    {'accuracy': 0.75, 'macro_f1': 0.428..., 'recall_rotten': 0.0, 'recall_fresh': 1.0}
    """
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; "
                         "they must describe the same examples.")
    if len(y_true) == 0:
        raise ValueError("there are no predictions to score.")
    if label_names is not None:
        labels = list(range(len(label_names)))
        outside = sorted(set(np.concatenate([y_true, y_pred]).tolist()) - set(labels))
        if outside:
            raise ValueError(f"labels {outside} have no name: label_names has "
                             f"{len(label_names)} classes (0 … {len(label_names) - 1}).")
        names = [str(n) for n in label_names]
    else:
        labels = sorted(set(np.concatenate([y_true, y_pred]).tolist()))
        names = [str(c) for c in labels]
    result = {"accuracy": float(accuracy_score(y_true, y_pred)),
              "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                         zero_division=0))}
    present = set(y_true.tolist())
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for label, name, recall in zip(labels, names, recalls, strict=True):
        result[f"recall_{name}"] = float(recall) if label in present else float("nan")
    return result


__all__ = ["classification_metrics"]
