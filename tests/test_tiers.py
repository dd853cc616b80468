"""The tests in two tiers: `python3 course.py test --fast` runs the library's tests alone (no
lesson is executed, neither a kernel nor Chromium starts); `python3 course.py test` runs
every test, each lesson twice (in full under nbval, as the student version in the browser
test), and CI runs exactly that."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb") if ".updated-" not in p.name)


def test_every_lesson_execution_is_slow_and_nothing_else():
    """One collection (no test runs) of the browser test and every lesson under nbval."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_browser.py", "lessons", "--nbval-lax", "-m", "slow"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    slow = [line for line in out.splitlines() if "::" in line]
    browser = sorted(re.search(r"\[(.+)\]", n)[1] for n in slow if "test_lesson_in_jupyter" in n)
    under_nbval = sorted({Path(n.split("::")[0]).name for n in slow if ".ipynb::" in n})
    assert browser == LESSONS and under_nbval == LESSONS
    assert len(slow) == len(browser) + sum(".ipynb::" in n for n in slow)
    # one test is left for the fast tier: the browser test's check of its own expectations,
    # which runs nothing
    assert f"{len(slow)}/{len(slow) + 1} tests collected (1 deselected)" in out


def run_test_command(course_script, monkeypatch, *args: str) -> tuple[list[str], list[str]]:
    """What ``course.py test ARGS`` would start (the command) and set up (its steps)."""
    steps, commands = [], []
    monkeypatch.setitem(course_script, "ensure_venv", lambda extras: steps.append("venv"))
    monkeypatch.setitem(course_script, "ensure_chromium", lambda: steps.append("chromium"))
    monkeypatch.setitem(course_script, "subprocess", type("Stub", (), {"call": staticmethod(
        lambda command, cwd, env: commands.append(command) or 0)}))
    assert course_script["test"](list(args)) == 0
    (command,) = commands
    return command[1:], steps


def test_fast_runs_the_library_tests_and_no_lesson(course_script, monkeypatch):
    command, steps = run_test_command(course_script, monkeypatch, "--fast", "-k", "checkpoint")
    assert command[:3] == ["-m", "pytest", "tests"] and "lessons" not in command
    assert command[command.index("-m", 1) + 1] == "not slow"
    assert not any(arg.startswith("--nbval") for arg in command) and "--fast" not in command
    assert command[-2:] == ["-k", "checkpoint"], "your own arguments go to pytest"
    assert steps == ["venv"], "no Chromium is installed for a tier without the browser test"


def test_the_full_tier_runs_every_test_and_ci_runs_it(course_script, monkeypatch):
    command, steps = run_test_command(course_script, monkeypatch)
    assert command[:4] == ["-m", "pytest", "tests", "lessons"] and "--nbval-lax" in command
    assert command.count("-m") == 1, "no marker leaves a test out"
    assert steps == ["venv", "chromium"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == "exec python3 course.py test"
