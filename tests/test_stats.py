"""transferkit.foundations.verdicts: paired comparisons over seeds and test items, checked against
independent computations (scipy's paired t-test, a least-squares two-way ANOVA) and
against simulated studies whose true gap is known."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from transferkit.foundations.verdicts import (
    BEATS,
    CANNOT_TELL,
    LOSES,
    TIES,
    chance_note,
    compare_leads,
    compare_methods,
    compare_per_item,
    describe,
    mean_interval,
    needed_to_resolve,
    two_way_interval,
)


def study(method_scores, baseline_scores, *, budget=5, method="finetune", baseline="logreg",
          correct=None, **extra):
    """Rows for two methods, one per seed; ``correct``: (method arrays, baseline arrays)."""
    rows = []
    for seed, (a, b) in enumerate(zip(method_scores, baseline_scores, strict=True)):
        for name, score, which in ((method, a, 0), (baseline, b, 1)):
            row = {"method": name, "budget": budget, "seed": seed, "test_accuracy": float(score),
                   **extra}
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


def anova_by_least_squares(d):
    """The two-way mean squares from a linear model with seed and item dummies (np.lstsq):
    a computation independent of the library's sums of squares."""
    k, n = d.shape
    y = d.ravel()
    seed_of, item_of = np.repeat(np.arange(k), n), np.tile(np.arange(n), k)

    def rss(*factors):
        x = np.column_stack([np.ones(k * n)] + [np.eye(size)[f][:, 1:] for f, size in factors])
        fit = np.linalg.lstsq(x, y, rcond=None)[0]
        return float(((y - x @ fit) ** 2).sum())

    full = rss((seed_of, k), (item_of, n))
    ms_seed = (rss((item_of, n)) - full) / (k - 1)
    ms_item = (rss((seed_of, k)) - full) / (n - 1)
    return ms_seed, ms_item, full / ((k - 1) * (n - 1))


# --- the two-way interval, against an independent computation -----------------------------


def test_two_way_mean_squares_match_a_least_squares_anova():
    rng = np.random.default_rng(0)
    d = rng.integers(-1, 2, size=(4, 30)).astype(float) + rng.normal(0, 0.3, (4, 1))
    result = two_way_interval(d)
    ms_seed, ms_item, ms_res = anova_by_least_squares(d)
    assert (result.ms_seed, result.ms_item, result.ms_res) == pytest.approx(
        (ms_seed, ms_item, ms_res), rel=1e-9)
    k, n = d.shape
    variance = (ms_seed + ms_item - ms_res) / (k * n)
    assert result.variance == pytest.approx(variance, rel=1e-9)
    nu = (ms_seed + ms_item - ms_res) ** 2 / (
        ms_seed ** 2 / (k - 1) + ms_item ** 2 / (n - 1) + ms_res ** 2 / ((k - 1) * (n - 1)))
    nu = min(nu, (k - 1) * variance / (ms_seed / (k * n)))  # the small-sample cap
    assert result.df == pytest.approx(nu, rel=1e-9)
    assert result.half_width == pytest.approx(
        scipy.stats.t.ppf(0.975, nu) * math.sqrt(variance), rel=1e-9)
    assert result.gap == pytest.approx(d.mean())


def test_two_way_variance_is_never_below_the_residual_part():
    rng = np.random.default_rng(1)
    d = rng.normal(0, 1, (3, 50))  # no seed or item effect: the combination can dip below
    d -= d.mean(axis=1, keepdims=True) - d.mean()  # no seed differences at all
    result = two_way_interval(d)
    assert result.variance >= result.ms_res / d.size - 1e-15
    assert result.variance == pytest.approx(max(
        (result.ms_seed + result.ms_item - result.ms_res), result.ms_res) / d.size)


def test_two_way_batches_are_the_same_as_one_study_at_a_time():
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 2, (5, 3, 40)) - rng.integers(0, 2, (5, 3, 40))
    together = two_way_interval(batch)
    for i, d in enumerate(batch):
        alone = two_way_interval(d)
        assert together.half_width[i] == pytest.approx(alone.half_width)
        assert together.gap[i] == pytest.approx(alone.gap)


