"""transferkit.stats: paired comparisons over seeds and test images, checked against
independent computations (scipy's paired t-test, a brute-force bootstrap)."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from transferkit.stats import compare_methods, describe, mean_interval


def study(method_scores, baseline_scores, *, budget=5, method="finetune", baseline="logreg",
          correct=None):
    """Rows for two methods, one per seed; ``correct``: (method arrays, baseline arrays)."""
    rows = []
    for seed, (a, b) in enumerate(zip(method_scores, baseline_scores, strict=True)):
        for name, score, which in ((method, a, 0), (baseline, b, 1)):
            row = {"method": name, "budget": budget, "seed": seed, "test_accuracy": float(score)}
            if correct is not None:
                row["test_correct"] = correct[which][seed]
            rows.append(row)
    return rows


def correct_study(k=6, n=300, seed=0):
    """Rows with test_correct: the two methods agree on most images, not on all."""
    rng = np.random.default_rng(seed)
    a = (rng.random((k, n)) < 0.85).astype(int)
    flip = rng.random((k, n)) < 0.2  # the baseline disagrees on about a fifth of the images
    b = np.where(flip, 1 - a, a) * (rng.random((k, n)) < 0.95)
    return study(a.mean(axis=1), b.mean(axis=1), correct=(a, b)), a, b


# --- the interval, against independent computations ----------------------------------------


def test_seeds_only_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.05, 7), rng.normal(0.78, 0.05, 7)
    [record] = compare_methods(study(a, b), "finetune", "logreg")
    expected = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert record["source"] == "seeds only" and record["seeds"] == 7
    assert record["gap"] == pytest.approx(np.mean(a - b), abs=1e-12)
    assert record["low"] == pytest.approx(expected.low, abs=1e-12)
    assert record["high"] == pytest.approx(expected.high, abs=1e-12)
    assert record["half_width"] == pytest.approx((expected.high - expected.low) / 2, abs=1e-12)


@pytest.mark.parametrize("level", [0.8, 0.99])
def test_the_level_is_the_intervals_coverage(level):
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.8, 0.05, 5), rng.normal(0.8, 0.05, 5)
    [record] = compare_methods(study(a, b), "finetune", "logreg", level=level)
    expected = scipy.stats.ttest_rel(a, b).confidence_interval(level)
    assert (record["low"], record["high"]) == pytest.approx((expected.low, expected.high),
                                                            abs=1e-12)
    assert record["level"] == level


def test_test_set_part_matches_a_brute_force_paired_bootstrap_over_images():
    rows, a, b = correct_study(k=6, n=400)
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["source"] == "seeds and test images"
    d = a.mean(axis=1) - b.mean(axis=1)
    t = scipy.stats.t.ppf(0.975, len(d) - 1)
    v_test = (record["half_width"] / t) ** 2 - d.var(ddof=1) / len(d)
    # Brute force: draw the test set again (images with replacement, the same draw for
    # every seed and both methods) and see how much the mean gap over seeds moves.
    rng = np.random.default_rng(0)
    n = a.shape[1]
    gaps = [(a[:, idx] - b[:, idx]).mean() for idx in rng.integers(0, n, size=(4000, n))]
    assert math.sqrt(v_test) == pytest.approx(np.std(gaps), rel=0.05)
    assert v_test > 0


def test_only_images_the_methods_disagree_on_count():
    rows, a, b = correct_study(k=4, n=200)
    [before] = compare_methods(rows, "finetune", "logreg")
    # Make both methods right on every image where they agreed: the accuracies change,
    # the differences (and so the interval) do not.
    both = a == b
    a2, b2 = np.where(both, 1, a), np.where(both, 1, b)
    rows2 = study(a2.mean(axis=1), b2.mean(axis=1), correct=(a2, b2))
    [after] = compare_methods(rows2, "finetune", "logreg")
    assert after["gap"] == pytest.approx(before["gap"], abs=1e-12)
    assert after["half_width"] == pytest.approx(before["half_width"], abs=1e-12)


def test_the_test_set_part_is_added_only_to_test_accuracy():
    rows, _, _ = correct_study()
    for row in rows:
        row["val_accuracy"] = row["test_accuracy"]
    [test] = compare_methods(rows, "finetune", "logreg")
    [val] = compare_methods(rows, "finetune", "logreg", metric="val_accuracy")
    assert val["source"] == "seeds only" and test["source"] == "seeds and test images"
    assert val["gap"] == pytest.approx(test["gap"])
    assert val["half_width"] < test["half_width"]


def test_without_test_correct_on_every_row_the_interval_is_seeds_only():
    rows, _, _ = correct_study()
    del rows[0]["test_correct"]
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["source"] == "seeds only"


def test_identical_differences_give_a_point_interval():
    [record] = compare_methods(study([0.5, 0.75, 0.25], [0.25, 0.5, 0.0]), "finetune", "logreg")
    assert record["low"] == record["high"] == record["gap"] == 0.25
    assert record["half_width"] == 0 and record["verdict"] == "beats"


# --- the verdicts ----------------------------------------------------------------------------


def test_a_small_margin_on_every_seed_beats_a_large_spread_over_seeds():
    rng = np.random.default_rng(3)
    shared = rng.uniform(-0.1, 0.1, 5)  # the labelled draw's luck, the same for both methods
    baseline = 0.8 + shared
    method = baseline + 0.01 + rng.normal(0, 0.001, 5)
    [record] = compare_methods(study(method, baseline), "finetune", "logreg")
    assert record["verdict"] == "beats" and record["low"] > 0
    # The old rule (std A + std B) would have called this noise.
    assert np.std(method, ddof=1) + np.std(baseline, ddof=1) > record["gap"]


def test_pure_noise_is_within_the_noise():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.8, 0.03, 8), rng.normal(0.8, 0.03, 8)
    [record] = compare_methods(study(a, b), "finetune", "logreg")
    assert record["low"] < 0 < record["high"]
    assert record["verdict"] == "within the noise of"


def test_a_positive_gap_inside_the_noise_is_not_a_win():
    # Differences +0.05, -0.01, +0.03: the mean gap is positive, the interval holds zero.
    [record] = compare_methods(study([0.85, 0.79, 0.83], [0.8, 0.8, 0.8]), "finetune", "logreg")
    assert record["gap"] > 0 and record["low"] < 0
    assert record["verdict"] == "within the noise of"
    [flipped] = compare_methods(study([0.8, 0.8, 0.8], [0.85, 0.79, 0.83]), "finetune", "logreg")
    assert flipped["gap"] < 0 < flipped["high"]
    assert flipped["verdict"] == "within the noise of"


def test_a_worse_method_loses():
    rng = np.random.default_rng(5)
    b = rng.normal(0.8, 0.05, 5)
    a = b - 0.05 + rng.normal(0, 0.01, 5)
    [record] = compare_methods(study(a, b), "finetune", "logreg")
    assert record["high"] < 0 and record["verdict"] == "loses to"


def test_a_worse_method_loses_on_the_test_images_too():
    rng = np.random.default_rng(6)
    b = (rng.random((5, 500)) < 0.9).astype(int)
    a = b * (rng.random((5, 500)) < 0.9)  # wrong on a tenth of what the baseline gets right
    rows = study(a.mean(axis=1), b.mean(axis=1), correct=(a, b))
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["source"] == "seeds and test images" and record["verdict"] == "loses to"


def test_more_seeds_narrow_the_interval():
    def half_width(a, b):
        return compare_methods(study(a, b), "finetune", "logreg")[0]["half_width"]

    # One study, adding seeds: 3, 5, 10, then 20 from the same noisy generator.
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.8, 0.05, 20), rng.normal(0.8, 0.05, 20)
    widths = [half_width(a[:k], b[:k]) for k in (3, 5, 10, 20)]
    assert all(wide > narrow for wide, narrow in zip(widths, widths[1:], strict=False))
    assert widths[0] > 2 * widths[-1]
    # One study can be lucky (a small spread at 3 seeds); averaged over many it is not.
    averaged = [np.mean([half_width(rng.normal(0.8, 0.05, k), rng.normal(0.8, 0.05, k))
                         for _ in range(200)]) for k in (3, 5, 10, 20)]
    assert all(wide > narrow for wide, narrow in zip(averaged, averaged[1:], strict=False))
    assert averaged[0] > 4 * averaged[-1]


def test_one_seed_cannot_be_compared():
    [record] = compare_methods(study([0.9], [0.8]), "finetune", "logreg")
    assert record["verdict"] == "needs 2+ seeds to compare with"
    assert record["seeds"] == 1 and record["gap"] == pytest.approx(0.1)
    assert math.isnan(record["low"]) and math.isnan(record["high"])
    assert math.isnan(record["half_width"])
    assert "seeds=range(5)" in record["note"]


# --- rows as studies make them -----------------------------------------------------------------


def test_test_correct_as_list_array_or_tensor_gives_the_same_record():
    _, a, b = correct_study(k=3, n=50)
    scores = a.mean(axis=1), b.mean(axis=1)
    records = []
    for convert in (lambda x: x.tolist(), np.asarray, torch.as_tensor,
                    lambda x: torch.as_tensor(x).bool()):
        correct = ([convert(x) for x in a], [convert(x) for x in b])
        records.append(compare_methods(study(*scores, correct=correct), "finetune", "logreg"))
    assert records[0][0]["source"] == "seeds and test images"
    assert all(r == records[0] for r in records[1:])


def test_seeds_run_for_only_one_method_are_left_out():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0.8, 0.05, 4), rng.normal(0.8, 0.05, 4)
    rows = study(a, b)
    rows.append({"method": "finetune", "budget": 5, "seed": 99, "test_accuracy": 0.0})
    rows.append({"method": "logreg", "budget": 5, "seed": 42, "test_accuracy": 1.0})
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["seeds"] == 4
    assert record["gap"] == pytest.approx(np.mean(a - b), abs=1e-12)


def test_one_record_per_budget_in_the_order_budgets_appear():
    rng = np.random.default_rng(9)
    rows = []
    for budget in (10, "all", 1, None):
        rows += study(rng.normal(0.8, 0.05, 3), rng.normal(0.7, 0.05, 3), budget=budget)
    rows += study([0.5, 0.6], [0.4, 0.5], budget=3, method="other")  # no logreg pairs for it
    records = compare_methods(rows, "finetune", "logreg")
    assert [r["budget"] for r in records] == [10, "all", 1, None]
    assert all(r["method"] == "finetune" and r["baseline"] == "logreg" for r in records)
    assert all(r["metric"] == "test_accuracy" for r in records)


def test_unknown_method_names_the_methods_present():
    rows = study([0.9, 0.8], [0.8, 0.7])
    with pytest.raises(ValueError, match=r"'fintune'.*\['finetune', 'logreg'\]"):
        compare_methods(rows, "fintune", "logreg")
    with pytest.raises(ValueError, match=r"'nope'.*\['finetune', 'logreg'\]"):
        compare_methods(rows, "finetune", "nope")


def test_missing_metric_names_the_available_keys():
    with pytest.raises(ValueError, match=r"'macro_f1'.*'test_accuracy'"):
        compare_methods(study([0.9, 0.8], [0.8, 0.7]), "finetune", "logreg", metric="macro_f1")


def test_test_correct_of_different_lengths_is_refused():
    rows, _, _ = correct_study(k=3, n=20)
    rows[-1]["test_correct"] = rows[-1]["test_correct"][:-1]
    with pytest.raises(ValueError, match=r"different lengths.*\[19, 20\]"):
        compare_methods(rows, "finetune", "logreg")


def test_test_correct_that_is_not_zero_one_is_refused():
    rows, _, _ = correct_study(k=3, n=20)
    rows[0]["test_correct"] = [0.5] * 20
    with pytest.raises(ValueError, match="0/1"):
        compare_methods(rows, "finetune", "logreg")


def test_a_seed_run_twice_is_refused():
    rows = study([0.9, 0.8], [0.8, 0.7])
    rows.append(dict(rows[0]))
    with pytest.raises(ValueError, match="seed 0"):
        compare_methods(rows, "finetune", "logreg")


def test_methods_without_a_shared_seed_are_refused():
    rows = [{"method": "finetune", "budget": 5, "seed": 0, "test_accuracy": 0.9},
            {"method": "logreg", "budget": 5, "seed": 1, "test_accuracy": 0.8}]
    with pytest.raises(ValueError, match="share no"):
        compare_methods(rows, "finetune", "logreg")


def test_a_level_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="level"):
        compare_methods(study([0.9, 0.8], [0.8, 0.7]), "finetune", "logreg", level=95)


# --- mean_interval and describe ----------------------------------------------------------------


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_mean_interval_is_scipys_t_interval(level):
    values = [0.91, 0.88, 0.95, 0.90, 0.86]
    mean, half = mean_interval(values, level)
    low, high = scipy.stats.t.interval(level, len(values) - 1, loc=np.mean(values),
                                       scale=scipy.stats.sem(values))
    assert mean == pytest.approx(np.mean(values), abs=1e-12)
    assert (mean - half, mean + half) == pytest.approx((low, high), abs=1e-12)


def test_mean_interval_of_one_value_has_no_width():
    mean, half = mean_interval([0.9])
    assert mean == 0.9 and math.isnan(half)
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def record(**changes):
    base = {"method": "finetune", "baseline": "logreg", "budget": 5, "seeds": 5, "gap": 0.034,
            "low": 0.010, "high": 0.058, "verdict": "beats", "level": 0.95}
    return {**base, **changes}


def test_describe_says_the_verdict_gap_and_interval():
    assert describe(record()) == ("finetune beats logreg at 5 labels per class: gap +0.034, "
                                  "95 % interval [+0.010, +0.058] over 5 seeds")
    assert describe(record(verdict="loses to", gap=-0.02, low=-0.03, high=-0.01, budget=1,
                           level=0.9)) == (
        "finetune loses to logreg at 1 label per class: gap -0.020, "
        "90 % interval [-0.030, -0.010] over 5 seeds")
    assert describe(record(verdict="within the noise of", gap=0.0, low=-0.01, high=0.01,
                           budget="all", seeds=3)) == (
        "finetune is within the noise of logreg with all labels: gap +0.000, "
        "95 % interval [-0.010, +0.010] over 3 seeds")
    assert describe(record(budget=None)).startswith("finetune beats logreg: gap +0.034")


def test_describe_asks_for_more_seeds_after_one():
    [one] = compare_methods(study([0.9], [0.8]), "finetune", "logreg")
    assert describe(one) == ("finetune needs 2+ seeds to compare with logreg at 5 labels per "
                             "class: gap +0.100 over 1 seed (run more seeds, e.g. seeds=range(5))")


def test_describe_reads_compare_methods_records():
    rng = np.random.default_rng(10)
    b = rng.normal(0.8, 0.05, 5)
    [result] = compare_methods(study(b + 0.05, b), "finetune", "logreg")
    assert describe(result).startswith("finetune beats logreg at 5 labels per class: gap +0.050")
