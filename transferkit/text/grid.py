"""Lesson 07's full grid: computed once by a command, stored with where it came from.

The fair comparison of lesson 07 (every method × 8, 32, 128 and 512 labels per class ×
5 seeds, on the whole test split) takes about an hour on 2 CPU cores: far more than a
lesson's budget. So the lesson computes a slice of it live and draws it beside this
grid, which one command in the repo made and stored:

    python3 tools/text_grid.py            # → transferkit/assets/text_grid.json.xz

The file holds every run's row (with its per-snippet correctness, so any two methods
can still be compared paired, `transferkit.foundations.verdicts.compare_methods`), the command,
commit, date, library versions and device it ran with, and `settings`: what every
method was (the prompts, TF-IDF's and the probe's options, each fine-tuning `Recipe`)
and their fingerprint. `load_grid` refuses a file made with other settings than the
library's now, so a stored number is never shown for a method that no longer exists;
`agreement` tells whether a live run agrees with the stored one, paired by seed and
snippet.

The live lesson and the grid draw their labelled snippets from the same pool with the
same seeds (`grid_splits`), so a live run at a budget and seed is the stored run of that
budget and seed, on a subset of the test snippets.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import lzma
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferkit.foundations.data import Data
from transferkit.foundations.verdicts import compare_methods
from transferkit.methods.label_budget import data_fingerprint
from transferkit.text.finetune import recipe_for, transformer_method
from transferkit.text.methods import (
    EmbeddingTable,
    Method,
    probe_method,
    prompting_method,
    subsample,
    tfidf_method,
    train_probe,
)
from transferkit.text.reviews import reviews_splits

GRID_FILE = Path(__file__).resolve().parents[1] / "assets" / "text_grid.json.xz"
PROMPTS = {"rotten": "a bad movie", "fresh": "a good movie"}
POOL = 1400  # training snippets the labelled draws come from
BUDGETS = (8, 32, 128, 512)
SEEDS = tuple(range(5))
DRIFT_SNIPPETS = 200  # validation snippets whose vectors' drift is measured
# the trained strategies, by the name the lesson and the grid give them
TRAINED = {"partial": ("partial", {}), "full": ("full", {}),
           "full, LP-FT": ("full", {"head": "probe"}), "LoRA": ("lora", {})}


def grid_splits() -> tuple[Data, Data, Data]:
    """The pool the labelled snippets are drawn from (`POOL` of the training split),
    the validation split and the whole test split: the grid's, and the lesson's."""
    train, val, test = reviews_splits()
    return subsample(train, POOL, seed=0), val, test


def grid_methods(table: EmbeddingTable, drift_on: Iterable[str] | None = None,
                 trained: Iterable[str] = tuple(TRAINED)) -> dict[str, Method]:
    """Every method of the grid, as `label_budget_study` runs them (``trained``: which
    of the fine-tuning strategies in `TRAINED`, by name)."""
    methods: dict[str, Method] = {"prompting": prompting_method(table.text_model, PROMPTS),
                                  "TF-IDF": tfidf_method(), "frozen + probe": probe_method(table)}
    for name in trained:
        strategy, changes = TRAINED[name]
        methods[name] = transformer_method(table, strategy, drift_on=drift_on, **changes)
    return methods


def settings() -> dict[str, Any]:
    """What every method of the grid is, in plain values, and one fingerprint of it all."""
    described: dict[str, Any] = {
        "prompts": PROMPTS, "TF-IDF": _defaults(tfidf_method),
        "frozen + probe": _defaults(train_probe), "pool": POOL, "budgets": list(BUDGETS),
        "seeds": list(SEEDS)}
    for name, (strategy, changes) in TRAINED.items():
        recipe = recipe_for(strategy, **changes)
        described[name] = {"strategy": strategy, "recipe": vars(recipe),
                           "fingerprint": recipe.fingerprint()}
    text = json.dumps(described, sort_keys=True)
    return {**described, "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:12]}


def _defaults(function) -> dict[str, Any]:
    """A function's keyword defaults (its settings when called without them), as JSON."""
    return {name: list(p.default) if isinstance(p.default, tuple) else p.default
            for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty and name != "seed"}


