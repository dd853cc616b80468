import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from transferkit.foundations.data import Data, few_labels, load_digits
from transferkit.methods import label_budget as ex
from transferkit.training.loop import epochs_for_steps


def linear():
    return nn.Linear(64, 10)


def test_study_rows_cover_every_method_budget_and_seed(splits, nearest_class_mean):
    seen = []

    def recording(train, val, seed):
        seen.append((train, val, seed))
        return nearest_class_mean(train, val, seed)

    rows = ex.label_budget_study({"nearest mean": recording, "again": nearest_class_mean},
                                 splits, budgets=(1, 5, None), seeds=(0, 3), progress=False)
    assert len(rows) == 3 * 2 * 2
    assert [(r["method"], r["budget"], r["seed"]) for r in rows[:4]] == [
        ("nearest mean", 1, 0), ("again", 1, 0), ("nearest mean", 1, 3), ("again", 1, 3)]
    assert {r["n_train"] for r in rows if r["budget"] == 5} == {50}
    everything = [r for r in rows if r["budget"] is None]
    assert {r["n_train"] for r in everything} == {len(splits.train)}
    assert everything[0]["per_class"] == pytest.approx(len(splits.train) / 10)
    # the labelled subset is few_labels(train, k, seed); val is the whole val set; no test
    train, val, seed = seen[1]
    expected = few_labels(splits.train.x, splits.train.y, 1, seed=3)
    assert seed == 3 and torch.equal(train.x, expected.x) and torch.equal(train.y, expected.y)
    assert val is splits.val
    assert all(v is splits.val for _, v, _ in seen)
    # the accuracies are measured on the fixed test and val sets
    model = nearest_class_mean(expected, None, 3)
    test_acc = (model(splits.test.x) == splits.test.y).float().mean().item()
    assert rows[2]["test_accuracy"] == pytest.approx(test_acc)
    val_acc = (model(splits.val.x) == splits.val.y).float().mean().item()
    assert rows[2]["val_accuracy"] == pytest.approx(val_acc)
    assert all(r["seconds"] >= 0 for r in rows)


def test_a_study_frees_each_model_before_the_next_run_trains(splits, nearest_class_mean):
    """A fine-tuned transformer is 0.2 GB with its gradients: two alive at once took
    lesson 07's kernel over its memory budget."""
    import gc
    import weakref

    earlier = []

    def remembering(train, val, seed):
        gc.collect()
        alive = [ref() for ref in earlier if ref() is not None]
        assert not alive, "the previous run's model is still alive while this one trains"
        model = nearest_class_mean(train, val, seed)
        earlier.append(weakref.ref(model))
        return model

    ex.label_budget_study({"remembering": remembering}, splits, budgets=(1, 5), seeds=(0, 1),
                          progress=False)
    assert len(earlier) == 4


def test_study_is_reproducible_for_a_seed(splits):
    method = ex.fit_method(linear, steps=20, lr=1e-2)
    kwargs = dict(budgets=(2, 10), seeds=(1,), progress=False)

    def run():
        rows = ex.label_budget_study({"linear": method}, splits, **kwargs)
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    first = run()
    torch.manual_seed(123)  # the global state must not matter: the method seeds itself
    assert run() == first
    other = ex.label_budget_study({"linear": method}, splits, budgets=(2,), seeds=(2,),
                                  progress=False)
    assert other[0]["test_accuracy"] != first[0]["test_accuracy"]


def test_more_labels_help_the_logistic_baseline(splits):
    rows = ex.label_budget_study({"logistic": ex.logistic_regression}, splits,
                                 budgets=(1, None), seeds=(0, 1), progress=False)
    summary = ex.summarise(rows)
    one, everything = summary
    assert everything["mean"] > 0.93  # the known bar on the digits
    assert everything["std"] == 0.0  # all labels: the same fit for every seed
    assert 0.3 < one["mean"] < everything["mean"] - 0.15


