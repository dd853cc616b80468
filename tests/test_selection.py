"""transferkit.methods.selection: choose on validation, test once."""

import statistics

import pytest
import scipy.stats
import torch

from transferkit.foundations.data import Data, few_labels
from transferkit.methods import label_budget as ex
from transferkit.methods.selection import (
    COST_COLUMNS,
    SealedTestSet,
    TestSetAlreadyUsed,
    comparisons,
    guide,
    leaderboard,
    search,
    tied_with,
    winner,
)


def always(label, **measurements):
    """A method whose model predicts ``label`` for every input and carries ``measurements``
    (each a function of the seed)."""

    def method(train, val, seed):
        def model(x):
            return torch.full((len(x),), label)

        model.measurements = {k: f(seed) for k, f in measurements.items()}
        return model

    return method


def accuracy(model, data):
    return (model(data.x) == data.y).float().mean().item()


# --- search ---------------------------------------------------------------------------------


def test_search_scores_on_validation_and_has_no_test_column(splits, nearest_class_mean):
    seen = []

    def recording(train, val, seed):
        seen.append((train, val, seed))
        return nearest_class_mean(train, val, seed)

    rows = search({"nearest mean": recording}, splits.train, splits.val, budget=3,
                  seeds=(0, 4), progress=False)
    assert [(r["method"], r["budget"], r["seed"]) for r in rows] == [
        ("nearest mean", 3, 0), ("nearest mean", 3, 4)]
    assert all(val is splits.val for _, val, _ in seen)
    for row, (train, _, seed) in zip(rows, seen, strict=True):
        expected = few_labels(splits.train.x, splits.train.y, 3, seed=seed)
        assert torch.equal(train.x, expected.x) and row["n_train"] == 30
        assert row["val_accuracy"] == pytest.approx(accuracy(nearest_class_mean(train, 0, 0),
                                                             splits.val))
    for row in rows:
        assert not any("test" in column for column in row), row


def test_search_with_every_label_trains_on_the_whole_train_set(splits, nearest_class_mean):
    rows = search({"nearest mean": nearest_class_mean}, splits.train, splits.val, seeds=(0,),
                  progress=False)
    (row,) = rows
    assert row["budget"] is None and row["n_train"] == len(splits.train)
    full = nearest_class_mean(splits.train, None, 0)
    assert row["val_accuracy"] == pytest.approx(accuracy(full, splits.val))


def test_search_rows_make_a_leaderboard_best_first_with_mean_costs(splits, nearest_class_mean):
    methods = {
        "constant": always(0, trainable_params=lambda s: 10 * (s + 1),
                           seconds_per_epoch=lambda s: 0.5),
        "nearest mean": nearest_class_mean,
    }
    rows = search(methods, splits.train, splits.val, budget=5, seeds=(0, 1, 2), progress=False)
    board = leaderboard(rows)
    assert [entry["method"] for entry in board] == ["nearest mean", "constant"]
    best, worst = board
    assert best["mean"] > 0.6 and worst["mean"] < 0.2 and best["n"] == worst["n"] == 3
    own = [r["val_accuracy"] for r in rows if r["method"] == "nearest mean"]
    assert best["mean"] == pytest.approx(statistics.fmean(own))
    assert best["std"] == pytest.approx(statistics.stdev(own))
    assert worst["trainable_params"] == pytest.approx(20.0)  # mean of 10, 20, 30
    assert worst["seconds_per_epoch"] == pytest.approx(0.5)
    assert "trainable_params" not in best  # a method without the measurement gets none
    for entry in board:  # seconds (always measured) is the mean over the seeds' runs
        runs = [r["seconds"] for r in rows if r["method"] == entry["method"]]
        assert entry["seconds"] == pytest.approx(statistics.fmean(runs))
    assert winner(board) == "nearest mean"


def test_leaderboard_refuses_rows_that_saw_the_test_set(splits, nearest_class_mean):
    rows = ex.label_budget_study({"nearest mean": nearest_class_mean}, splits, budgets=(2,),
                                 seeds=(0,), progress=False)
    assert "test_accuracy" in rows[0]
    with pytest.raises(ValueError, match="test accuracies.*selection.search"):
        leaderboard(rows)