def test_two_way_needs_two_seeds_and_two_items():
    with pytest.raises(ValueError, match="2 × 2 or more"):
        two_way_interval([[1, 0, 1]])


# --- simulated studies: coverage of the true gap ---------------------------------------------


TRUE_GAP = 0.03


def simulated_correctness(rng, studies, k, n, regime):
    """0/1 correctness of methods A and B, (studies, k, n) each, with E[acc A − acc B] =
    TRUE_GAP exactly. Each run is right on item i when the item's position v (uniform on
    [0, 1), so P(right) = the run's skill) is below the run's skill; skills vary by seed.
    "seeds": both methods see the same items the same way (they disagree only near the
    skill line) and the skills vary a lot from seed to seed. "items": the seeds barely
    matter, and B sees the items independently of A, so which items were drawn dominates."""
    seed_sd, shared = (0.04, 1.0) if regime == "seeds" else (0.005, 0.0)
    u = rng.random((studies, 1, n))
    skill_a = 0.80 + seed_sd * rng.standard_normal((studies, k, 1))
    skill_b = 0.80 - TRUE_GAP + seed_sd * rng.standard_normal((studies, k, 1))
    v_a = (u + 0.05 * rng.random((studies, k, n))) % 1
    v_b = (u + (1 - shared) * rng.random((studies, 1, n)) + 0.05 * rng.random((studies, k, n)))
    return (v_a < skill_a).astype(np.int8), (v_b % 1 < skill_b).astype(np.int8)


def plain_two_way_half_width(d):
    """The two-way estimator written out: (MS_seed + MS_item − MS_res)/(k n), floored at
    MS_res/(k n), Satterthwaite's ν without a cap; vectorised over the first axis."""
    k, n = d.shape[1:]
    grand, by_seed, by_item = d.mean((1, 2)), d.mean(2), d.mean(1)
    ms_s = n * ((by_seed - grand[:, None]) ** 2).sum(1) / (k - 1)
    ms_i = k * ((by_item - grand[:, None]) ** 2).sum(1) / (n - 1)
    ms_r = ((d - by_seed[:, :, None] - by_item[:, None, :] + grand[:, None, None]) ** 2
            ).sum((1, 2)) / ((k - 1) * (n - 1))
    combined = np.maximum(ms_s + ms_i - ms_r, ms_r)
    nu = combined ** 2 / (ms_s ** 2 / (k - 1) + ms_i ** 2 / (n - 1)
                          + ms_r ** 2 / ((k - 1) * (n - 1)))
    return scipy.stats.t.ppf(0.975, nu) * np.sqrt(combined / (k * n))


@pytest.mark.parametrize("regime", ["seeds", "items"])
def test_intervals_cover_the_true_gap_in_simulated_studies(regime):
    """Studies shaped like the course's (k seeds × n test items, 0/1 correctness): the 95 %
    intervals must cover the true gap in 93–99.5 % of studies (not 100 %: an interval that
    always covers is too wide) and be within 20 % as wide as the two-way estimator's.
    1,000 studies per shape, in batches (the next test checks that compare_methods gives
    these same intervals)."""
    rng = np.random.default_rng(2024)
    for k in (3, 5, 10):
        for n in (300, 1000):
            covered, widths, plain = [], [], []
            for _ in range(4):
                a, b = simulated_correctness(rng, 250, k, n, regime)
                d = (a - b).astype(float)
                result = two_way_interval(d)
                covered.append(np.abs(result.gap - TRUE_GAP) <= result.half_width)
                widths.append(result.half_width)
                plain.append(plain_two_way_half_width(d))
            coverage = np.concatenate(covered).mean()
            ratio = np.concatenate(widths).mean() / np.concatenate(plain).mean()
            assert 0.93 <= coverage <= 0.995, (regime, k, n, coverage)
            assert 0.8 <= ratio <= 1.2, (regime, k, n, ratio)


