"""Honest verdicts: does method A beat method B, or is the gap noise?

A study gives one row per run: a method, a label budget, a seed and scores such
as ``test_accuracy``. Comparing two methods, ask how far the gap between them
would move if the study were run again. Two things would change: the seeds (which
labelled examples were drawn, how the weights started) and the test images.

`compare_methods` pairs the two methods' runs by seed and works with the
per-seed differences d_s = score(method, s) − score(baseline, s). The
difference removes the luck both methods shared (the same labelled draw), so a
method that is better by a small margin on every seed is seen to be better,
however much both scores swing from seed to seed. The spread of the mean
difference shrinks as 1/√k with k seeds, so more seeds narrow the interval.
When each run also lists which test images it got right (``test_correct``),
the test-set part is added; only the images the two methods disagree on
count, since an image both get right (or both wrong) cannot move the gap.

The interval is a t-interval: gap ± t · SE, with SE² = s_d²/k + V_test. The
verdict is "beats" when the whole interval is above zero, "loses to" when it
is below, and "within the noise of" when it holds zero. `mean_interval` gives
the mean ± interval of one method's scores (for tables and error bars), and
`describe` turns a comparison into the sentence the lessons print.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

BEATS, LOSES, WITHIN = "beats", "loses to", "within the noise of"
ONE_SEED = "needs 2+ seeds to compare with"
ONE_SEED_NOTE = ("one paired seed gives no spread to measure the noise with: "
                 "run more seeds, e.g. seeds=range(5)")


def _t_quantile(level: float, k: int) -> float:
    """t_{k−1, (1+level)/2}: the multiplier of a two-sided t-interval from k values."""
    if not 0 < level < 1:
        raise ValueError(f"level is a probability between 0 and 1 (e.g. 0.95), not {level!r}.")
    return float(_scipy_stats.t.ppf((1 + level) / 2, k - 1))


def mean_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its t-interval at ``level``.

    Report it as "mean ± half-width". The half-width is nan for a single value:
    one number has no spread to estimate the noise from.

    >>> mean, half = mean_interval([0.90, 0.92, 0.94])
    >>> print(f"{mean:.3f} ± {half:.3f}")
    0.920 ± 0.050
    """
    x = np.asarray([float(v) for v in values])
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value.")
    if x.size == 1:
        _t_quantile(level, 2)  # still refuse a bad level
        return float(x[0]), math.nan
    return float(x.mean()), _t_quantile(level, x.size) * float(x.std(ddof=1)) / math.sqrt(x.size)


def _correct_array(value: Any) -> np.ndarray:
    """One run's ``test_correct`` (list, numpy array or torch tensor of 0/1) as floats."""
    if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=float)
    if array.ndim != 1 or not np.isin(array, (0.0, 1.0)).all():
        raise ValueError("test_correct is one 0/1 (or True/False) per test image, in a flat "
                         f"list, array or tensor; got shape {array.shape} with values "
                         f"{np.unique(array)[:5].tolist()}.")
    return array


def _test_variance(method_runs: Sequence[Mapping[str, Any]],
                   baseline_runs: Sequence[Mapping[str, Any]], correct_key: str) -> float:
    """V_test: the variance the test images add to the mean gap (paired, McNemar-style).

    D[s, i] = correct(method, s, i) − correct(baseline, s, i); m_i is its mean
    over seeds and V_test = var(m_i) / n over the n test images. Where the two
    methods agree, D is 0 on every seed and the image adds nothing.
    """
    a = [_correct_array(r[correct_key]) for r in method_runs]
    b = [_correct_array(r[correct_key]) for r in baseline_runs]
    lengths = sorted({len(x) for x in a + b})
    if len(lengths) > 1:
        raise ValueError(f"{correct_key!r} has different lengths across runs ({lengths}): every "
                         "run must be scored on the same test images, in the same order.")
    n = lengths[0]
    if n < 2:
        raise ValueError(f"{correct_key!r} lists {n} test image(s); the test-set part needs 2+.")
    m = (np.stack(a) - np.stack(b)).mean(axis=0)
    return float(m.var(ddof=1)) / n


def _pairs(rows: Sequence[Mapping[str, Any]], method: str, baseline: str, budget: Any
           ) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """The (method run, baseline run) pairs at ``budget`` that share a seed, by seed."""
    by_seed: dict[str, dict[Any, Mapping[str, Any]]] = {method: {}, baseline: {}}
    for row in rows:
        name = row.get("method")
        if name in by_seed and row.get("budget") == budget and "seed" in row:
            if row["seed"] in by_seed[name]:
                raise ValueError(f"two runs of {name!r} with seed {row['seed']!r} at budget "
                                 f"{budget!r}: each (method, budget, seed) should appear once.")
            by_seed[name][row["seed"]] = row
    shared = [s for s in by_seed[method] if s in by_seed[baseline]]
    return [(by_seed[method][s], by_seed[baseline][s]) for s in shared]


