"""The lesson budgets are judged in reference seconds: the lessons' seconds divided by how
much slower a fixed probe ran in the same run than on the reference machine, up to a cap;
a slow lesson still fails."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def budgets():
    # a fresh copy of the root conftest, so the running session's own tally is untouched
    spec = importlib.util.spec_from_file_location("budgets_under_test", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probes(budgets, *factors):
    budgets._probes[:] = [f * budgets.PROBE_REFERENCE_S for f in factors]


def test_at_reference_speed_the_budgets_are_seconds(budgets):
    probes(budgets, 1.0, 1.0, 1.0)
    budgets._spent.update({"04_fine_tuning.ipynb": 80.0, "05_cnn_transfer.ipynb": 121.0})
    assert budgets.slowdown() == pytest.approx(1.0)
    assert budgets._over_budget() == ["05_cnn_transfer.ipynb: 121.0 reference s > 120 s"]


def test_a_slower_machine_stretches_every_budget_alike(budgets):
    probes(budgets, 1.9, 2.0, 2.1)
    budgets._spent.update({"05_cnn_transfer.ipynb": 230.0, "06_choosing_a_strategy.ipynb": 250.0})
    assert budgets.slowdown() == pytest.approx(2.0)
    # 230 s is 115 reference seconds (fine); 250 s is 125 (over)
    assert budgets._over_budget() == ["06_choosing_a_strategy.ipynb: 125.0 reference s > 120 s"]


def test_one_probe_on_a_spike_of_load_does_not_move_the_factor(budgets):
    probes(budgets, 1.0, 1.02, 2.9, 0.98, 1.0)
    assert budgets.slowdown() == pytest.approx(1.0)


def test_the_course_total_can_fail_when_every_lesson_fits(budgets):
    probes(budgets, 2.0)
    budgets._spent.update({"03_autoencoders.ipynb": 110.0, "04_fine_tuning.ipynb": 170.0,
                           "05_cnn_transfer.ipynb": 230.0, "06_choosing_a_strategy.ipynb": 200.0,
                           "07_transformers.ipynb": 320.0})  # 55 + 85 + 115 + 100 + 160
    assert budgets._over_budget() == ["the whole course: 515.0 reference s > 480 s"]


def test_the_stretch_is_capped_and_never_below_one(budgets):
    budgets._spent.update({"03_autoencoders.ipynb": 160.0})
    probes(budgets, 9.0, 9.0)
    assert budgets.slowdown() == budgets.MAX_SLOWDOWN == 2.5
    assert budgets._over_budget() == ["03_autoencoders.ipynb: 64.0 reference s > 60 s"]
    probes(budgets, 0.5, 0.5)  # a faster machine: plain seconds
    assert budgets.slowdown() == 1.0
    assert budgets._over_budget() == ["03_autoencoders.ipynb: 160.0 reference s > 60 s"]


def test_without_probes_the_budgets_are_plain_seconds(budgets):
    budgets._spent.update({"06_choosing_a_strategy.ipynb": 130.0})
    assert budgets.slowdown() == 1.0
    assert budgets._over_budget()[0].startswith("06_choosing_a_strategy.ipynb: 130.0")


def run_protocol(budgets, item, nextitem):
    hook = budgets.pytest_runtest_protocol(item, nextitem)
    next(hook)  # before the item's setup, call and teardown
    with pytest.raises(StopIteration):
        next(hook)  # after them


def test_the_probes_run_before_each_lesson_and_after_the_last(budgets, monkeypatch):
    readings = iter([0.6, 0.7, 0.8])
    monkeypatch.setattr(budgets, "probe", lambda: next(readings))
    cells = [SimpleNamespace(path=Path("lessons") / name) for name in
             ["00_welcome.ipynb"] * 3 + ["01_gradient_descent.ipynb"] * 2]
    unit_test = SimpleNamespace(path=ROOT / "tests" / "test_budgets.py")
    run_protocol(budgets, unit_test, cells[0])
    assert budgets._probes == []  # not around a unit test
    for item, nextitem in zip(cells, [*cells[1:], unit_test], strict=True):
        run_protocol(budgets, item, nextitem)
    assert budgets._probes == [0.6, 0.7, 0.8]


def test_the_probe_leaves_torch_as_it_found_it(budgets):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert budgets.probe_once() > 0
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)  # the global random stream is untouched
