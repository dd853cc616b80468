"""Choosing a strategy: search on the validation set, then test once.

Every choice you make by looking at a score — the strategy, the schedule, the
learning rate — fits that score a little. Made on the test set, the choice
leaks into the number you report, and the number is then too good. So:

1. `search`: train every candidate (several seeds each) on the labelled data
   and score it on the *validation* set only. The test set is not an argument.
2. `leaderboard`: the mean validation accuracy per candidate with its 95 %
   interval (and the spread over seeds), best first, with what each cost
   (seconds, trainable parameters) beside it; `winner` is the top row,
   `tied_with` the candidates the validation set cannot tell apart from it
   (paired by seed and by validation image: `transferkit.foundations.verdicts.compare_methods`),
   `recommend` the cheapest of those; `guide` turns leaderboards from several
   settings (data size, task similarity) into a decision table.
3. `SealedTestSet.evaluate(model)`: the test accuracy of the one model you
   chose. It works once; a second call is refused, because a second look is a
   second choice.

A candidate is a study method, ``method(train, val, seed) -> model``, as in
`transferkit.methods.label_budget` (e.g. `transferkit.methods.finetune.finetune_method`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transferkit.foundations.data import Budget, Data
from transferkit.foundations.tables import html_table
from transferkit.foundations.verdicts import BEATS, CANNOT_TELL, LOSES, TIES, compare_methods
from transferkit.methods.label_budget import Method, accuracy, label_budget_study, summarise

COST_COLUMNS = ("seconds", "seconds_per_epoch", "trainable_params", "feature_drift")


def search(methods: Mapping[str, Method], train: Data, val: Data, *, budget: Budget = None,
           seeds: Iterable[int] = (0, 1, 2), progress: bool = True) -> list[dict[str, Any]]:
    """Train every candidate with every seed on ``budget`` labels per class of
    ``train`` (None: all of it) and measure it on ``val``; one row per run.

    The rows are `transferkit.methods.label_budget.label_budget_study`'s, without any
    test column: nothing here can see the test set. Each keeps which validation
    images it got right (``val_correct``), so candidates are compared image by
    image as well as seed by seed.
    """
    return label_budget_study(methods, (train, val, None), budgets=(budget,), seeds=seeds,
                              progress=progress)


class Leaderboard(list):
    """The rows of a leaderboard (a list of dicts), and the per-run ``rows`` behind them:
    `tied_with` pairs those runs by seed and by validation image."""

    def __init__(self, entries: Iterable[dict[str, Any]], rows: Sequence[Mapping[str, Any]]):
        super().__init__(entries)
        self.rows = list(rows)


def leaderboard(rows: Sequence[Mapping[str, Any]]) -> Leaderboard:
    """One row per candidate, highest mean validation accuracy first: ``method``,
    ``mean``, ``half_width`` (of its 95 % interval over seeds), ``std`` (the spread
    over seeds), ``n`` (seeds), and the mean of each cost column the rows have
    (`COST_COLUMNS`). The per-run rows stay with it, as ``board.rows``."""
    if any("test_accuracy" in row for row in rows):
        raise ValueError("these rows carry test accuracies: a choice made on them would see "
                         "the test set. Make them with selection.search (validation only).")
    board = summarise(rows, metric="val_accuracy")
    for entry in board:
        runs = [r for r in rows if r["method"] == entry["method"]
                and r["budget"] == entry["budget"]]
        for column in COST_COLUMNS:
            values = [float(r[column]) for r in runs if r.get(column) is not None]
            if values:
                entry[column] = statistics.fmean(values)
    return Leaderboard(sorted(board, key=lambda entry: -entry["mean"]), rows)


def winner(board: Sequence[Mapping[str, Any]]) -> str:
    """The candidate with the highest mean validation accuracy."""
    if not board:
        raise ValueError("the leaderboard is empty; run selection.search first.")
    return max(board, key=lambda entry: entry["mean"])["method"]


def _runs_of(board: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rows = getattr(board, "rows", None)
    if rows is None:
        raise TypeError("this needs the per-run rows behind the leaderboard: pass what "
                        "selection.leaderboard(rows) returned, not a plain list.")
    return rows


def comparisons(board: Sequence[Mapping[str, Any]], name: str | None = None
                ) -> list[dict[str, Any]]:
    """Every other candidate against ``name`` (default: the winner) on validation accuracy:
    one `transferkit.foundations.verdicts.compare_methods` record each, best candidate first
    (for `transferkit.foundations.verdicts.describe` and
    `transferkit.foundations.verdicts.chance_note`)."""
    name = name or winner(board)
    if name not in {e["method"] for e in board}:
        raise KeyError(f"no candidate {name!r} on the leaderboard.")
    rows = _runs_of(board)
    return [record for entry in board if entry["method"] != name
            for record in compare_methods(rows, entry["method"], name, metric="val_accuracy")]


def tied_with(board: Sequence[Mapping[str, Any]], name: str | None = None) -> list[str]:
    """The other candidates the validation set cannot tell apart from ``name`` (default:
    the winner).

    Each candidate is compared with ``name`` on validation accuracy, its runs paired
    by seed and by validation image (`transferkit.foundations.verdicts.compare_methods`, two-way):
    it is listed when the 95 % interval of the gap holds zero. That is not a claim
    that the two are equal, only that this search cannot rank them; more seeds
    or a larger validation set can separate them.
    """
    return list(dict.fromkeys(r["method"] for r in comparisons(board, name)
                              if r["verdict"] not in (BEATS, LOSES)))


def recommend(board: Sequence[Mapping[str, Any]], cost: str = "seconds") -> str:
    """The cheapest of the winner and the candidates `tied_with` it: when the
    validation set cannot tell them apart, pay less (``cost``: a cost column)."""
    contenders = [winner(board), *tied_with(board)]
    entries = [e for e in board if e["method"] in contenders]
    if any(cost not in e for e in entries):
        raise KeyError(f"the leaderboard has no {cost!r} column; it has {list(board[0])}.")
    return min(entries, key=lambda e: e[cost])["method"]


def guide(boards: Mapping[str, Sequence[Mapping[str, Any]]], *, baseline: str | None = None,
          probe: str | None = None, not_pretrained: Sequence[str] = (),
          cost: str = "seconds") -> list[dict[str, str]]:
    """A decision guide from measured leaderboards, one row per setting.

    ``boards``: setting (e.g. "same style, 3 labels per class") → its
    `leaderboard`. Each row says which candidate won on validation, which ones
    validation cannot tell apart from it (`tied_with`), and the cheapest of those
    by ``cost`` (the pick). Name your candidates to get two more columns: with
    ``baseline`` (the one trained from scratch, e.g. "scratch"), whether the best
    pre-trained candidate beat it; with ``probe`` (feature extraction, e.g.
    "linear_probe"), how far it fell behind the winner. Both are paired by seed
    and by validation image, with the gap and its 95 % interval
    (`transferkit.foundations.verdicts.compare_methods`). Candidates in ``not_pretrained`` (e.g.
    logistic regression) take part in the race but are not counted as pre-trained.
    """
    named = {e["method"] for board in boards.values() for e in board}
    for role, name in (("baseline", baseline), ("probe", probe)):
        if name is not None and name not in named:
            raise KeyError(f"{role}={name!r} is not a candidate on any leaderboard; they have "
                           f"{sorted(named)}.")
    rows = []
    for setting, board in boards.items():
        by_name = {e["method"]: e for e in board}
        best = winner(board)
        pretrained = [e for e in board if e["method"] not in (baseline, *not_pretrained)]
        row = {"setting": setting, "best on validation": best,
               "cannot tell apart from it": ", ".join(tied_with(board)) or "none",
               "pick (cheapest of those)": recommend(board, cost)}
        if baseline in by_name and pretrained:
            top = pretrained[0]["method"]  # the board is sorted, best first
            row["pre-training vs scratch"] = _verdict_cell(
                board, top, baseline, {BEATS: "helps", LOSES: "hurts"})
        if probe in by_name:
            row["feature extraction vs best"] = "is the best" if probe == best else \
                _verdict_cell(board, probe, best, {LOSES: "behind"})
        rows.append(row)
    return rows


def _verdict_cell(board: Sequence[Mapping[str, Any]], method: str, other: str,
                  words: Mapping[str, str]) -> str:
    """"helps (+0.020, 95 % interval [+0.004, +0.036])": a two-way comparison, in a cell."""
    [record] = compare_methods(_runs_of(board), method, other, metric="val_accuracy")
    verdict = {CANNOT_TELL: "cannot tell", TIES: "tie", **words}.get(record["verdict"],
                                                                      record["verdict"])
    return (f"{verdict} ({record['gap']:+.3f}, 95 % interval [{record['low']:+.3f}, "
            f"{record['high']:+.3f}])")


def rows_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain HTML table of dict rows (the keys of the first row are the columns;
    floats with three decimals)."""
    if not rows:
        return "<p>(no rows)</p>"
    columns = list(rows[0])
    cells = [[f"{v:.3f}" if isinstance(v := row.get(c, ""), float) else str(v)
              for c in columns] for row in rows]
    return html_table([str(c) for c in columns], cells, css_class="transferkit-table")