def test_compare_methods_gives_the_two_way_interval_of_the_simulated_studies():
    rng = np.random.default_rng(7)
    for regime in ("seeds", "items"):
        for k, n in ((3, 300), (10, 1000)):
            a, b = simulated_correctness(rng, 20, k, n, regime)
            batch = two_way_interval((a - b).astype(float))
            for s in range(20):
                rows = study(a[s].mean(1), b[s].mean(1), correct=(a[s], b[s]))
                [record] = compare_methods(rows, "finetune", "logreg")
                assert record["source"] == "seeds and items" and record["items"] == n
                assert record["gap"] == pytest.approx(batch.gap[s], abs=1e-12)
                assert record["half_width"] == pytest.approx(batch.half_width[s], rel=1e-9)


# --- without per-item results: seeds only, never narrower than the test set allows --------------


def test_seeds_only_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.05, 7), rng.normal(0.78, 0.05, 7)
    [record] = compare_methods(study(a, b), "finetune", "logreg")
    expected = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert record["source"] == "seeds only" and record["seeds"] == 7
    assert record["gap"] == pytest.approx(np.mean(a - b), abs=1e-12)
    assert (record["low"], record["high"]) == pytest.approx((expected.low, expected.high),
                                                            abs=1e-12)


@pytest.mark.parametrize("level", [0.8, 0.99])
def test_the_level_is_the_intervals_coverage(level):
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.8, 0.05, 5), rng.normal(0.8, 0.05, 5)
    [record] = compare_methods(study(a, b), "finetune", "logreg", level=level)
    expected = scipy.stats.ttest_rel(a, b).confidence_interval(level)
    assert (record["low"], record["high"]) == pytest.approx((expected.low, expected.high),
                                                            abs=1e-12)
    assert record["level"] == level


def test_a_constant_gap_without_per_item_results_is_not_a_point():
    # 176 against 175 of 179 images on every seed: two deterministic methods
    rows = study([176 / 179] * 3, [175 / 179] * 3, n_test=179)
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["source"] == "seeds only, with the test set's floor"
    assert record["half_width"] > 0.005 and record["verdict"] == CANNOT_TELL
    # the least the test set allows: the methods differ on at least one image of 179
    floor = math.sqrt((1 / 179 - (1 / 179) ** 2) / 179)
    assert record["half_width"] >= 1.9 * floor
    assert "seeds only: no per-item results" in describe(record)
    # the same runs with per-item results: the two-way interval, as wide
    a = np.ones((3, 179), int)
    a[:, :3] = 0
    b = a.copy()
    b[:, 3] = 0
    [paired] = compare_methods(study(a.mean(1), b.mean(1), correct=(a, b)), "finetune",
                               "logreg")
    assert paired["verdict"] == CANNOT_TELL and paired["half_width"] > 0.005


def test_without_test_correct_on_every_row_the_interval_is_seeds_only():
    rows, _, _ = correct_study()
    del rows[0]["test_correct"]
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["source"] == "seeds only"


def test_other_metrics_are_paired_by_their_own_items():
    rows, a, b = correct_study(k=4, n=100)
    for row, right in zip(rows, [x for pair in zip(a, b, strict=True) for x in pair],
                          strict=True):
        row["val_accuracy"], row["val_correct"] = row["test_accuracy"], right
    [test] = compare_methods(rows, "finetune", "logreg")
    [val] = compare_methods(rows, "finetune", "logreg", metric="val_accuracy")
    assert val["source"] == test["source"] == "seeds and items"
    assert val["half_width"] == pytest.approx(test["half_width"])
    assert val["items_name"] == "validation items" and test["items_name"] == "test items"


# --- the verdicts, on rows a study makes --------------------------------------------------------


