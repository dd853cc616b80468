"""Honest verdicts: does method A beat method B, or can this study not tell?

A study gives one row per run: a method, a label budget, a seed, a score such as
``test_accuracy`` and (`transferkit.methods.label_budget.label_budget_study` keeps it)
which test items the run got right. Comparing two methods, ask how far their gap
would move if the study were run again with other seeds *and* other test items
from the same population: both are random draws.

**The two-way layout.** Pair the two methods by seed (the same labelled draw)
and by test item, and write the difference on item i in seed s as

    d[s, i] = correct(A, s, i) − correct(B, s, i)      (k seeds × n items)

The gap is the mean of d. Model d as a grand mean plus a seed effect, an item
effect and what is left (their interaction and the coin flips), independent
random parts with variances σ²_seed, σ²_item and σ²_res. Then

    Var(mean gap) = σ²_seed / k + σ²_item / n + σ²_res / (k·n).

The seed part shrinks with more seeds, the item part only with more test items:
3 seeds on one fixed test set cannot get narrower than that test set allows,
however many seeds are added. The mean squares of a two-way analysis of variance
without replication (a crossed design, in generalizability theory) estimate it:

    MS_seed = n · Σ_s (d̄_s − d̄)² / (k − 1)
    MS_item = k · Σ_i (d̄_i − d̄)² / (n − 1)
    MS_res  = Σ_s,i (d[s,i] − d̄_s − d̄_i + d̄)² / ((k − 1)(n − 1))
    Var(mean gap) = (MS_seed + MS_item − MS_res) / (k·n),  at least MS_res / (k·n)

(E[MS_seed] = σ²_res + n·σ²_seed and E[MS_item] = σ²_res + k·σ²_item: the
combination is unbiased; the floor keeps the part that is surely there.) The
interval is gap ± t · √Var, t from Student's t at Satterthwaite's (1946) degrees
of freedom ν = (Σ c_j MS_j)² / Σ (c_j MS_j)² / df_j: about k − 1 when the seeds
dominate, about n − 1 when the items do. With three seeds ν is itself a rough,
optimistic estimate (when the seeds dominated, the simulated intervals covered the
true gap less often than they should), so it is capped at (k − 1) / f, f the
seeds' share of the variance. `tests/test_stats.py` simulates studies with a known
true gap to check the coverage. Assumptions: seeds and test items are independent
draws, the effects add up, and the test set samples the items you care about.
Sources: Searle, Casella & McCulloch, *Variance Components* (1992), ch. 4;
Brennan, *Generalizability Theory* (2001); Satterthwaite, *Biometrics* 2 (1946).

**Without per-item results** only the per-seed gaps d_s are known: the seeds'
part is s_d² / k, the items' part unknown. It is not smaller than the test set
allows, though: the methods disagree on at least |d_s| of the items (and on one
at least), so it is at least (q − gap²) / n, q = max(mean |d_s|, 1/n). With the
test set's size known, that floor is added: never a zero-width interval. The
record's ``source`` says which kind it is.

**Verdicts.** "beats" when the whole interval is above 0, "loses to" when it is
below; otherwise the study *cannot tell them apart* at this size, which claims
nothing about equality. Only an interval inside a margin you state is a tie.
`needed_to_resolve` says how many seeds or test items a gap of the observed size
would need; `chance_note` how many "beats" and "loses to" chance alone would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as _scipy_stats

from transferkit.foundations.data import budget_words

BEATS, LOSES, CANNOT_TELL, TIES = "beats", "loses to", "cannot tell apart", "ties with"
WITHIN = CANNOT_TELL  # the name this verdict had before; kept for code that imports it
ONE_SEED = "needs 2+ seeds to compare with"
ONE_SEED_NOTE = ("one paired seed gives no spread to measure the noise with: "
                 "run more seeds, e.g. seeds=range(5)")
TWO_WAY, FLOORED, SEEDS_ONLY = ("seeds and items", "seeds only, with the test set's floor",
                                "seeds only")


def _t_quantile(level: float, df: Any) -> Any:
    """t_{df, (1+level)/2}: the multiplier of a two-sided t-interval (df may be an array)."""
    if not 0 < level < 1:
        raise ValueError(f"level is a probability between 0 and 1 (e.g. 0.95), not {level!r}.")
    return _scipy_stats.t.ppf((1 + level) / 2, df)


def mean_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its t-interval at ``level``.

    Report it as "mean ± half-width": how far the mean could move with other
    seeds, on the same test set. The half-width is nan for a single value.

    >>> mean, half = mean_interval([0.90, 0.92, 0.94])
    >>> print(f"{mean:.3f} ± {half:.3f}")
    0.920 ± 0.050
    """
    x = np.asarray([float(v) for v in values])
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value.")
    t = float(_t_quantile(level, max(x.size - 1, 1)))  # refuses a bad level, even for one value
    return float(x.mean()), math.nan if x.size == 1 else t * float(x.std(ddof=1)) / \
        math.sqrt(x.size)


