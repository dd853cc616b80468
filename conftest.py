"""Lesson runtime budgets, checked from nbval's own durations.

Every lesson must run top to bottom on a 2-core CPU within its budget (Binder
learners have about that). While nbval runs the lessons, this plugin adds up
the setup, call and teardown time of each lesson's cells, prints a table at
the end of the run, and fails the run if a lesson or the whole course is over
budget.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

DEFAULT_BUDGET_S = 60.0
BUDGET_S = {"04": 90.0, "05": 120.0, "06": 120.0}  # by lesson number; others get the default
COURSE_BUDGET_S = 8 * 60.0

_spent: dict[str, float] = defaultdict(float)


def budget(lesson: str) -> float:
    return BUDGET_S.get(lesson[:2], DEFAULT_BUDGET_S)


def _over_budget() -> list[str]:
    over = [f"{name}: {spent:.1f} s > {budget(name):.0f} s"
            for name, spent in _spent.items() if spent > budget(name)]
    total = sum(_spent.values())
    if total > COURSE_BUDGET_S:
        over.append(f"the whole course: {total:.1f} s > {COURSE_BUDGET_S:.0f} s")
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
    terminalreporter.section("lesson runtimes under nbval (budget)")
    for name, spent in sorted(_spent.items()):
        flag = "OVER BUDGET" if spent > budget(name) else "ok"
        write(f"{name:<40} {spent:7.1f} s  ({budget(name):.0f} s)  {flag}")
    write(f"{'whole course':<40} {sum(_spent.values()):7.1f} s  ({COURSE_BUDGET_S:.0f} s)")
    for problem in _over_budget():
        write(f"FAILED budget: {problem}", red=True)