@pytest.fixture(scope="module")
def real_rows():
    from transferkit.foundations.data import load_digits, train_val_test_split
    from transferkit.methods.label_budget import label_budget_study, logistic_regression

    def nearest_mean(train, val, seed):
        means = torch.stack([train.x[train.y == c].mean(0) for c in range(10)])
        return lambda x: torch.cdist(x, means).argmin(dim=1)

    splits = train_val_test_split(*load_digits(), seed=0)
    return label_budget_study({"nearest mean": nearest_mean, "logistic": logistic_regression},
                              splits, budgets=(1, 5, 20), seeds=range(3), progress=False)


def test_swapping_the_methods_flips_the_sign_and_the_verdict(real_rows):
    swap = {BEATS: LOSES, LOSES: BEATS, CANNOT_TELL: CANNOT_TELL}
    forward = compare_methods(real_rows, "nearest mean", "logistic")
    backward = compare_methods(real_rows, "logistic", "nearest mean")
    assert {r["verdict"] for r in forward} - {CANNOT_TELL}  # at least one decided verdict
    for one, two in zip(forward, backward, strict=True):
        assert one["source"] == "seeds and items" and one["items"] == 360
        assert two["gap"] == pytest.approx(-one["gap"])
        assert (two["low"], two["high"]) == pytest.approx((-one["high"], -one["low"]))
        assert two["verdict"] == swap[one["verdict"]]


def test_a_method_against_itself_never_beats(real_rows):
    for name in ("nearest mean", "logistic"):
        for record in compare_methods(real_rows, name, name):
            assert record["gap"] == 0 and record["verdict"] == CANNOT_TELL
        for record in compare_methods(real_rows, name, name, margin=0.01):
            assert record["verdict"] == TIES


def test_a_small_margin_on_every_seed_beats_a_large_spread_over_seeds():
    rng = np.random.default_rng(3)
    shared = rng.uniform(-0.1, 0.1, 5)  # the labelled draw's luck, the same for both methods
    baseline = 0.8 + shared
    method = baseline + 0.01 + rng.normal(0, 0.001, 5)
    [record] = compare_methods(study(method, baseline), "finetune", "logreg")
    assert record["verdict"] == BEATS and record["low"] > 0


def test_a_positive_gap_inside_the_noise_cannot_be_told_apart():
    [record] = compare_methods(study([0.85, 0.79, 0.83], [0.8, 0.8, 0.8]), "finetune", "logreg")
    assert record["gap"] > 0 and record["low"] < 0 and record["verdict"] == CANNOT_TELL
    [flipped] = compare_methods(study([0.8, 0.8, 0.8], [0.85, 0.79, 0.83]), "finetune", "logreg")
    assert flipped["gap"] < 0 < flipped["high"] and flipped["verdict"] == CANNOT_TELL


def test_a_worse_method_loses_on_the_test_items():
    rng = np.random.default_rng(6)
    b = (rng.random((5, 500)) < 0.9).astype(int)
    a = b * (rng.random((5, 500)) < 0.9)  # wrong on a tenth of what the baseline gets right
    [record] = compare_methods(study(a.mean(1), b.mean(1), correct=(a, b)), "finetune", "logreg")
    assert record["source"] == "seeds and items" and record["verdict"] == LOSES


def test_only_an_interval_inside_the_margin_is_a_tie():
    rows, _, _ = correct_study(k=5, n=2000)
    [wide] = compare_methods(rows, "finetune", "logreg", margin=0.001)
    assert wide["verdict"] != TIES
    [loose] = compare_methods(rows, "finetune", "logreg", margin=0.5)
    assert loose["verdict"] == TIES and loose["margin"] == 0.5
    with pytest.raises(ValueError, match="margin"):
        compare_methods(rows, "finetune", "logreg", margin=-0.01)


def test_one_seed_cannot_be_compared():
    [record] = compare_methods(study([0.9], [0.8]), "finetune", "logreg")
    assert record["verdict"] == "needs 2+ seeds to compare with"
    assert record["seeds"] == 1 and record["gap"] == pytest.approx(0.1)
    assert math.isnan(record["low"]) and math.isnan(record["half_width"])
    assert "seeds=range(5)" in record["note"]