class TwoWay(NamedTuple):
    """`two_way_interval`'s result (numbers, or arrays for a batch of studies)."""

    gap: Any
    half_width: Any
    df: Any
    variance: Any  # of the mean gap
    ms_seed: Any
    ms_item: Any
    ms_res: Any


def _capped_df(df: Any, seeds_term: Any, variance: Any, k: int) -> Any:
    """Satterthwaite's ν, at most (k − 1) / f with f the seeds' share of the variance."""
    seeds_term = np.asarray(seeds_term, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.where(seeds_term > 0, (k - 1) * variance / seeds_term, np.inf)
    return np.minimum(df, cap)


def two_way_interval(d: Any, level: float = 0.95) -> TwoWay:
    """The mean of ``d`` (seeds × items) and its two-way interval (see the module doc).

    ``d`` has shape (k, n), k ≥ 2 seeds and n ≥ 2 items, or (..., k, n) for a
    batch of studies (then every field is an array). Any numbers work: 0/1
    differences in correctness, or differences in a per-item error.

    >>> d = [[1, 0, 0, 1, 0], [1, 0, 1, 1, 0], [1, 0, 0, 1, 1]]
    >>> r = two_way_interval(d)
    >>> print(f"{r.gap:.3f} ± {r.half_width:.3f}, df {r.df:.1f}")
    0.533 ± 0.614, df 2.8
    """
    d = np.asarray(d, dtype=float)
    if d.ndim < 2 or min(d.shape[-2:]) < 2:
        raise ValueError(f"two_way_interval needs seeds × items, 2 × 2 or more; got {d.shape}.")
    (k, n), grand = d.shape[-2:], d.mean(axis=(-2, -1))
    by_seed, by_item = d.mean(axis=-1), d.mean(axis=-2)
    ms_seed = n * ((by_seed - grand[..., None]) ** 2).sum(-1) / (k - 1)
    ms_item = k * ((by_item - grand[..., None]) ** 2).sum(-1) / (n - 1)
    left = d - by_seed[..., :, None] - by_item[..., None, :] + grand[..., None, None]
    df_res = (k - 1) * (n - 1)
    ms_res = (left ** 2).sum(axis=(-2, -1)) / df_res
    combined = ms_seed + ms_item - ms_res
    floored = combined <= ms_res
    variance = np.where(floored, ms_res, combined) / (k * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        satterthwaite = combined ** 2 / (ms_seed ** 2 / (k - 1) + ms_item ** 2 / (n - 1)
                                         + ms_res ** 2 / df_res)
    df = _capped_df(np.where(floored, df_res, satterthwaite), ms_seed / (k * n), variance, k)
    df = np.where(variance > 0, df, np.inf)
    fields = (grand, _t_quantile(level, df) * np.sqrt(variance), df, variance, ms_seed, ms_item,
              ms_res)
    return TwoWay(*(float(x) for x in fields) if d.ndim == 2 else fields)


def _verdict(low: float, high: float, margin: float | None) -> str:
    return (TIES if margin is not None and -margin <= low and high <= margin else
            BEATS if low > 0 else LOSES if high < 0 else CANNOT_TELL)


def _record(level: float, margin: float | None, gap: float, variance: float, df: float,
            parts: tuple[float, float, float], **fields: Any) -> dict[str, Any]:
    """A comparison record: gap ± t_df · √variance, its verdict, and the variance ``parts``
    (per seed, per item, residual) that `needed_to_resolve` projects from."""
    if margin is not None and not margin > 0:
        raise ValueError(f"margin is a positive number (e.g. 0.01), not {margin!r}.")
    half = float(_t_quantile(level, df)) * math.sqrt(variance) if variance > 0 else 0.0
    record = {"level": level, "gap": gap, "low": gap - half, "high": gap + half,
              "half_width": half, "df": float(df), "var_seed": parts[0], "var_item": parts[1],
              "var_res": parts[2], **fields}
    if margin is not None:
        record["margin"] = margin
    record["verdict"] = _verdict(record["low"], record["high"], margin)
    return record


def _two_way_record(d: np.ndarray, level: float, margin: float | None, **fields: Any
                    ) -> dict[str, Any]:
    """The record of the seeds × items differences ``d``: the two-way rule."""
    (k, n), r = d.shape, two_way_interval(d, level)
    parts = (max(0.0, (r.ms_seed - r.ms_res) / n), max(0.0, (r.ms_item - r.ms_res) / k), r.ms_res)
    return _record(level, margin, r.gap, r.variance, r.df, parts, seeds=k, items=n,
                   source=TWO_WAY, **fields)


def _seeds_only(d: np.ndarray, n: int | None, level: float, margin: float | None,
                **fields: Any) -> dict[str, Any]:
    """The fallback: the per-seed gaps ``d``, plus the least items' part ``n`` items allow."""
    k, gap = len(d), float(d.mean())
    item_var = 0.0 if not n else max(float(np.abs(d).mean()), 1 / n) - gap ** 2
    seeds_term, items_term = float(d.var(ddof=1)) / k, (max(item_var, 0.0) / n if n else 0.0)
    variance = seeds_term + items_term
    df = math.inf if variance == 0 else _capped_df(
        variance ** 2 / (seeds_term ** 2 / (k - 1) + (items_term ** 2 / (n - 1) if n else 0)),
        seeds_term, variance, k)
    return _record(level, margin, gap, variance, df, (k * seeds_term, max(item_var, 0.0), 0.0),
                   seeds=k, items=n, source=FLOORED if n else SEEDS_ONLY, **fields)


def _as_matrix(scores: Any, name: str) -> np.ndarray:
    scores = scores.detach().cpu() if hasattr(scores, "detach") else scores  # torch, any device
    array = np.asarray(scores, dtype=float)
    if array.ndim not in (1, 2) or not np.isfinite(array).all():
        raise ValueError(f"{name} is one finite score per item (n), or one row of them per "
                         f"seed (k × n); got shape {array.shape}"
                         + ("" if np.isfinite(array).all() else " with nan or inf in it") + ".")
    return array


def compare_per_item(method_scores: Any, baseline_scores: Any, *, method: str = "method",
                     baseline: str = "baseline", level: float = 0.95,
                     lower_is_better: bool = False, margin: float | None = None,
                     where: str = "", items: str = "items", decimals: int = 3
                     ) -> dict[str, Any]:
    """Compare two methods item by item with the two-way rule; one record, as `compare_methods`.

    Each argument is a score per item (n), or a row of them per seed (k × n); a
    method without a seed (PCA, a fixed baseline) gives one row, which is paired
    with every seed of the other. ``lower_is_better`` for errors: then "beats"
    means a lower score. ``where`` (e.g. ``" at code size 8"``), ``items`` (e.g.
    ``"test images"``) and ``decimals`` are for `describe`.

    >>> record = compare_per_item([[0.2, 0.3, 0.1, 0.3, 0.2], [0.1, 0.3, 0.2, 0.3, 0.2]],
    ...                           [0.4, 0.5, 0.3, 0.4, 0.5], method="AE", baseline="PCA",
    ...                           lower_is_better=True)
    >>> record["verdict"], round(record["gap"], 3)
    ('beats', -0.2)
    """
    a = _as_matrix(method_scores, "method_scores")
    b = _as_matrix(baseline_scores, "baseline_scores")
    if a.shape[-1] != b.shape[-1] or (a.ndim == b.ndim == 2 and len(a) != len(b)):
        raise ValueError(f"scores of shape {a.shape} and {b.shape} do not pair: score both on "
                         "the same items in the same order, with the same seeds.")
    d = np.atleast_2d(a) - np.atleast_2d(b)
    if len(d) < 2:
        raise ValueError("two seeds at least (k × n scores for one of the methods): one seed "
                         "gives no spread to measure the seeds' noise with.")
    record = _two_way_record(d, level, margin, method=method, baseline=baseline, budget=None,
                             metric="score", where=where, items_name=items, decimals=decimals,
                             method_mean=float(a.mean()), baseline_mean=float(b.mean()))
    if lower_is_better and record["verdict"] in (BEATS, LOSES):
        record["verdict"] = LOSES if record["verdict"] == BEATS else BEATS
    return record


# --- rows of a study -----------------------------------------------------------------------


def _split(metric: str) -> str:
    """Which set a metric was measured on: "test_accuracy" → "test", "rotated_accuracy" →
    "rotated", "test_macro_f1" → "test"."""
    return metric[:-len("_accuracy")] if metric.endswith("_accuracy") else metric.split("_")[0]


def _correct_array(value: Any, key: str) -> np.ndarray:
    """One run's per-item correctness (list, numpy array or torch tensor of 0/1) as floats."""
    array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=float)
    if array.ndim != 1 or not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{key} is one 0/1 (or True/False) per item, in a flat list, array "
                         f"or tensor; got shape {array.shape} with values "
                         f"{np.unique(array)[:5].tolist()}.")
    return array


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