class TestSetAlreadyUsed(RuntimeError):
    """A `SealedTestSet` was asked for a second score."""

    __test__ = False  # not a pytest test class


class SealedTestSet:
    """A test set that gives one score, for the model you chose.

    >>> sealed = SealedTestSet(splits.test)            # doctest: +SKIP
    >>> sealed.evaluate(chosen_model, "full · cosine")  # doctest: +SKIP
    0.97
    """

    __test__ = False  # not a pytest test class

    def __init__(self, test: Data) -> None:
        self._test = test
        self.used_by: str | None = None
        self.score: float | None = None

    def __len__(self) -> int:
        return len(self._test)

    def evaluate(self, model: Any, name: str = "the chosen model") -> float:
        """The test accuracy of ``model``; refused after the first call."""
        if self.used_by is not None:
            raise TestSetAlreadyUsed(
                f"this test set already scored {self.used_by} ({self.score:.3f}). A second "
                "look is a second choice made on the test set, and the number you report "
                "would be optimistic. Compare candidates on validation (selection.search); if "
                "you must start again, seal a new test set and say so in your report.")
        self.score = accuracy(model, self._test)
        self.used_by = name
        return self.score

    def __repr__(self) -> str:
        state = "unused" if self.used_by is None else f"used by {self.used_by}"
        return f"SealedTestSet({len(self)} examples, {state})"


__all__ = ["COST_COLUMNS", "Leaderboard", "SealedTestSet", "TestSetAlreadyUsed", "comparisons",
           "guide",
           "leaderboard", "recommend", "rows_html", "search", "tied_with", "winner"]