# --- bad rows are refused -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_score_is_refused(bad):
    rows = study([0.9, 0.8, 0.85], [0.8, 0.7, 0.8])
    rows[2]["test_accuracy"] = bad
    with pytest.raises(ValueError, match=r"'finetune' with seed 1 has test_accuracy = (nan|inf)"):
        compare_methods(rows, "finetune", "logreg")


def test_runs_from_different_test_sets_of_the_same_size_are_refused():
    rows, _, _ = correct_study(k=3, n=20)
    for row in rows:
        row["test_fingerprint"] = "aaaa" if row["method"] == "finetune" else "bbbb"
    with pytest.raises(ValueError, match="2 different test sets.*aaaa, bbbb"):
        compare_methods(rows, "finetune", "logreg")
    for row in rows:
        row["test_fingerprint"] = "aaaa"
    compare_methods(rows, "finetune", "logreg")  # one test set: fine


def test_test_correct_as_list_array_or_tensor_gives_the_same_record():
    _, a, b = correct_study(k=3, n=50)
    scores = a.mean(axis=1), b.mean(axis=1)
    records = []
    for convert in (lambda x: x.tolist(), np.asarray, torch.as_tensor,
                    lambda x: torch.as_tensor(x).bool()):
        correct = ([convert(x) for x in a], [convert(x) for x in b])
        records.append(compare_methods(study(*scores, correct=correct), "finetune", "logreg"))
    assert all(r == records[0] for r in records[1:])


def test_unknown_methods_missing_metrics_and_bad_correctness_are_explained():
    rows = study([0.9, 0.8], [0.8, 0.7])
    with pytest.raises(ValueError, match=r"'fintune'.*\['finetune', 'logreg'\]"):
        compare_methods(rows, "fintune", "logreg")
    with pytest.raises(ValueError, match=r"'macro_f1'.*'test_accuracy'"):
        compare_methods(rows, "finetune", "logreg", metric="macro_f1")
    with pytest.raises(ValueError, match="level"):
        compare_methods(rows, "finetune", "logreg", level=95)
    rows, _, _ = correct_study(k=3, n=20)
    rows[-1]["test_correct"] = rows[-1]["test_correct"][:-1]
    with pytest.raises(ValueError, match=r"lengths \[19, 20\]"):
        compare_methods(rows, "finetune", "logreg")
    rows[-1]["test_correct"] = [0.5] * 20
    with pytest.raises(ValueError, match="0/1"):
        compare_methods(rows, "finetune", "logreg")


def test_seeds_are_paired_once_each_and_only_when_shared():
    rows = study([0.9, 0.8], [0.8, 0.7])
    rows.append(dict(rows[0]))
    with pytest.raises(ValueError, match="seed 0"):
        compare_methods(rows, "finetune", "logreg")
    rows = [{"method": "finetune", "budget": 5, "seed": 0, "test_accuracy": 0.9},
            {"method": "logreg", "budget": 5, "seed": 1, "test_accuracy": 0.8}]
    with pytest.raises(ValueError, match="share no"):
        compare_methods(rows, "finetune", "logreg")


def test_one_record_per_budget_in_the_order_budgets_appear():
    rng = np.random.default_rng(9)
    rows = []
    for budget in (10, "all", 1, None):
        rows += study(rng.normal(0.8, 0.05, 3), rng.normal(0.7, 0.05, 3), budget=budget)
    records = compare_methods(rows, "finetune", "logreg")
    assert [r["budget"] for r in records] == [10, "all", 1, None]


def test_paired_means_leave_out_unpaired_seeds():
    rows = study([0.8, 0.9, 0.7], [0.75, 0.85, 0.65])
    rows.append({"method": "logreg", "budget": 5, "seed": 7, "test_accuracy": 0.0})
    [record] = compare_methods(rows, "finetune", "logreg")
    assert record["method_mean"] == pytest.approx(0.8)
    assert record["baseline_mean"] == pytest.approx(0.75)


