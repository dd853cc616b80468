"""Label-budget studies: how test accuracy depends on the number of labels.

The question behind the whole course is what a method does when labels are
scarce. A *label-budget study* answers it by measurement:

    for each budget k (labels per class; None = every training label):
        for each seed s:
            labelled = few_labels(train, k, seed=s)      # k examples of every class
            for each method:
                model = method(labelled, val, s)         # train on the labelled subset
                accuracy on the fixed test set

and `summarise` turns the trials into one row per (method, budget) with the
mean over seeds, its 95 % interval and the spread. `compare_to_baseline`
says, per budget, whether a method beats another beyond the noise, pairing
their runs by seed and by test image (`transferkit.foundations.verdicts.compare_methods`).
One seed is one draw of *which* examples get labels (and of the method's own
randomness): with a few labels, that draw matters a lot, so a single run would be
an anecdote.

A *method* is any function ``method(train: Data, val: Data, seed: int)`` that
returns a fitted model: a torch `nn.Module` (the class with the highest score
is its prediction), a scikit-learn style object with ``.predict(x)``, or a plain
function ``x -> labels``. The test set is never shown to a method. Two methods
come with the module: `logistic_regression` (the linear baseline every later
lesson must beat) and `fit_method` (wraps any network you build for `fit`)::

    from transferkit.foundations.data import load_digits, train_val_test_split
    from transferkit.methods.label_budget import (
        fit_method, label_budget_study, logistic_regression, summarise, summary_table)

    splits = train_val_test_split(*load_digits(), seed=0)
    methods = {"MLP": fit_method(make_mlp, steps=300, lr=3e-3),
               "logistic regression": logistic_regression}
    rows = label_budget_study(methods, splits, budgets=(1, 10, None), seeds=(0, 1, 2))
    print(summary_table(summarise(rows)))   # one line per budget: mean ± interval per method
    print("\n".join(compare_to_baseline(rows, "MLP", "logistic regression")))
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transferkit.foundations.data import Budget, Data, budget_label, few_labels
from transferkit.foundations.device import seeded
from transferkit.foundations.metrics import classification_metrics
from transferkit.foundations.tables import html_table
from transferkit.foundations.verdicts import compare_methods, describe, mean_interval
from transferkit.training.loop import epochs_for_steps, fit, predict

Method = Callable[[Data, Data, int], Any]
INTERVAL_NOTE = "mean ± half-width of its 95 % interval"
DEFAULT_BUDGETS: tuple[Budget, ...] = (1, 3, 5, 10, 50, None)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)


# --- budgets -----------------------------------------------------------------------------


def check_budgets(budgets: Iterable[Budget], y: torch.Tensor) -> tuple[Budget, ...]:
    """Validate label budgets against the training labels ``y``; return them as a tuple.

    A budget is a positive number of labels per class, or None for every label.
    A budget larger than the smallest class is an error, not a silent cap: the
    classes would no longer be balanced, and the row would claim more labels
    than it used.
    """
    budgets = tuple(budgets)
    if not budgets:
        raise ValueError("budgets is empty; give labels per class, e.g. (1, 3, 10, None).")
    _, counts = torch.unique(torch.as_tensor(y), return_counts=True)
    smallest = int(counts.min())
    for budget in budgets:
        if budget is None:
            continue
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise ValueError(f"a budget is a positive number of labels per class, or None for "
                             f"all labels; got {budget!r}.")
        if budget > smallest:
            raise ValueError(
                f"a budget of {budget} labels per class is more than the smallest class of the "
                f"training set has ({smallest}). Use budgets of at most {smallest}, or None "
                "for every training label."
            )
    if len(set(budgets)) != len(budgets):
        raise ValueError(f"budgets {budgets} contain a repeat.")
    return budgets


# --- methods -----------------------------------------------------------------------------


def logistic_regression(train: Data, val: Data | None = None, seed: int = 0,
                        *, max_iter: int = 2000):
    """The linear baseline: scikit-learn's `LogisticRegression` on the raw pixels.

    Multinomial logistic regression with its default L2 penalty (C=1), fitted
    with L-BFGS. ``val`` is not used (no choice is made); it is accepted so this
    is a study method. Returns the fitted scikit-learn model.
    """
    from sklearn.linear_model import LogisticRegression  # slow to import: only when used

    x = train.x.reshape(len(train.x), -1).numpy()
    return LogisticRegression(max_iter=max_iter, random_state=seed).fit(x, train.y.numpy())


def fit_method(make_model: Callable[[], nn.Module], *, steps: int = 300,
               batch_size: int = 64, **fit_options: Any) -> Method:
    """A study method that trains a fresh network built by ``make_model()`` with `fit`.

    For each trial it seeds everything with the trial's seed (restoring the global
    random state afterwards: `transferkit.foundations.device.seeded`), builds the model,
    and trains it on the labelled subset for about ``steps`` optimizer steps
    (the number of epochs follows from the subset's size: `epochs_for_steps`).
    ``fit_options`` go to `fit` (``lr``, ``optimizer``, ``weight_decay`` …).
    The validation set is not used, so no choice leaks into the result.

    >>> from transferkit.foundations.data import load_digits
    >>> method = fit_method(lambda: nn.Linear(64, 10), steps=200, lr=3e-3)
    >>> model = method(few_labels(*load_digits(), per_class=5), None, 0)
    >>> type(model).__name__
    'Linear'
    """
    for forbidden in ("epochs", "val", "seed"):
        if forbidden in fit_options:
            raise ValueError(f"fit_method sets {forbidden!r} itself (epochs from steps, the "
                             "trial's seed); leave it out.")

    def method(train: Data, val: Data, seed: int) -> nn.Module:
        with seeded(seed):  # the same initial weights for a seed; your RNG is left alone
            model = make_model()
            epochs = epochs_for_steps(len(train), batch_size, steps)
            fit(model, train, epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
                **fit_options)
        return model

    method.__name__ = getattr(make_model, "__name__", "network")
    return method


def predict_with(model: Any, x: torch.Tensor) -> np.ndarray:
    """Class predictions of whatever a method returned, as a NumPy array."""
    if isinstance(model, nn.Module):
        return predict(model, x).numpy()
    if hasattr(model, "predict"):  # scikit-learn style
        return np.asarray(model.predict(x.reshape(len(x), -1).numpy()))
    if callable(model):
        out = model(x)
        return out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    raise TypeError(
        f"a study method must return a torch model, an object with .predict(x), or a "
        f"function x -> labels; it returned {type(model).__name__}."
    )


def predictions(model: Any, data: Data) -> np.ndarray:
    """The class ``model`` (anything a study method returns) predicts for each example."""
    predicted = predict_with(model, data.x)
    if predicted.shape != (len(data),):
        raise ValueError(f"the model predicted an array of shape {predicted.shape} for "
                         f"{len(data)} examples; it must give one class label per example.")
    return predicted


def correct(model: Any, data: Data) -> np.ndarray:
    """For every example of ``data``, whether ``model`` gets it right (a bool array)."""
    return predictions(model, data) == data.y.numpy()


def accuracy(model: Any, data: Data) -> float:
    """The fraction of ``data`` that ``model`` gets right (`transferkit.foundations.metrics`)."""
    return classification_metrics(data.y, predictions(model, data))["accuracy"]


def data_fingerprint(data: Data) -> str:
    """A short hash of a data set's inputs and labels: two sets with the same fingerprint
    hold the same examples in the same order. Study rows carry it (``test_fingerprint``
    …), so runs measured on different test sets of the same size are never compared."""
    digest = hashlib.sha256(f"{len(data)}|".encode())
    digest.update(data.y.detach().cpu().numpy().astype(np.int64).tobytes())
    x = data.x
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().contiguous()
        digest.update(f"{x.dtype}|{tuple(x.shape)}|".encode())
        digest.update(x.numpy().tobytes() if x.dtype != torch.bfloat16 else x.float().numpy()
                      .tobytes())
    else:  # texts, or any sequence of examples
        digest.update("\x1f".join(map(str, x)).encode())
    return digest.hexdigest()[:16]


# --- the study ---------------------------------------------------------------------------


def label_budget_study(
    methods: Mapping[str, Method],
    splits: Sequence[Data],
    *,
    budgets: Iterable[Budget] = DEFAULT_BUDGETS,
    seeds: Iterable[int] = DEFAULT_SEEDS,
    also_test: Mapping[str, Data] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every method on every label budget with every seed; measure on the test set.

    Args:
        methods: name → ``method(train, val, seed) -> model`` (see the module doc).
        splits: ``(train, val, test)``, e.g. a `transferkit.foundations.data.Splits`. The
            labelled subsets are drawn from ``train``; ``test`` is the same for
            every trial. ``test=None`` measures the validation set only: a
            search that must not see the test set (`transferkit.methods.selection`);
            ``val=None`` skips the validation column (the methods get None), for
            methods that choose nothing on it and are slow to evaluate.
        budgets: labels per class; None = every training label. A budget above
            the smallest class of ``train`` is an error (see `check_budgets`).
        seeds: one trial per seed; the seed picks the labelled examples
            (``few_labels(..., seed=seed)``) and is passed to the method.
        also_test: more test sets, name → `Data`, e.g. ``{"shifted": shifted_test}``
            for out-of-distribution accuracy: each adds ``{name}_accuracy``,
            ``{name}_correct`` and ``{name}_fingerprint`` columns.
        progress: show a progress bar.

    Returns one row (a dict) per trial: ``method``, ``budget`` (int or None),
    ``per_class`` (labelled examples per class, a number even for "all"),
    ``n_train``, ``seed``, ``val_accuracy``, ``val_correct`` and
    ``val_fingerprint`` (with a validation set), ``n_test``, ``test_accuracy``,
    ``test_macro_f1`` and each class's ``test_recall_<class>``
    (`transferkit.foundations.metrics.classification_metrics`), ``test_correct`` and
    ``test_fingerprint`` (with a test set), ``seconds``, then
    the ``also_test`` columns, then any numbers the returned model carries in a
    ``measurements`` dict (e.g. `transferkit.methods.finetune.finetune_method`'s
    ``feature_drift``). Every ``*_correct`` is a tuple of one bool per example, in
    the set's order, so two methods can be compared item by item
    (`compare_to_baseline`); every ``*_fingerprint`` is `data_fingerprint` of that
    set, so runs from different sets are never paired.
    """
    train, val, test = splits
    if not methods:
        raise ValueError("methods is empty; pass e.g. {'logistic': logistic_regression}.")
    for name, method in methods.items():
        if not callable(method):
            raise TypeError(f"method {name!r} is a {type(method).__name__}, not a function "
                            "method(train, val, seed).")
    budgets = check_budgets(budgets, train.y)
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers (at least one), got {seeds}.")
    n_classes = len(torch.unique(train.y))
    if {"val", "test"} & set(also_test or {}):
        raise ValueError("also_test names 'val' and 'test' are taken by the study's own sets; "
                         "call the extra sets something else, e.g. 'shifted'.")
    scored = {name: (data, data_fingerprint(data), data.y.numpy()) for name, data in
              (("val", val), ("test", test), *(also_test or {}).items()) if data is not None}

    rows = []
    with tqdm(total=len(budgets) * len(seeds) * len(methods), desc="label-budget study",
              unit="run", disable=not progress) as bar:
        for budget in budgets:
            for seed in seeds:
                labelled = train if budget is None else few_labels(train.x, train.y, budget,
                                                                   seed=seed)
                for name, method in methods.items():
                    start = time.perf_counter()
                    model = method(labelled, val, seed)
                    seconds = time.perf_counter() - start
                    row = {
                        "method": name, "budget": budget,
                        "per_class": len(labelled) / n_classes, "n_train": len(labelled),
                        "seed": seed,
                    }
                    for split, (data, fingerprint, y) in scored.items():
                        # every score: transferkit.foundations.metrics
                        predicted = predictions(model, data)
                        scores = classification_metrics(data.y, predicted,
                                                        getattr(data, "classes", None) or None)
                        if split == "test":
                            row.update(n_test=len(data), test_macro_f1=scores["macro_f1"])
                            row.update({f"test_{k}": v for k, v in scores.items()
                                        if k.startswith("recall_")})
                        row[f"{split}_accuracy"] = scores["accuracy"]
                        row[f"{split}_correct"] = tuple((predicted == y).tolist())
                        row[f"{split}_fingerprint"] = fingerprint
                    row["seconds"] = seconds
                    row.update(getattr(model, "measurements", None) or {})
                    rows.append(row)
                    bar.update(1)
                    del model  # freed before the next run trains (a transformer: 0.2 GB)
    return rows


def summarise(rows: Sequence[Mapping[str, Any]],
              metric: str = "test_accuracy") -> list[dict[str, Any]]:
    """One row per (method, budget): the mean of ``metric`` over seeds, how sure it is,
    and how much the seeds differ.

    Each summary row has ``method``, ``budget``, ``per_class``, ``n_train``,
    ``metric``, ``mean``, ``half_width`` (of the 95 % t-interval of the mean over
    seeds, `transferkit.foundations.verdicts.mean_interval`: it narrows as seeds are added; nan
    for a single seed), ``std`` (the *spread*: the sample standard deviation over
    seeds, which does not shrink with more seeds; 0 for a single seed), ``min``,
    ``max`` and ``n`` (the number of seeds), and ``n_test`` when the rows have it.
    Rows keep the order in which methods and budgets first appear. A method
    without this metric (e.g. the feature drift of logistic regression, which
    has no features to move) is left out.
    """
    if not rows:
        raise ValueError("no rows to summarise; run label_budget_study first.")
    if not any(row.get(metric) is not None for row in rows):
        raise KeyError(f"no column {metric!r} in the rows; they have {list(rows[0])}.")
    groups: dict[tuple[str, Budget], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["budget"]), []).append(row)
    summary = []
    for (method, budget), group in groups.items():
        values = [float(r[metric]) for r in group if r.get(metric) is not None]
        if not values:
            continue
        summary.append({
            "method": method, "budget": budget,
            "per_class": statistics.fmean(r["per_class"] for r in group),
            "n_train": statistics.fmean(r["n_train"] for r in group),
            "metric": metric, "mean": statistics.fmean(values),
            "half_width": mean_interval(values)[1],
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values),
        })
        if "n_test" in group[0]:
            summary[-1]["n_test"] = group[0]["n_test"]
    return summary


