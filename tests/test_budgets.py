"""The lesson budgets are judged in reference seconds: a slow machine (measured on the
calibration lessons) stretches them, up to a cap, and a slow lesson still fails."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def budgets():
    # a fresh copy of the root conftest, so the running session's own tally is untouched
    spec = importlib.util.spec_from_file_location("budgets_under_test", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_at_reference_speed_the_budgets_are_seconds(budgets):
    budgets._spent.update({"00_welcome.ipynb": 7.1, "01_gradient_descent.ipynb": 11.4,
                           "05_cnn_transfer.ipynb": 121.0})
    assert budgets.slowdown() == pytest.approx(1.0)
    assert budgets._over_budget() == ["05_cnn_transfer.ipynb: 121.0 reference s > 120 s"]


def test_a_slower_machine_stretches_every_budget_alike(budgets):
    budgets._spent.update({"00_welcome.ipynb": 14.2, "01_gradient_descent.ipynb": 22.8,
                           "05_cnn_transfer.ipynb": 230.0, "06_choosing_a_strategy.ipynb": 250.0})
    assert budgets.slowdown() == pytest.approx(2.0)
    # 230 s is 115 reference seconds (fine); 250 s is 125 (over)
    assert budgets._over_budget() == ["06_choosing_a_strategy.ipynb: 125.0 reference s > 120 s"]


def test_the_stretch_is_capped_and_never_below_one(budgets):
    budgets._spent.update({"00_welcome.ipynb": 70.0, "01_gradient_descent.ipynb": 70.0})
    assert budgets.slowdown() == budgets.MAX_SLOWDOWN
    budgets._spent.update({"00_welcome.ipynb": 1.0, "01_gradient_descent.ipynb": 1.0})
    assert budgets.slowdown() == 1.0


def test_without_the_calibration_lessons_the_budgets_are_plain_seconds(budgets):
    budgets._spent.update({"06_choosing_a_strategy.ipynb": 130.0})
    assert budgets.slowdown() == 1.0
    assert budgets._over_budget()[0].startswith("06_choosing_a_strategy.ipynb: 130.0")