def _check_runs(runs: list[Mapping[str, Any]], metric: str) -> None:
    """Refuse a missing or non-finite score, and runs measured on different test sets."""
    for run in runs:
        value = run.get(metric)
        if value is None:
            raise ValueError(f"a run of {run['method']!r} has no {metric!r}; its keys are "
                             f"{sorted(run)}. Pass one of them as metric=.")
        if not math.isfinite(float(value)):
            raise ValueError(f"the run of {run['method']!r} with seed {run.get('seed')!r} has "
                             f"{metric} = {value}: a diverged or failed run cannot be compared. "
                             "Fix it (a lower learning rate?) or leave its rows out.")
    key = f"{_split(metric)}_fingerprint"
    prints = sorted({str(run[key]) for run in runs if run.get(key) is not None})
    if len(prints) > 1:
        raise ValueError(f"these runs were measured on {len(prints)} different "
                         f"{_split(metric)} sets ({key} {', '.join(prints)}): compare only "
                         "runs scored on the same items, e.g. from one study.")


def _items(pairs: list, key: str) -> np.ndarray | None:
    """The k × n matrix of per-item differences, or None when a run has no ``key``."""
    if any(r.get(key) is None for pair in pairs for r in pair):
        return None
    a = [_correct_array(r[key], key) for r, _ in pairs]
    b = [_correct_array(r[key], key) for _, r in pairs]
    lengths = sorted({len(x) for x in a + b})
    if len(lengths) > 1 or lengths[0] < 2:
        raise ValueError(f"{key!r} has lengths {lengths} across runs: every run must be scored "
                         "on the same items (2 or more), in the same order.")
    return np.stack(a) - np.stack(b)