def test_logistic_regression_is_a_fitted_sklearn_model(splits):
    model = ex.logistic_regression(splits.train, splits.val, seed=0)
    predicted = ex.predict_with(model, splits.test.x)
    assert predicted.shape == (len(splits.test),)
    # images are flattened, so the same baseline works on (N, 1, 8, 8) inputs
    images = Data(splits.train.x.reshape(-1, 1, 8, 8), splits.train.y)
    same = ex.logistic_regression(images, None, seed=0)
    assert np.array_equal(ex.predict_with(same, splits.test.x.reshape(-1, 1, 8, 8)), predicted)


def test_summarise_mean_and_spread():
    rows = [
        {"method": "a", "budget": 1, "per_class": 1.0, "n_train": 10, "test_accuracy": v}
        for v in (0.5, 0.7, 0.9)
    ] + [{"method": "a", "budget": None, "per_class": 100.0, "n_train": 1000,
          "test_accuracy": 0.95}]
    small, everything = ex.summarise(rows)
    assert small["mean"] == pytest.approx(0.7)
    assert small["std"] == pytest.approx(0.2)  # sample standard deviation (n - 1)
    assert (small["min"], small["max"], small["n"]) == (0.5, 0.9, 3)
    assert small["metric"] == "test_accuracy" and small["n_train"] == 10
    assert everything["budget"] is None and everything["std"] == 0.0 and everything["n"] == 1
    with pytest.raises(KeyError, match="no column 'val_accuracy'"):
        ex.summarise(rows, metric="val_accuracy")
    with pytest.raises(ValueError, match="no rows"):
        ex.summarise([])


def summary_of(**cells):
    """A summary with one row per 'method_budget=(mean, half_width)'."""
    rows = []
    for key, (mean, half) in cells.items():
        method, budget = key.split("_")
        budget = None if budget == "all" else int(budget)
        rows.append({"method": method, "budget": budget, "per_class": budget or 100,
                     "n_train": 10 * (budget or 100), "metric": "test_accuracy",
                     "mean": mean, "half_width": half, "std": half / 2, "min": mean - half,
                     "max": mean + half, "n": 3})
    return rows


def test_tables_show_the_mean_and_its_interval_per_budget_and_method():
    summary = summary_of(mlp_1=(0.61, 0.05), lr_1=(0.6, 0.04), mlp_all=(0.97, 0.004),
                         lr_all=(0.96, 0.0))
    text = ex.summary_table(summary)
    lines = text.splitlines()
    assert lines[0].split() == ["labels", "per", "class", "|", "mlp", "|", "lr"]
    assert "0.610 ± 0.050" in lines[2] and lines[2].strip().startswith("1 ")
    assert lines[3].strip().startswith("all") and "0.960 ± 0.000" in lines[3]
    assert lines[-1] == "test accuracy: mean ± half-width of its 95 % interval over 3 seeds"
    page = ex.summary_html(summary)
    assert page.count("<tr>") == 3 and "<td>0.970 ± 0.004</td>" in page
    assert "95 % interval" in page
    summary[0]["half_width"] = math.nan  # one seed: no interval to show
    assert ex.mean_text(summary[0]) == "0.610"


def test_summarise_gives_an_interval_that_narrows_with_seeds_and_the_spread_that_does_not():
    rng = np.random.default_rng(0)
    values = rng.normal(0.8, 0.05, size=40)
    def summary(k):
        rows = [{"method": "a", "budget": 5, "per_class": 5.0, "n_train": 50,
                 "test_accuracy": v} for v in values[:k]]
        return ex.summarise(rows)[0]
    few, many = summary(10), summary(40)
    assert many["half_width"] < few["half_width"] / 2
    assert 0.8 < many["std"] / few["std"] < 1.25  # the spread stays about the same
    assert few["half_width"] == pytest.approx(
        scipy.stats.t.ppf(0.975, 9) * few["std"] / 10 ** 0.5)  # t · s / √k, k = 10


def per_run_rows(gaps_by_budget, spread=0.1, seeds=5):
    """Study-like rows: per budget, 'lr' swings a lot from seed to seed and 'mlp' is
    'lr' plus that budget's gap (a number, or one per seed)."""
    rng = np.random.default_rng(1)
    rows = []
    for budget, gap in gaps_by_budget.items():
        gap = np.broadcast_to(gap, (seeds,))
        for seed in range(seeds):
            base = 0.7 + spread * rng.standard_normal()
            for method, acc in (("mlp", base + gap[seed]), ("lr", base)):
                rows.append({"method": method, "budget": budget, "seed": seed,
                             "per_class": budget or 100, "n_train": 10 * (budget or 100),
                             "test_accuracy": acc})
    return rows