# --- per-item scores, leads, how much more data, and chance --------------------------------------


def test_compare_per_item_pairs_a_seedless_baseline_with_every_seed():
    rng = np.random.default_rng(11)
    pca = rng.uniform(0.01, 0.05, 200)  # one error per test image, no seed
    autoencoder = pca - 0.004 + rng.normal(0, 0.003, (3, 200))
    record = compare_per_item(torch.as_tensor(autoencoder), pca, method="AE", baseline="PCA",
                              lower_is_better=True, where=" at code size 8", decimals=4)
    assert record["verdict"] == BEATS and record["high"] < 0  # lower error: it beats PCA
    expected = two_way_interval(autoencoder - pca)
    assert record["half_width"] == pytest.approx(expected.half_width)
    assert describe(record).startswith("AE beats PCA at code size 8: gap -0.0040")
    worse = compare_per_item(pca + 0.004 + rng.normal(0, 0.003, (3, 200)), pca,
                             lower_is_better=True)
    assert worse["verdict"] == LOSES
    with pytest.raises(ValueError, match="do not pair"):
        compare_per_item(autoencoder, pca[:-1])
    with pytest.raises(ValueError, match="nan or inf"):
        compare_per_item(np.full((2, 3), np.nan), np.zeros(3))


def test_compare_leads_pairs_the_two_test_sets_image_by_image():
    rng = np.random.default_rng(12)
    k, n = 4, 300
    a_in, b_in = (rng.random((k, n)) < 0.9).astype(int), (rng.random((k, n)) < 0.88).astype(int)
    a_out, b_out = (rng.random((k, n)) < 0.8).astype(int), (rng.random((k, n)) < 0.6).astype(int)
    rows = []
    for s in range(k):
        for name, i, o in (("LP-FT", a_in, a_out), ("full", b_in, b_out)):
            rows.append({"method": name, "budget": 3, "seed": s, "test_accuracy": i[s].mean(),
                         "test_correct": i[s], "rotated_accuracy": o[s].mean(),
                         "rotated_correct": o[s]})
    [record] = compare_leads(rows, "LP-FT", "full", "rotated_accuracy", "test_accuracy")
    expected = two_way_interval((a_out - b_out) - (a_in - b_in))
    assert record["gap"] == pytest.approx(expected.gap)
    assert record["half_width"] == pytest.approx(expected.half_width)
    assert record["verdict"] == BEATS
    assert describe(record).startswith("LP-FT's lead over full on rotated is larger than its "
                                       "lead on test at 3 labels per class")


def test_needed_to_resolve_projects_the_variance_components():
    record = {"gap": 0.02, "seeds": 3, "items": 300, "level": 0.95, "var_seed": 0.0002,
              "var_item": 0.02, "var_res": 0.05}
    need = needed_to_resolve(record)

    def half(k, n):
        return 1.959964 * math.sqrt(0.0002 / k + 0.02 / n + 0.05 / (k * n))

    assert half(need["seeds"], 300) < 0.02 <= half(need["seeds"] - 1, 300)
    assert half(3, need["items"]) < 0.02 <= half(3, need["items"] - 1)
    # the items' part alone is wider than the gap: no number of seeds resolves it
    assert needed_to_resolve({**record, "var_item": 0.5})["seeds"] is None
    assert needed_to_resolve({**record, "gap": 0.0}) == {"seeds": None, "items": None}


def test_cannot_tell_apart_says_what_would_resolve_the_gap():
    rng = np.random.default_rng(5)
    a, b = (rng.random((3, 300)) < 0.85).astype(int), (rng.random((3, 300)) < 0.85).astype(int)
    [record] = compare_methods(study(a.mean(1), b.mean(1), correct=(a, b)), "finetune", "logreg")
    assert record["verdict"] == CANNOT_TELL
    sentence = describe(record)
    assert sentence.startswith("finetune vs logreg at 5 labels per class: cannot tell apart at "
                               "this size; gap ")
    need = needed_to_resolve(record)
    assert sentence.endswith(f"; a gap this size would need about {need['seeds']} seeds (with "
                             f"these 300 test items) or about {need['items']} test items (with "
                             "these 3 seeds)")