def compare_methods(rows: Sequence[Mapping[str, Any]], method: str, baseline: str,
                    metric: str = "test_accuracy", level: float = 0.95, *,
                    correct_key: str | None = None, margin: float | None = None
                    ) -> list[dict[str, Any]]:
    """Compare ``method`` with ``baseline`` at every budget, paired by seed and by item.

    For ``X_accuracy`` the runs' ``X_correct`` (0/1 per item: ``test_correct``,
    ``val_correct`` …, or ``correct_key``) give the two-way interval of the module
    doc; without them it is seeds-only, with the test set's floor when the rows
    give its size (``n_test``). A nan score, or runs whose ``X_fingerprint``
    differ (measured on different sets), are errors.

    One record per budget (in the order budgets appear): ``budget``, ``method``,
    ``baseline``, ``metric``, ``level``, ``seeds`` (k), ``items`` (n or None),
    ``gap``, ``low``, ``high``, ``half_width``, ``df``, ``method_mean`` and
    ``baseline_mean`` (of the paired runs), ``verdict`` ("beats", "loses to",
    "cannot tell apart", or "ties with" for an interval inside ±``margin``),
    ``source`` ("seeds and items", "seeds only, with the test set's floor", "seeds
    only") and ``var_seed``, ``var_item``, ``var_res`` (`needed_to_resolve`).
    Unpaired seeds are left out; one paired seed gives the verdict "needs 2+ seeds
    to compare with", a nan interval and a ``note``.

    >>> rows = [{"method": m, "budget": 5, "seed": s, "test_accuracy": acc + bonus}
    ...         for s, acc in enumerate([0.80, 0.90, 0.70])
    ...         for m, bonus in [("finetune", 0.03), ("logreg", 0.0)]]
    >>> [record] = compare_methods(rows, "finetune", "logreg")
    >>> record["verdict"], round(record["gap"], 3), record["seeds"], record["source"]
    ('beats', 0.03, 3, 'seeds only')
    """
    split = _split(metric)
    key = correct_key or (f"{split}_correct" if metric.endswith("_accuracy") else None)
    items = {"test": "test items", "val": "validation items"}.get(split, f"{split} items")
    records = []
    for budget, pairs in _paired_budgets(rows, method, baseline):
        _check_runs([r for pair in pairs for r in pair], metric)
        scores = np.array([[float(a[metric]), float(b[metric])] for a, b in pairs])
        d, d_items = scores[:, 0] - scores[:, 1], _items(pairs, key) if key else None
        fields = {"budget": budget, "method": method, "baseline": baseline, "metric": metric,
                  "method_mean": float(scores[:, 0].mean()), "items_name": items,
                  "baseline_mean": float(scores[:, 1].mean())}
        if len(pairs) == 1:
            records.append({**fields, "level": level, "seeds": 1, "gap": float(d[0]),
                            "low": math.nan, "high": math.nan, "half_width": math.nan,
                            "verdict": ONE_SEED, "note": ONE_SEED_NOTE})
        elif d_items is not None:
            records.append(_two_way_record(d_items, level, margin, **fields))
        else:
            n = pairs[0][0].get(f"n_{split}")
            records.append(_seeds_only(d, n and int(n), level, margin, **fields))
    return records


