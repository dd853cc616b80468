"""Lesson 07's stored grid: written with its provenance and settings, refused when the
methods changed since, restricted to the live test snippets, and compared paired with a
live run. The stored file itself: made with today's recipes (and RECIPES are the ones the
validation search chose)."""

from __future__ import annotations

import json

import pytest
import torch

from transferkit.foundations.data import Data
from transferkit.text import finetune as text_finetune
from transferkit.text import grid as text_grid
from transferkit.text.grid import (
    GRID_FILE,
    StaleGridError,
    agreement,
    load_grid,
    on_texts,
    save_grid,
    settings,
)
from transferkit.text.reviews import Texts

TEXTS = [f"snippet {i}" for i in range(40)]


def rows_for(method, seeds, correct_of, budget=8):
    return [{"method": method, "budget": budget, "seed": s, "n_test": len(TEXTS),
             "test_accuracy": sum(correct_of(s)) / len(TEXTS),
             "test_correct": tuple(correct_of(s))} for s in seeds]


def pattern(seed, shift=0):
    return [((i * 7 + seed * 3 + shift) % 5) != 0 for i in range(len(TEXTS))]


def texts_data(texts):
    return Data(Texts(texts), torch.zeros(len(texts), dtype=torch.long))


PROVENANCE = {"command": "python3 tools/text_grid.py", "commit": "abc1234",
              "date": "2026-12-04", "device": "cpu (2 CPU threads)"}


def test_a_grid_round_trips_with_its_provenance_and_settings(tmp_path):
    rows = rows_for("full", range(3), pattern)
    test = texts_data(TEXTS)
    path = save_grid(rows, test, PROVENANCE, tmp_path / "grid.json.xz")
    stored = load_grid(path)
    assert stored.provenance == PROVENANCE and stored.test_texts == TEXTS
    assert stored.settings["fingerprint"] == settings()["fingerprint"]
    assert [r["test_correct"] for r in stored.rows] == [r["test_correct"] for r in rows]
    assert "2026-12-04" in stored.label() and "abc1234" in stored.label()


def test_a_grid_made_with_another_recipe_is_refused(tmp_path, monkeypatch):
    test = texts_data(TEXTS)
    path = save_grid(rows_for("full", range(2), pattern), test, PROVENANCE,
                     tmp_path / "grid.json.xz")
    changed = dict(text_finetune.RECIPES, full=text_finetune.recipe_for("full", lr=1e-3))
    monkeypatch.setattr(text_finetune, "RECIPES", changed)
    with pytest.raises(StaleGridError, match=r"full.*python3 tools/text_grid.py"):
        load_grid(path)
    assert load_grid(path, check=False).rows  # readable when asked, e.g. to compare


def test_stored_rows_are_restricted_to_the_live_snippets_in_their_order():
    rows = rows_for("full", [0], pattern)
    live = [TEXTS[5], TEXTS[1], TEXTS[2]]
    [row] = on_texts(rows, live, TEXTS)
    assert row["test_correct"] == (pattern(0)[5], pattern(0)[1], pattern(0)[2])
    assert row["test_accuracy"] == pytest.approx(sum(row["test_correct"]) / 3)
    with pytest.raises(ValueError, match="not in the stored grid's test set"):
        on_texts(rows, ["a snippet nobody stored"], TEXTS)


def stored_grid(rows):
    return text_grid.StoredGrid(rows, PROVENANCE, settings(), TEXTS)


def test_a_live_run_identical_to_the_stored_one_agrees_and_a_different_one_does_not():
    stored = stored_grid(rows_for("full", range(5), pattern))
    live_test = texts_data(TEXTS[:30])
    same = on_texts(rows_for("full", range(3), pattern), TEXTS[:30], TEXTS)
    [record] = agreement(same, stored, live_test)
    assert record["agrees"] and record["gap"] == 0 and record["seeds"] == 3
    worse = on_texts(rows_for("full", range(3), lambda s: [False] * len(TEXTS)), TEXTS[:30],
                     TEXTS)
    [record] = agreement(worse, stored, live_test)
    assert not record["agrees"] and record["gap"] < 0


def test_the_stored_grid_was_made_with_todays_methods():
    """After a recipe changes, tools/text_grid.py must run again (lesson 07 draws it)."""
    if not GRID_FILE.exists():
        pytest.fail(f"{GRID_FILE.name} is missing: make it with python3 tools/text_grid.py")
    stored = load_grid()  # raises StaleGridError if the settings differ
    p = stored.provenance
    assert {"command", "commit", "date", "device", "torch", "transformers"} <= set(p)
    methods = {r["method"] for r in stored.rows}
    assert methods == {"prompting", "TF-IDF", "frozen + probe", *text_grid.TRAINED}
    budgets = {r["budget"] for r in stored.rows}
    assert set(text_grid.BUDGETS) <= budgets
    assert all(len(r["test_correct"]) == len(stored.test_texts) for r in stored.rows)


def test_recipes_are_the_ones_the_validation_search_chose():
    record = text_finetune.recipe_search()
    assert record["chosen"] == text_finetune.RECIPES
    assert "test" not in json.dumps(record["data"])  # chosen on validation only
    assert {"command", "commit", "date", "device"} <= set(record["provenance"])


def test_search_table_compares_each_candidate_with_its_stages_best_paired():
    recipe = vars(text_finetune.recipe_for("full"))

    def run(stage, lr, seed, correct):
        r = dict(recipe, lr=lr)
        return {"stage": stage, "strategy": "full", "budget": 128, "seed": seed, "recipe": r,
                "fingerprint": f"lr{lr}", "val_accuracy": correct.count("1") / len(correct),
                "val_correct": correct}

    good, bad = "1111111111" * 4, "1111100000" * 4
    record = {"runs": [run("1 rate", 3e-5, s, good) for s in (0, 1)]
              + [run("1 rate", 1e-4, s, bad) for s in (0, 1)]}
    rows = text_finetune.search_table(record)
    assert [r["validation accuracy"] for r in rows] == ["1.000", "0.500"]
    assert rows[0]["against the stage's best"] == "the stage's best"
    assert rows[1]["against the stage's best"].startswith("-0.500 [")
    assert "lr 0.0001" in rows[1]["settings"] and rows[1]["seeds"] == 2


def test_a_live_slice_of_the_lesson_agrees_with_the_stored_grid(monkeypatch, tmp_path):
    """What lesson 07 runs live is the stored grid's run of the same budget and seed (same
    pool, draws and recipe): a slice of it, on 300 of the test snippets, agrees paired."""
    from transferkit.methods.label_budget import label_budget_study
    from transferkit.text.methods import EmbeddingTable, subsample
    from transferkit.text.model import load_text_model

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    stored = load_grid()
    pool, _, test_all = text_grid.grid_splits()
    test = subsample(test_all, 300, seed=0)
    table = EmbeddingTable(load_text_model(device="cpu"), test.x)
    methods = text_grid.grid_methods(table, trained=("full",))
    rows = label_budget_study(methods, (pool, None, test), budgets=(8,), seeds=(0, 1),
                              progress=False)
    records = agreement(rows, stored, test)
    assert {r["method"] for r in records} == set(methods)
    disagree = [(r["method"], r["budget"], r["gap"]) for r in records if not r["agrees"]]
    assert not disagree, f"live runs differ from the stored grid: {disagree}"