def compare_methods(rows: Sequence[Mapping[str, Any]], method: str, baseline: str,
                    metric: str = "test_accuracy", level: float = 0.95, *,
                    correct_key: str = "test_correct") -> list[dict[str, Any]]:
    """Compare ``method`` with ``baseline`` at every budget, pairing their runs by seed.

    The per-seed differences d_s = metric(method, s) − metric(baseline, s)
    remove the luck both methods shared, since each seed gives both the same
    labelled draw. Their mean wobbles by s_d/√k over k seeds, so more seeds
    narrow the interval. When every run lists its ``correct_key`` (one 0/1 per
    test image) and the metric is ``test_accuracy``, the test-set part V_test is
    added; it counts only the images the two methods disagree on.

    The interval is gap ± t_{k−1, (1+level)/2} · SE with SE² = s_d²/k + V_test.
    Returns one record per budget (in the order budgets first appear), with
    ``budget``, ``method``, ``baseline``, ``metric``, ``level``, ``seeds`` (k),
    ``gap``, ``low``, ``high``, ``half_width``, ``verdict`` ("beats", "loses to"
    or "within the noise of") and ``source`` ("seeds and test images" or "seeds
    only"). A seed run for only one of the two methods is left out. With one
    paired seed there is no spread to measure: ``low``, ``high`` and
    ``half_width`` are nan, the verdict is "needs 2+ seeds to compare with", and
    a ``note`` says to run more seeds.

    >>> rows = [{"method": m, "budget": 5, "seed": s, "test_accuracy": acc + bonus}
    ...         for s, acc in enumerate([0.80, 0.90, 0.70])
    ...         for m, bonus in [("finetune", 0.03), ("logreg", 0.0)]]
    >>> [record] = compare_methods(rows, "finetune", "logreg")
    >>> record["verdict"], round(record["gap"], 3), record["seeds"]
    ('beats', 0.03, 3)
    """
    methods = sorted({str(row.get("method")) for row in rows})
    for name in (method, baseline):
        if name not in methods:
            raise ValueError(f"no runs of method {name!r}; the rows have methods {methods}.")
    records = []
    for budget in dict.fromkeys(row.get("budget") for row in rows):
        pairs = _pairs(rows, method, baseline, budget)
        if not pairs:
            continue
        for run in (r for pair in pairs for r in pair):
            if run.get(metric) is None:
                raise ValueError(f"a run of {run['method']!r} has no {metric!r}; its keys are "
                                 f"{sorted(run)}. Pass one of them as metric=.")
        d = np.array([float(a[metric]) - float(b[metric]) for a, b in pairs])
        k, gap = len(d), float(d.mean())
        with_test = metric == "test_accuracy" and all(
            r.get(correct_key) is not None for pair in pairs for r in pair)
        record = {"budget": budget, "method": method, "baseline": baseline, "metric": metric,
                  "level": level, "seeds": k, "gap": gap,
                  "source": "seeds and test images" if with_test else "seeds only"}
        if k == 1:
            record.update(low=math.nan, high=math.nan, half_width=math.nan,
                          verdict=ONE_SEED, note=ONE_SEED_NOTE)
            records.append(record)
            continue
        method_runs, baseline_runs = [a for a, _ in pairs], [b for _, b in pairs]
        v_test = _test_variance(method_runs, baseline_runs, correct_key) if with_test else 0.0
        se = math.sqrt(float(d.var(ddof=1)) / k + v_test)
        half = _t_quantile(level, k) * se if se > 0 else 0.0
        low, high = gap - half, gap + half
        verdict = BEATS if low > 0 else LOSES if high < 0 else WITHIN
        record.update(low=low, high=high, half_width=half, verdict=verdict)
        records.append(record)
    if not records:
        raise ValueError(f"{method!r} and {baseline!r} share no (budget, seed): run both with "
                         "the same seeds to compare them.")
    return records


def _budget_phrase(budget: Any) -> str:
    """" at 5 labels per class", " with all labels", or "" when there is no budget."""
    if budget is None:
        return ""
    if budget == "all":
        return " with all labels"
    if isinstance(budget, (int, np.integer)):
        return f" at {budget} label{'' if budget == 1 else 's'} per class"
    return f" at budget {budget}"


def describe(record: Mapping[str, Any]) -> str:
    """The sentence the lessons print for one record of `compare_methods`.

    Signed numbers to 3 decimals; a budget of ``"all"`` reads "with all labels",
    a budget of None adds nothing; after one seed it says more seeds are needed.

    >>> print(describe({"method": "finetune", "baseline": "logreg", "budget": 5, "seeds": 5,
    ...                 "gap": 0.034, "low": 0.010, "high": 0.058, "verdict": "beats"}))
    ... # doctest: +NORMALIZE_WHITESPACE
    finetune beats logreg at 5 labels per class: gap +0.034,
    95 % interval [+0.010, +0.058] over 5 seeds
    """
    name, other, k = record["method"], record["baseline"], record["seeds"]
    where = _budget_phrase(record.get("budget"))
    if record["verdict"] == ONE_SEED:
        return (f"{name} {ONE_SEED} {other}{where}: gap {record['gap']:+.3f} over 1 seed "
                "(run more seeds, e.g. seeds=range(5))")
    verb = "is within the noise of" if record["verdict"] == WITHIN else record["verdict"]
    level = f"{100 * record.get('level', 0.95):g} %"
    return (f"{name} {verb} {other}{where}: gap {record['gap']:+.3f}, {level} interval "
            f"[{record['low']:+.3f}, {record['high']:+.3f}] over {k} seeds")


__all__ = ["compare_methods", "describe", "mean_interval"]