def test_chance_note_counts_the_verdicts_and_what_chance_gives():
    records = [{"verdict": v, "level": 0.95} for v in
               [BEATS] * 2 + [LOSES] + [CANNOT_TELL] * 17]
    note = chance_note(records)
    assert note.startswith("20 verdicts at the 95 % level: 2 beats, 1 loses to, 17 cannot "
                           "tell apart.")
    assert "about 1.0 of them would read" in note
    with pytest.raises(ValueError, match="one level"):
        chance_note(records + [{"verdict": BEATS, "level": 0.9}])


def test_chance_note_matches_the_false_verdict_rate_of_equal_methods():
    """Two methods that do not differ: the share of "beats"/"loses to" is 1 − level."""
    rng = np.random.default_rng(13)
    a, _ = simulated_correctness(rng, 300, 5, 300, "items")
    b, _ = simulated_correctness(rng, 300, 5, 300, "items")  # the same skill: no true gap
    records = [compare_methods(study(a[s].mean(1), b[s].mean(1), correct=(a[s], b[s])),
                               "finetune", "logreg")[0] for s in range(300)]
    decided = sum(r["verdict"] in (BEATS, LOSES) for r in records)
    assert 3 <= decided <= 30  # about 5 % of 300 = 15
    assert "about 15.0 of them" in chance_note(records)


# --- mean_interval and describe -----------------------------------------------------------------


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_mean_interval_is_scipys_t_interval(level):
    values = [0.91, 0.88, 0.95, 0.90, 0.86]
    mean, half = mean_interval(values, level)
    low, high = scipy.stats.t.interval(level, len(values) - 1, loc=np.mean(values),
                                       scale=scipy.stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx((low, high), abs=1e-12)


def test_mean_interval_of_one_value_has_no_width():
    mean, half = mean_interval([0.9])
    assert mean == 0.9 and math.isnan(half)
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def record(**changes):
    base = {"method": "finetune", "baseline": "logreg", "budget": 5, "seeds": 5, "items": 360,
            "gap": 0.034, "low": 0.010, "high": 0.058, "verdict": "beats", "level": 0.95,
            "source": "seeds and items", "items_name": "test items"}
    return {**base, **changes}


def test_describe_says_the_verdict_gap_interval_and_what_it_is_over():
    assert describe(record()) == ("finetune beats logreg at 5 labels per class: gap +0.034, "
                                  "95 % interval [+0.010, +0.058] over 5 seeds × 360 test items")
    assert describe(record(verdict="loses to", gap=-0.02, low=-0.03, high=-0.01, budget="all",
                           level=0.9, method_mean=0.7, baseline_mean=0.72)) == (
        "finetune loses to logreg with all labels: gap -0.020, 90 % interval [-0.030, -0.010] "
        "over 5 seeds × 360 test items (means 0.700 vs 0.720)")
    assert describe(record(verdict="ties with", margin=0.05, gap=0.0, low=-0.01, high=0.01)
                    ).startswith("finetune ties with logreg at 5 labels per class (within "
                                 "±0.05): gap +0.000")
    assert describe(record(source="seeds only", items=None)).endswith(
        "over 5 seeds (seeds only: no per-item results)")
    assert describe(record(budget=None)).startswith("finetune beats logreg: gap +0.034")


def test_describe_asks_for_more_seeds_after_one():
    [one] = compare_methods(study([0.9], [0.8]), "finetune", "logreg")
    assert describe(one) == ("finetune needs 2+ seeds to compare with logreg at 5 labels per "
                             "class: gap +0.100 over 1 seed (run more seeds, e.g. "
                             "seeds=range(5)) (means 0.900 vs 0.800)")