# --- leaderboard, winner, tied_with on known numbers ---------------------------------------


def hand_rows(**accuracies):
    """Search-like rows: one per (candidate, seed) with the given validation accuracies."""
    return [{"method": name, "budget": None, "per_class": 100.0, "n_train": 1000, "seed": seed,
             "val_accuracy": value, "seconds": 1.0 + seed}
            for name, values in accuracies.items() for seed, value in enumerate(values)]


@pytest.fixture
def board():
    return leaderboard(hand_rows(
        low=[0.80, 0.81, 0.82],     # 0.10 below top on every seed: clearly worse
        wide=[0.60, 0.90, 1.00],    # mean 0.833, all over the place: cannot be told apart
        top=[0.90, 0.92, 0.94],     # mean 0.92
        near=[0.89, 0.91, 0.93],    # 0.01 below top on *every* seed: a small but real gap
    ))


def test_leaderboard_sorts_by_mean_validation_accuracy(board):
    assert [e["method"] for e in board] == ["top", "near", "wide", "low"]
    top = board[0]
    assert top["mean"] == pytest.approx(0.92) and top["std"] == pytest.approx(0.02)
    assert top["half_width"] == pytest.approx(scipy.stats.t.ppf(0.975, 2) * 0.02 / 3 ** 0.5)
    assert top["n"] == 3 and top["metric"] == "val_accuracy"
    assert top["seconds"] == pytest.approx(2.0)  # mean of 1, 2, 3
    assert set(COST_COLUMNS) & set(top) == {"seconds"}
    assert len(board.rows) == 12  # the runs behind it, for paired comparisons


def test_winner_is_the_best_mean_wherever_it_sits(board):
    assert winner(board) == "top"
    assert winner(list(reversed(board))) == "top"


def test_tied_with_pairs_the_runs_by_seed(board):
    # near trails top by 0.01 on every seed: paired, that is a real gap, not a tie,
    # although the two means are far closer than either spread over seeds
    assert tied_with(board) == ["wide"]
    assert tied_with(board, "near") == ["wide"]
    # a candidate far above is not "within the noise" of a weak one
    assert tied_with(board, "low") == ["wide"]
    with pytest.raises(KeyError, match="no candidate 'nope'"):
        tied_with(board, "nope")


def test_a_gap_that_changes_sign_between_seeds_is_a_tie():
    board = leaderboard(hand_rows(a=[0.90, 0.95, 0.92], b=[0.93, 0.91, 0.91]))
    assert tied_with(board) == ["b"]


def test_a_clear_winner_is_tied_with_nobody():
    board = leaderboard(hand_rows(a=[0.95, 0.96, 0.97], b=[0.80, 0.81, 0.82]))
    assert tied_with(board) == []


def test_tied_with_needs_the_runs_behind_the_leaderboard(board):
    with pytest.raises(TypeError, match="per-run rows"):
        tied_with(list(board))


def test_empty_leaderboards_are_clear_errors():
    with pytest.raises(ValueError, match="empty.*selection.search"):
        winner([])
    with pytest.raises(ValueError, match="empty"):
        tied_with([])
    with pytest.raises(ValueError, match="no rows"):
        leaderboard([])


# --- the sealed test set ----------------------------------------------------------------------


def test_sealed_test_set_scores_once_then_refuses(splits, nearest_class_mean):
    sealed = SealedTestSet(splits.test)
    assert len(sealed) == len(splits.test)
    assert repr(sealed) == f"SealedTestSet({len(splits.test)} examples, unused)"
    model = nearest_class_mean(few_labels(splits.train.x, splits.train.y, 5, seed=0), None, 0)
    expected = accuracy(model, splits.test)
    assert ex.predict_with(model, splits.test.x).shape == (len(splits.test),)
    score = sealed.evaluate(model, "nearest mean · 5 labels")
    assert score == pytest.approx(expected) and 0.5 < score < 1.0
    assert sealed.used_by == "nearest mean · 5 labels" and sealed.score == score
    assert repr(sealed).endswith("used by nearest mean · 5 labels)")
    perfect = lambda x: splits.test.y  # noqa: E731  (would score 1.0 if it were asked)
    with pytest.raises(TestSetAlreadyUsed, match=rf"nearest mean · 5 labels \({score:.3f}\)"):
        sealed.evaluate(perfect, "the better one")
    assert sealed.used_by == "nearest mean · 5 labels" and sealed.score == score
    assert issubclass(TestSetAlreadyUsed, RuntimeError)