def test_compare_to_baseline_pairs_runs_by_seed():
    noise = np.random.default_rng(2).normal(0, 0.05, size=5)
    rows = per_run_rows({1: 0.02, 10: noise - noise.mean(), None: -0.03})
    one, ten, everything = ex.compare_to_baseline(rows, "mlp", "lr")
    # +0.02 on every seed, while both swing by ±0.1: a real, small win
    assert one.startswith("mlp beats lr at 1 label per class: gap +0.020")
    assert "95 % interval [+0.020, +0.020] over 5 seeds (seeds only" in one
    assert ten.startswith("mlp vs lr at 10 labels per class: cannot tell apart at this size")
    assert everything.startswith("mlp loses to lr with all labels: gap -0.030")
    assert "(means " in everything
    with pytest.raises(ValueError, match="no runs of method 'cnn'"):
        ex.compare_to_baseline(rows, "cnn", "lr")


def test_compare_to_baseline_prints_the_means_of_the_paired_runs():
    rows = per_run_rows({5: 0.02}, seeds=3)
    rows.append({"method": "lr", "budget": 5, "seed": 9, "per_class": 5, "n_train": 50,
                 "test_accuracy": 0.0})  # a seed the MLP was never run with
    paired = [r["test_accuracy"] for r in rows if r["seed"] != 9]
    [sentence] = ex.compare_to_baseline(rows, "mlp", "lr")
    mlp, lr = np.mean(paired[0::2]), np.mean(paired[1::2])
    assert sentence.endswith(f"(means {mlp:.3f} vs {lr:.3f})")


def test_compare_to_baseline_keeps_its_records_for_counting(splits, nearest_class_mean):
    from transferkit.foundations.verdicts import chance_note

    rows = ex.label_budget_study({"nearest": nearest_class_mean,
                                  "lr": ex.logistic_regression}, splits, budgets=(2, 5),
                                 seeds=(0, 1, 2), progress=False)
    verdicts = ex.compare_to_baseline(rows, "nearest", "lr")
    assert len(verdicts) == len(verdicts.records) == 2
    assert all(r["source"] == "seeds and items" and r["items"] == 360
               for r in verdicts.records)
    assert chance_note(verdicts.records).startswith("2 verdicts at the 95 % level")


def test_compare_to_baseline_refuses_a_summary():
    with pytest.raises(ValueError, match="per-run rows"):
        ex.compare_to_baseline(summary_of(mlp_1=(0.7, 0.01), lr_1=(0.6, 0.01)), "mlp", "lr")


def test_study_rows_keep_which_test_images_each_run_got_right(splits):
    rows = ex.label_budget_study({"logistic": ex.logistic_regression}, splits, budgets=(2, 5),
                                 seeds=(0, 1), progress=False)
    for row in rows:
        assert 0 < row["test_macro_f1"] <= 1  # from foundations.metrics, beside the accuracy
        right = row["test_correct"]
        assert isinstance(right, tuple) and len(right) == len(splits.test)
        assert {type(v) for v in right} == {bool}
        assert np.mean(right) == pytest.approx(row["test_accuracy"])
    (record,) = [r for r in ex.compare_to_baseline(rows, "logistic", "logistic")][:1]
    assert "cannot tell apart" in record  # a method against itself: gap 0, interval [0, 0]