def _paired_budgets(rows: Sequence[Mapping[str, Any]], method: str, baseline: str):
    """(budget, the runs of both methods paired by seed) for every budget with a pair."""
    methods = sorted({str(row.get("method")) for row in rows})
    for name in (method, baseline):
        if name not in methods:
            raise ValueError(f"no runs of method {name!r}; the rows have methods {methods}.")
    found = False
    for budget in dict.fromkeys(row.get("budget") for row in rows):
        if pairs := _pairs(rows, method, baseline, budget):
            found = True
            yield budget, pairs
    if not found:
        raise ValueError(f"{method!r} and {baseline!r} share no (budget, seed): run both with "
                         "the same seeds to compare them.")


def compare_leads(rows: Sequence[Mapping[str, Any]], method: str, baseline: str, metric: str,
                  other_metric: str, level: float = 0.95, *, labels: tuple[str, str] | None = None
                  ) -> list[dict[str, Any]]:
    """Is ``method``'s lead over ``baseline`` larger on ``metric`` than on ``other_metric``?

    Both are accuracies on two versions of the same items, in the same order (the
    test set and its rotated copy): d[s, i] is the lead on item i of the one minus
    that on item i of the other, two-way. "beats" means a larger lead on ``metric``.
    ``labels`` name the two sets for `describe` (default: the metrics' prefixes).
    """
    first, second = labels or (_split(metric), _split(other_metric))
    keys = [f"{_split(m)}_correct" for m in (metric, other_metric)]
    records = []
    for budget, pairs in _paired_budgets(rows, method, baseline):
        for name in (metric, other_metric):
            _check_runs([r for pair in pairs for r in pair], name)
        one, two = (_items(pairs, key) for key in keys)
        if one is None or two is None or one.shape != two.shape or len(pairs) < 2:
            raise ValueError(f"compare_leads needs 2+ paired seeds whose runs list {keys[0]} and "
                             f"{keys[1]}, of the same items in the same order.")
        records.append(_two_way_record(
            one - two, level, None, budget=budget, metric=metric, items_name="items",
            method=f"{method}'s lead over {baseline} on {first}", baseline=f"its lead on {second}",
            where=_budget_phrase("all" if budget is None else budget), verbs={
                BEATS: "is larger than", LOSES: "is smaller than"},
            method_mean=float(one.mean()), baseline_mean=float(two.mean())))
    return records


