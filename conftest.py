"""Lesson runtime budgets, checked from nbval's own durations.

Every lesson must run top to bottom on a 2-core CPU within its budget (Binder
learners have about that). While nbval runs the lessons, this plugin adds up
the setup, call and teardown time of each lesson's cells, prints a table at
the end of the run, and fails the run if a lesson or the whole course is over
budget.

The budgets are seconds on the reference machine (the 2-core machine the course
is developed on, at the speed it had when they were set). The same machine is
sometimes much slower (it is shared): on 2026-12-02 lessons 00 and 01, whose work
did not change, took 1.8 times their reference times. So the run measures its
own speed on those two calibration lessons, whose work is fixed, and judges every
lesson in reference seconds: its time divided by that factor (at least 1, at most
MAX_SLOWDOWN, so a slow run cannot hide a slow lesson). The table prints both.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

DEFAULT_BUDGET_S = 60.0
# by lesson number; others get the default
BUDGET_S = {"04": 90.0, "05": 120.0, "06": 120.0, "07": 180.0}
COURSE_BUDGET_S = 8 * 60.0
# Calibration: lessons whose work is fixed, and their nbval seconds on the reference machine
# (README, "Performance and timings", 2026-11-23).
CALIBRATION_S = {"00_welcome.ipynb": 7.1, "01_gradient_descent.ipynb": 11.4}
MAX_SLOWDOWN = 2.5

_spent: dict[str, float] = defaultdict(float)


def budget(lesson: str) -> float:
    return BUDGET_S.get(lesson[:2], DEFAULT_BUDGET_S)


def slowdown() -> float:
    """How much slower this run is than the reference machine, from the calibration
    lessons (1 when they did not run, or ran at reference speed or faster)."""
    if not all(name in _spent for name in CALIBRATION_S):
        return 1.0
    ratio = sum(_spent[name] for name in CALIBRATION_S) / sum(CALIBRATION_S.values())
    return min(max(ratio, 1.0), MAX_SLOWDOWN)


def _over_budget() -> list[str]:
    factor = slowdown()
    over = [f"{name}: {spent / factor:.1f} reference s > {budget(name):.0f} s"
            for name, spent in _spent.items() if spent / factor > budget(name)]
    total = sum(_spent.values()) / factor
    if total > COURSE_BUDGET_S:
        over.append(f"the whole course: {total:.1f} reference s > {COURSE_BUDGET_S:.0f} s")
    return over


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _spent[Path(path).name] += report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _over_budget() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if not _spent:
        return
    write = terminalreporter.write_line
    factor = slowdown()
    terminalreporter.section("lesson runtimes under nbval (budget)")
    write(f"this run is {factor:.2f}x the reference machine's time on the calibration lessons "
          f"({', '.join(CALIBRATION_S)}); budgets are in reference seconds")
    for name, spent in sorted(_spent.items()):
        flag = "OVER BUDGET" if spent / factor > budget(name) else "ok"
        write(f"{name:<40} {spent:7.1f} s = {spent / factor:6.1f} reference s  "
              f"({budget(name):.0f} s)  {flag}")
    total = sum(_spent.values())
    write(f"{'whole course':<40} {total:7.1f} s = {total / factor:6.1f} reference s  "
          f"({COURSE_BUDGET_S:.0f} s)")
    for problem in _over_budget():
        write(f"FAILED budget: {problem}", red=True)