def test_study_rows_keep_per_item_results_and_fingerprints_of_every_set(splits,
                                                                        nearest_class_mean):
    shifted = Data(splits.test.x.flip(1), splits.test.y)
    rows = ex.label_budget_study({"nearest": nearest_class_mean}, splits, budgets=(3,),
                                 seeds=(0, 1), also_test={"shifted": shifted}, progress=False)
    for row in rows:
        for split, data in (("val", splits.val), ("test", splits.test), ("shifted", shifted)):
            assert len(row[f"{split}_correct"]) == len(data)
            assert np.mean(row[f"{split}_correct"]) == pytest.approx(row[f"{split}_accuracy"])
            assert row[f"{split}_fingerprint"] == ex.data_fingerprint(data)
    fingerprints = {ex.data_fingerprint(d) for d in (splits.val, splits.test, shifted)}
    assert len(fingerprints) == 3  # the same size, other images: other fingerprints
    assert ex.data_fingerprint(Data(splits.test.x.clone(), splits.test.y.clone())) == \
        ex.data_fingerprint(splits.test)
    with pytest.raises(ValueError, match="'val' and 'test' are taken"):
        ex.label_budget_study({"nearest": nearest_class_mean}, splits, budgets=(3,),
                              seeds=(0,), also_test={"test": shifted}, progress=False)


def test_runs_from_two_test_sets_of_one_size_are_not_compared(splits, nearest_class_mean):
    other = Data(splits.test.x.flip(1), splits.test.y)
    first = ex.label_budget_study({"a": nearest_class_mean}, splits, budgets=(3,),
                                  seeds=(0, 1), progress=False)
    second = ex.label_budget_study({"b": nearest_class_mean}, (splits.train, splits.val, other),
                                   budgets=(3,), seeds=(0, 1), progress=False)
    with pytest.raises(ValueError, match="different test sets"):
        ex.compare_to_baseline(first + second, "a", "b")
    assert ex.compare_to_baseline(first + second, "a", "b", metric="val_accuracy")


def test_study_rows_and_summary_carry_the_test_set_size(splits):
    rows = ex.label_budget_study({"lr": ex.logistic_regression}, splits, budgets=(1,),
                                 seeds=(0, 1), progress=False)
    assert {r["n_test"] for r in rows} == {len(splits.test)}
    assert ex.summarise(rows)[0]["n_test"] == len(splits.test)


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ((0,), "positive number"),
        ((2.5,), "positive number"),
        ((True,), "positive number"),
        ((1, 1), "repeat"),
        ((), "empty"),
        ((1, 500), r"500 labels per class is more than the smallest class .* has \(\d+\)"),
    ],
)
def test_bad_budgets_are_clear_errors(splits, budgets, message, nearest_class_mean):
    with pytest.raises(ValueError, match=message):
        ex.label_budget_study({"m": nearest_class_mean}, splits, budgets=budgets,
                              progress=False)


def test_a_budget_too_large_says_what_to_use():
    y = torch.tensor([0] * 5 + [1] * 3)
    with pytest.raises(ValueError, match="at most 3, or None"):
        ex.check_budgets((4,), y)
    assert ex.check_budgets([1, 3, None], y) == (1, 3, None)