def mean_text(row: Mapping[str, Any]) -> str:
    """A summary row's mean as ``"0.912 ± 0.014"`` (± the 95 % interval's half-width),
    or ``"0.912"`` after a single seed (no interval to give)."""
    half = row.get("half_width", math.nan)
    return f"{row['mean']:.3f}" if math.isnan(half) else f"{row['mean']:.3f} ± {half:.3f}"


def _table_cells(summary: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    methods = list(dict.fromkeys(row["method"] for row in summary))
    budgets = list(dict.fromkeys(row["budget"] for row in summary))
    cell = {(row["method"], row["budget"]): row for row in summary}
    header = ["labels per class"] + methods
    body = []
    for budget in budgets:
        line = [budget_label(budget)]
        for method in methods:
            row = cell.get((method, budget))
            line.append("—" if row is None else mean_text(row))
        body.append(line)
    return header, body


def summary_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table: one line per budget, one column per method, ``mean ± half-width``
    of the 95 % interval of the mean over seeds (`mean_text`)."""
    header, body = _table_cells(summary)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [" | ".join(text.rjust(w) for text, w in zip(line, widths, strict=True))
             for line in [header, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    n = sorted({row["n"] for row in summary})
    metric = summary[0]["metric"].replace("_", " ")
    lines.append(f"{metric}: {INTERVAL_NOTE} over {'/'.join(map(str, n))} seeds")
    return "\n".join(lines)


def summary_html(summary: Sequence[Mapping[str, Any]]) -> str:
    """The same table as `summary_table`, as HTML (``IPython.display.HTML(...)``)."""
    header, body = _table_cells(summary)
    n = "/".join(map(str, sorted({row["n"] for row in summary})))
    caption = f"{summary[0]['metric'].replace('_', ' ')}: {INTERVAL_NOTE} over {n} seeds"
    return html_table(header, body, caption=caption)


class Verdicts(list):
    """`compare_to_baseline`'s sentences (a list of str), with the records behind them as
    ``.records`` (for `transferkit.foundations.verdicts.chance_note`)."""

    def __init__(self, sentences: Iterable[str], records: Sequence[Mapping[str, Any]]):
        super().__init__(sentences)
        self.records = list(records)


def compare_to_baseline(rows: Sequence[Mapping[str, Any]], method: str, baseline: str,
                        metric: str = "test_accuracy", level: float = 0.95, *,
                        margin: float | None = None) -> Verdicts:
    """One sentence per budget: does ``method`` beat ``baseline``, lose to it, or can the
    study not tell them apart?

    ``rows`` are the study's per-run rows (not the summary). Runs are paired by
    seed (each seed gives both methods the same labelled draw) and by test item
    (the rows' ``test_correct``, or ``X_correct`` for ``metric="X_accuracy"``),
    with the two-way interval of `transferkit.foundations.verdicts.compare_methods`. "beats" and
    "loses to" need the whole interval on one side of zero; otherwise the study
    cannot tell them apart at this size, and the sentence says how many seeds or
    test items a gap of this size would need. Only an interval inside ±``margin``
    is a tie. Each sentence ends with the means of the paired runs.
    """
    if rows and "seed" not in rows[0] and "mean" in rows[0]:
        raise ValueError("compare_to_baseline needs the per-run rows of label_budget_study "
                         "(one per seed), not the summary: pairing runs by seed is what "
                         "makes the comparison fair.")
    records = compare_methods(rows, method, baseline, metric, level, margin=margin)
    return Verdicts((describe({**r, "budget": "all" if r["budget"] is None else r["budget"]})
                     for r in records), records)


__all__ = [
    "INTERVAL_NOTE", "correct", "mean_text", "predictions",
    "DEFAULT_BUDGETS", "DEFAULT_SEEDS", "accuracy", "check_budgets",
    "Verdicts", "compare_to_baseline", "data_fingerprint", "fit_method",
    "label_budget_study", "logistic_regression", "predict_with", "summarise", "summary_html",
    "summary_table",
]