# --- reading the records -------------------------------------------------------------------


def needed_to_resolve(record: Mapping[str, Any]) -> dict[str, int | None]:
    """About how many seeds (with these items) or items (with these seeds) would make an
    interval exclude 0 for a gap of the observed size; None where that alone cannot.

    Var(k, n) = var_seed/k + var_item/n + var_res/(k·n) (the record's components)
    resolves the gap when t·√Var < |gap|: t at the record's ``df`` for more items, at
    that df grown in proportion to k − 1 for more seeds (normal without a df).

    >>> needed_to_resolve({"gap": 0.03, "seeds": 3, "items": 300, "level": 0.95,
    ...                    "var_seed": 0.0003, "var_item": 0.1, "var_res": 0.05})
    {'seeds': None, 'items': 869}
    """
    gap, k, n, df = abs(record["gap"]), record["seeds"], record.get("items"), record.get("df")
    a, b, e = (float(record.get(key, 0.0)) for key in ("var_seed", "var_item", "var_res"))
    if gap == 0 or not n:
        return {"seeds": None, "items": None}
    more = np.arange(k + 1, 100_001)  # seeds: the first count whose interval clears 0
    t = _t_quantile(record["level"], math.inf if df is None else df * (more - 1) / (k - 1))
    clear = t * np.sqrt(a / more + b / n + e / (more * n)) < gap
    target = (gap / float(_t_quantile(record["level"], math.inf if df is None else df))) ** 2
    items = max(math.ceil((b + e / k) / (target - a / k)), n + 1) if target > a / k else None
    return {"seeds": int(more[clear.argmax()]) if clear.any() else None, "items": items}


def _resolve_phrase(record: Mapping[str, Any]) -> str:
    need, k, n = needed_to_resolve(record), record["seeds"], record.get("items")
    if record["gap"] == 0:
        return ""
    items, options = record.get("items_name", "items"), []
    if need["seeds"]:
        options.append(f"about {need['seeds']:,} seeds (with these {n:,} {items})")
    if need["items"]:
        options.append(f"about {need['items']:,} {items} (with these {k} seeds)")
    if not options:
        return "; a gap this size needs more seeds and more items together" if n else ""
    return "; a gap this size would need " + " or ".join(options)