def test_a_model_that_cannot_predict_does_not_use_up_the_test_set():
    test = Data(torch.rand(20, 64), torch.arange(20) % 10)
    sealed = SealedTestSet(test)
    with pytest.raises(ValueError, match="one class label per example"):
        sealed.evaluate(lambda x: torch.zeros(len(x), 10), "logits by mistake")
    assert sealed.used_by is None and "unused" in repr(sealed)
    assert sealed.evaluate(lambda x: test.y) == 1.0
    assert sealed.used_by == "the chosen model"


# --- two-way comparisons on validation --------------------------------------------------------


def one_image_worse(splits, base):
    """A deterministic method: ``base``'s model, wrong on one more validation image."""
    target_row = None

    def method(train, val, seed):
        nonlocal target_row
        model = base(train, val, seed)
        if target_row is None:  # the first validation image the base model gets right
            right = (model(splits.val.x) == splits.val.y).nonzero()
            target_row = splits.val.x[right[0, 0]]

        def worse(x):
            out = model(x)
            hit = (x == target_row).all(dim=1)
            return torch.where(hit, (out + 1) % 10, out)

        return worse

    return method


def test_deterministic_candidates_one_image_apart_cannot_be_told_apart(splits,
                                                                       nearest_class_mean):
    methods = {"nearest mean": nearest_class_mean,
               "one worse": one_image_worse(splits, nearest_class_mean)}
    rows = search(methods, splits.train, splits.val, budget=None, seeds=(0, 1, 2),
                  progress=False)
    assert all(len(r["val_correct"]) == len(splits.val) for r in rows)
    board = leaderboard(rows)
    gap = board[0]["mean"] - board[1]["mean"]
    assert winner(board) == "nearest mean" and gap == pytest.approx(1 / len(splits.val))
    # the same one image on every seed: no spread over seeds, yet one image is no evidence
    assert tied_with(board) == ["one worse"]


def test_guide_gives_two_way_intervals_for_both_comparisons(splits, nearest_class_mean):
    methods = {"full": nearest_class_mean, "scratch": one_image_worse(splits, nearest_class_mean),
               "linear_probe": always(3)}
    board = leaderboard(search(methods, splits.train, splits.val, budget=5, seeds=(0, 1, 2),
                               progress=False))
    [row] = guide({"digits": board}, baseline="scratch", probe="linear_probe")
    assert row["best on validation"] == "full"
    assert row["cannot tell apart from it"] == "scratch"
    assert row["pre-training vs scratch"].startswith("cannot tell (+0.003, 95 % interval [")
    assert row["feature extraction vs best"].startswith("behind (-")
    assert "95 % interval" in row["feature extraction vs best"]
    # named "scratch" and "linear_probe", but not told so: no comparison columns
    assert len(guide({"digits": board})[0]) == 4


def test_guide_knows_no_candidate_by_name_until_told(board):
    [plain] = guide({"digits": board})  # no baseline or probe named: the race's columns only
    assert list(plain) == ["setting", "best on validation", "cannot tell apart from it",
                           "pick (cheapest of those)"]
    with pytest.raises(KeyError, match=r"baseline='scratch' is not a candidate .*'top'"):
        guide({"digits": board}, baseline="scratch")  # a name that is not on the board


def test_comparisons_give_one_record_per_other_candidate(board):
    from transferkit.foundations.verdicts import chance_note

    records = comparisons(board)
    assert [r["method"] for r in records] == ["near", "wide", "low"]
    assert all(r["baseline"] == "top" and r["metric"] == "val_accuracy" for r in records)
    assert [r["method"] for r in records if r["verdict"] == "cannot tell apart"] == \
        tied_with(board)
    assert chance_note(records).startswith("3 verdicts at the 95 % level: 0 beats, 2 loses to")
    with pytest.raises(KeyError, match="no candidate 'nope'"):
        comparisons(board, "nope")