def test_bad_methods_and_seeds(splits, nearest_class_mean):
    with pytest.raises(ValueError, match="methods is empty"):
        ex.label_budget_study({}, splits, progress=False)
    with pytest.raises(TypeError, match="not a function"):
        ex.label_budget_study({"m": 3}, splits, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        ex.label_budget_study({"m": nearest_class_mean}, splits, seeds=(), progress=False)
    with pytest.raises(ValueError, match="seeds"):
        ex.label_budget_study({"m": nearest_class_mean}, splits, seeds=(-1,), progress=False)


def test_a_method_must_return_something_that_predicts(splits):
    with pytest.raises(TypeError, match="returned float"):
        ex.label_budget_study({"m": lambda train, val, seed: 0.9}, splits, budgets=(1,),
                              seeds=(0,), progress=False)
    with pytest.raises(ValueError, match="one class label per example"):
        ex.label_budget_study({"m": lambda train, val, seed: (lambda x: x)}, splits,
                              budgets=(1,), seeds=(0,), progress=False)


def test_predict_with_a_torch_model_uses_the_argmax(splits):
    model = linear()
    with torch.no_grad():
        expected = model(splits.test.x).argmax(1).numpy()
    assert np.array_equal(ex.predict_with(model, splits.test.x), expected)


@pytest.mark.parametrize(("n", "batch", "steps", "epochs"),
                         [(10, 64, 300, 300), (100, 64, 300, 150), (1077, 64, 300, 18),
                          (1077, 64, 10, 1), (64, 64, 1, 1)])
def test_epochs_for_steps(n, batch, steps, epochs):
    assert epochs_for_steps(n, batch, steps) == epochs
    assert epochs * math.ceil(n / batch) >= steps


def test_fit_method_trains_a_fresh_seeded_model(splits):
    built = []

    def make():
        built.append(linear())
        return built[-1]

    method = ex.fit_method(make, steps=30, lr=1e-2)
    labelled = few_labels(splits.train.x, splits.train.y, 10, seed=0)
    first, second = method(labelled, splits.val, 4), method(labelled, splits.val, 4)
    assert first is not second and len(built) == 2
    assert torch.equal(first.weight, second.weight)  # seeded: the same run twice
    assert not torch.equal(first.weight, method(labelled, splits.val, 5).weight)
    with pytest.raises(ValueError, match="sets 'epochs' itself"):
        ex.fit_method(make, epochs=3)


def test_a_budget_is_written_one_way_in_a_table_cell_and_one_way_in_words():
    from transferkit.foundations.data import budget_label, budget_words
    from transferkit.foundations.verdicts import describe

    assert [budget_label(b) for b in (1, 50, None)] == ["1", "50", "all"]
    assert [budget_words(b) for b in (1, np.int64(3), None, "all")] == [
        "1 label per class", "3 labels per class", "all labels", "all labels"]
    record = {"method": "a", "baseline": "b", "seeds": 3, "items": 100, "gap": 0.1,
              "low": 0.05, "high": 0.15, "verdict": "beats"}
    assert describe({**record, "budget": 1}).startswith(f"a beats b at {budget_words(1)}:")
    assert describe({**record, "budget": "all"}).startswith("a beats b with all labels:")


def test_fit_method_does_not_reset_the_notebooks_random_numbers():
    from torch import nn

    from transferkit.foundations.data import few_labels
    from transferkit.methods.label_budget import fit_method

    method = fit_method(lambda: nn.Linear(64, 10), steps=5, lr=1e-2)
    subset = few_labels(*load_digits(), per_class=2)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    first = method(subset, None, 0)
    assert torch.equal(torch.rand(2), expected)
    assert torch.equal(first.weight, method(subset, None, 0).weight)  # a seed is a seed


# --- lesson 06: a study on validation only (the search of transferkit.methods.selection) ---


def test_study_without_a_test_set_measures_validation_only(splits, nearest_class_mean):
    seen = []

    def recording(train, val, seed):
        seen.append(val)
        return nearest_class_mean(train, val, seed)

    rows = ex.label_budget_study({"nearest mean": recording}, (splits.train, splits.val, None),
                                 budgets=(2, None), seeds=(0, 1), progress=False)
    assert len(rows) == 4 and all(val is splits.val for val in seen)
    for row in rows:
        assert "test_accuracy" not in row and "n_test" not in row
        assert {"val_accuracy", "seconds"} <= set(row)
    labelled = few_labels(splits.train.x, splits.train.y, 2, seed=1)
    model = nearest_class_mean(labelled, None, 1)
    assert rows[1]["val_accuracy"] == pytest.approx(
        (model(splits.val.x) == splits.val.y).float().mean().item())
    summary = ex.summarise(rows, metric="val_accuracy")
    assert [s["budget"] for s in summary] == [2, None] and "n_test" not in summary[0]
    with pytest.raises(KeyError, match="no column 'test_accuracy'"):
        ex.summarise(rows)  # the default metric is not there to summarise


def test_rows_carry_each_classs_recall_on_the_test_set(splits, nearest_class_mean):
    """Seed 004's metrics: each class's recall beside accuracy and macro-F1."""
    [row] = ex.label_budget_study({"ncm": nearest_class_mean}, splits, budgets=(5,),
                                  seeds=(0,), progress=False)
    test = splits.test
    right = np.array(row["test_correct"])
    for c in range(10):
        recall = right[test.y.numpy() == c].mean()
        assert row[f"test_recall_{c}"] == pytest.approx(recall)