def chance_note(records: Sequence[Mapping[str, Any]]) -> str:
    """How many of these verdicts say "beats" or "loses to", and how many would by chance.

    At level 0.95 two methods that do not differ still read "beats" or "loses to"
    5 % of the time: among m comparisons m × 5 % are expected by chance alone (an
    expectation, however the comparisons depend on each other).
    """
    decided = [r for r in records if r["verdict"] != ONE_SEED]
    levels = {r["level"] for r in decided}
    if len(levels) != 1:
        raise ValueError(f"chance_note counts verdicts with an interval, all at one level; "
                         f"these have levels {sorted(levels)}.")
    level = levels.pop()
    counts = {v: sum(r["verdict"] == v for r in decided) for v in (BEATS, LOSES, TIES)}
    rest = len(decided) - sum(counts.values())
    ties = f", {counts[TIES]} ties" if counts[TIES] else ""
    return (f"{len(decided)} verdicts at the {100 * level:g} % level: {counts[BEATS]} beats, "
            f"{counts[LOSES]} loses to, {rest} cannot tell apart{ties}. Even if no method "
            f"differed from another, about {len(decided) * (1 - level):.1f} of them would read "
            "\"beats\" or \"loses to\" by chance alone.")


def _budget_phrase(budget: Any) -> str:
    """" at 5 labels per class", " with all labels", or "" when there is no budget."""
    if budget is None or not (budget == "all" or isinstance(budget, (int, np.integer))):
        return "" if budget is None else f" at budget {budget}"
    return f" {'with' if budget == 'all' else 'at'} {budget_words(budget)}"


def describe(record: Mapping[str, Any]) -> str:
    """The sentence the lessons print for one comparison record.

    The verdict, the gap and its interval over what (seeds × items, or seeds only),
    the paired means, and, when it cannot tell, what a gap this size would need.

    >>> print(describe({"method": "finetune", "baseline": "logreg", "budget": 5, "seeds": 5,
    ...                 "items": 360, "gap": 0.034, "low": 0.010, "high": 0.058,
    ...                 "verdict": "beats", "source": "seeds and items"}))
    ... # doctest: +NORMALIZE_WHITESPACE
    finetune beats logreg at 5 labels per class: gap +0.034,
    95 % interval [+0.010, +0.058] over 5 seeds × 360 items
    """
    name, other, k, n = record["method"], record["baseline"], record["seeds"], record.get("items")
    where = record.get("where") or _budget_phrase(record.get("budget"))
    dec = record.get("decimals", 3)
    means = (f" (means {record['method_mean']:.{dec}f} vs {record['baseline_mean']:.{dec}f})"
             if "method_mean" in record else "")
    if record["verdict"] == ONE_SEED:
        return (f"{name} {ONE_SEED} {other}{where}: gap {record['gap']:+.{dec}f} over 1 seed "
                f"(run more seeds, e.g. seeds=range(5)){means}")
    items = record.get("items_name", "items")
    source = record.get("source", TWO_WAY)
    over = (f"over {k} seeds × {n:,} {items}" if source == TWO_WAY else
            f"over {k} seeds (seeds only: no per-item results, so the items' part is the least "
            f"{n:,} {items} allow)" if source == FLOORED else
            f"over {k} seeds (seeds only: no per-item results)")
    numbers = (f"gap {record['gap']:+.{dec}f}, {100 * record.get('level', 0.95):g} % interval "
               f"[{record['low']:+.{dec}f}, {record['high']:+.{dec}f}] {over}{means}")
    verdict = record["verdict"]
    if verdict == CANNOT_TELL:
        return (f"{name} vs {other}{where}: cannot tell apart at this size; {numbers}"
                f"{_resolve_phrase(record)}")
    if verdict == TIES:
        return f"{name} ties with {other}{where} (within ±{record['margin']:g}): {numbers}"
    return f"{name} {record.get('verbs', {}).get(verdict, verdict)} {other}{where}: {numbers}"


__all__ = ["BEATS", "CANNOT_TELL", "LOSES", "TIES", "TwoWay", "chance_note", "compare_leads",
           "compare_methods", "compare_per_item", "describe", "mean_interval", "needed_to_resolve",
           "two_way_interval"]