def texts_fingerprint(texts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


# --- the file --------------------------------------------------------------------------------


@dataclass
class StoredGrid:
    """A grid read from its file: ``rows`` as `label_budget_study` made them (each
    ``test_correct`` a tuple of bools over ``test_texts``), ``provenance`` (command,
    commit, date, versions, device) and the ``settings`` it ran with."""

    rows: list[dict[str, Any]]
    provenance: dict[str, Any]
    settings: dict[str, Any]
    test_texts: list[str]

    def label(self) -> str:
        """"stored: <date>, <device>, commit <commit>" for a figure's legend or a table."""
        p = self.provenance
        return f"stored: {p['date']}, {p['device']}, commit {p['commit']}"


def save_grid(rows: Sequence[Mapping[str, Any]], test: Data, provenance: Mapping[str, Any],
              path: str | Path = GRID_FILE) -> Path:
    """Write a grid's rows with their provenance and `settings` (xz-compressed JSON;
    each run's per-snippet correctness as a string of 0s and 1s)."""
    packed = []
    for row in rows:
        row = dict(row)
        correct = row.pop("test_correct", None)
        if correct is not None:
            row["test_correct"] = "".join("1" if c else "0" for c in correct)
        packed.append(row)
    record = {"provenance": dict(provenance), "settings": settings(),
              "test_texts": list(test.x), "rows": packed}
    path = Path(path)
    path.write_bytes(lzma.compress(json.dumps(record, default=_plain).encode()))
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a grid file.")


class StaleGridError(RuntimeError):
    """The stored grid was made with other method settings than the library's now."""


def load_grid(path: str | Path = GRID_FILE, *, check: bool = True) -> StoredGrid:
    """The stored grid; with ``check``, refuse one made with settings other than `settings`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no stored grid at {path}: make it with "
                                "`python3 tools/text_grid.py`.")
    record = json.loads(lzma.decompress(path.read_bytes()))
    now = settings()
    if check and record["settings"]["fingerprint"] != now["fingerprint"]:
        changed = sorted(k for k in now if k != "fingerprint"
                         and record["settings"].get(k) != now[k])
        raise StaleGridError(
            f"{path.name} was made with other settings for {', '.join(changed)} than the "
            "library's now (e.g. a changed fine-tuning recipe), so its numbers are not for "
            "these methods. Recompute it: python3 tools/text_grid.py")
    rows = []
    for row in record["rows"]:
        row = dict(row)
        if isinstance(row.get("test_correct"), str):
            row["test_correct"] = tuple(c == "1" for c in row["test_correct"])
        rows.append(row)
    return StoredGrid(rows, record["provenance"], record["settings"], record["test_texts"])


# --- live against stored ---------------------------------------------------------------------


def on_texts(rows: Sequence[Mapping[str, Any]], texts: Sequence[str],
             all_texts: Sequence[str], fingerprint: str | None = None) -> list[dict[str, Any]]:
    """The stored ``rows`` restricted to the test snippets ``texts`` (a subset of
    ``all_texts``, the stored test set, in any order): ``test_correct`` and
    ``test_accuracy`` recomputed on them, in ``texts``' order, and ``test_fingerprint``
    the one given (that of the live test set these texts are), or none."""
    where = {t: i for i, t in enumerate(all_texts)}
    missing = [t for t in texts if t not in where]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(texts)} test snippets are not in the "
                         f"stored grid's test set, e.g. {missing[0]!r}.")
    index = [where[t] for t in texts]
    restricted = []
    for row in rows:
        correct = tuple(row["test_correct"][i] for i in index)
        restricted.append({**row, "test_correct": correct, "n_test": len(correct),
                           "test_accuracy": sum(correct) / len(correct),
                           "test_fingerprint": fingerprint})
    return restricted


def agreement(live_rows: Sequence[Mapping[str, Any]], stored: StoredGrid,
              live_test: Data, level: float = 0.95) -> list[dict[str, Any]]:
    """Does each live (method, budget) agree with the stored grid on the live test snippets?

    The stored runs of the same budgets and seeds, restricted to the live snippets, are
    paired with the live ones by seed and snippet (`compare_methods`: live against
    stored); a method agrees where the interval of the gap holds 0. One record per live
    (method, budget) with ``agrees``.
    """
    texts = list(live_test.x)
    stored_rows = on_texts([r for r in stored.rows if "test_correct" in r], texts,
                           stored.test_texts, data_fingerprint(live_test))
    records = []
    for method in dict.fromkeys(r["method"] for r in live_rows):
        live = [{**r, "method": "live"} for r in live_rows if r["method"] == method]
        seeds_budgets = {(r["budget"], r["seed"]) for r in live}
        kept = [{**r, "method": "stored"} for r in stored_rows if r["method"] == method
                and (r["budget"], r["seed"]) in seeds_budgets]
        if not kept:
            continue
        for record in compare_methods(live + kept, "live", "stored", level=level):
            record = {**record, "method": method, "baseline": "stored"}
            record["agrees"] = bool(record["low"] <= 0 <= record["high"]) \
                if record["low"] == record["low"] else record["gap"] == 0
            records.append(record)
    return records


__all__ = ["BUDGETS", "DRIFT_SNIPPETS", "GRID_FILE", "POOL", "PROMPTS", "SEEDS",
           "StaleGridError", "StoredGrid", "TRAINED", "agreement", "grid_methods",
           "grid_splits", "load_grid", "on_texts", "save_grid", "settings",
           "texts_fingerprint"]
