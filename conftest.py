"""The tests in tiers, and lesson runtime budgets checked from nbval's own durations.

**Tiers.** A test that executes a lesson is marked ``slow``: every cell nbval runs (the
full lessons, in lessons/) and the browser test (the student versions in JupyterLab).
`python3 course.py test` runs everything (the full tier, CI's); `python3 course.py test
--fast`, like ``pytest -m "not slow"``, runs the library's tests alone, in a few minutes.
A unit test that is slow for another reason can carry ``@pytest.mark.slow`` itself.

**Budgets.** Every lesson must run top to bottom on a 2-core CPU within its budget
(Binder learners have about that). While nbval runs the lessons, this plugin adds up the
setup, call and teardown time of each lesson's cells, prints a table at the end of the
run, and fails the run if a lesson or the whole course is over budget (the full tier
measures the budgets; the fast tier runs no lesson, so it neither prints nor checks them).

The budgets are seconds on the reference machine: the 2-core machine the course
is developed on, at the speed it had when they were set (2026-11-23; it had the
same speed on 2026-12-02). The same machine is sometimes much slower (it is
shared). So before each lesson and after the last one, the run times a fixed
piece of work like the lessons' own (`probe`: tiny networks trained and a
transformer-sized layer run on one thread; plain torch, about 2 s, not counted
in any lesson), and judges the lessons in reference seconds: their
seconds divided by how much slower the probe ran than on the reference machine
(the median of the run's probes, so one probe that lands on a passing spike of
load does not move it; at least 1, at most MAX_SLOWDOWN, so a slow run cannot
hide a slow lesson). The table prints both.

Until 2026-12-02 the factor came from lessons 00 and 01 instead. Their seconds
are mostly starting a kernel and importing, which slows less than computing
does: in one CI run they took 1.9 times their reference time while the other
lessons took 2.0 to 2.7 times theirs, and the course failed its budget on work
that fitted it.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

import pytest

DEFAULT_BUDGET_S = 60.0
# by lesson number; others get the default
BUDGET_S = {"04": 90.0, "05": 120.0, "06": 120.0, "07": 180.0}
COURSE_BUDGET_S = 8 * 60.0
# `probe`'s seconds on the reference machine, 2026-12-02, a day when lessons 00 and 01 took
# 7.2 s and 11.3 s under nbval against 7.1 s and 11.4 s on 2026-11-23: a run of the course
# probed around its lessons read 0.48-0.52 s (median 0.505) with a first version of the probe
# whose transformer block ran on two threads, and this version takes 1.15 times as long as
# that one (median of 8 interleaved pairs, 1.14-1.18)
PROBE_REFERENCE_S = 0.58
MAX_SLOWDOWN = 2.5

_spent: dict[str, float] = defaultdict(float)
_probes: list[float] = []  # seconds of each probe in this run
_probed: set[str] = set()  # lessons already probed before


def budget(lesson: str) -> float:
    return BUDGET_S.get(lesson[:2], DEFAULT_BUDGET_S)


def probe_once() -> float:
    """Seconds for one pass of a fixed workload like the lessons', on one CPU thread: a
    small MLP and a small CNN trained with Adam (lessons 02-06 train such networks on
    one thread), then a transformer-sized feed-forward block (MiniLM's 384 -> 1536 ->
    384 on 512 tokens, lesson 07) forward and backward. One thread, because several
    threads on a machine whose cores are taken by other jobs wait for each other and
    slow down far more than the machine does (the README: one such run); the lessons
    that use two threads pay that themselves, and their seconds show it."""
    import torch  # noqa: PLC0415 (only when lessons run)
    from torch import nn  # noqa: PLC0415

    g = torch.Generator().manual_seed(0)
    x, images = torch.randn(64, 64, generator=g), torch.randn(64, 1, 8, 8, generator=g)
    y, tokens = torch.randint(0, 10, (64,), generator=g), torch.randn(512, 384, generator=g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
        block = nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        for net, inputs, steps in ((mlp, x, 150), (cnn, images, 30)):
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=False)
            for _ in range(steps):
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(inputs), y).backward()
                optimizer.step()
        for _ in range(10):
            block(tokens).sum().backward()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def probe() -> float:
    """The median of three `probe_once` passes, after one to warm up."""
    probe_once()
    return statistics.median(probe_once() for _ in range(3))


def slowdown() -> float:
    """How much slower this run's machine is than the reference machine: the median of
    its probes over the reference (1 without probes; within 1 … MAX_SLOWDOWN)."""
    if not _probes:
        return 1.0
    return min(max(statistics.median(_probes) / PROBE_REFERENCE_S, 1.0), MAX_SLOWDOWN)


def _reference_seconds() -> dict[str, float]:
    factor = slowdown()
    return {name: spent / factor for name, spent in _spent.items()}


def _over_budget() -> list[str]:
    reference = _reference_seconds()
    over = [f"{name}: {seconds:.1f} reference s > {budget(name):.0f} s"
            for name, seconds in reference.items() if seconds > budget(name)]
    total = sum(reference.values())
    if total > COURSE_BUDGET_S:
        over.append(f"the whole course: {total:.1f} reference s > {COURSE_BUDGET_S:.0f} s")
    return over


def _lesson(item: pytest.Item | None) -> str | None:
    path = str(getattr(item, "path", "") or "")
    return Path(path).name if path.endswith(".ipynb") else None


def executes_a_lesson(item: pytest.Item) -> bool:
    """A cell nbval runs, or a browser test (which runs a whole lesson in JupyterLab)."""
    return _lesson(item) is not None or item.get_closest_marker("browser") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that executes a lesson ``slow``: the fast tier leaves them out."""
    for item in items:
        if executes_a_lesson(item):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Probe before a lesson's first cell (before its kernel starts) and after the last
    lesson of a run of lessons; no probe counts in a lesson's time."""
    lesson = _lesson(item)
    if lesson is not None and lesson not in _probed:
        _probed.add(lesson)
        _probes.append(probe())
    yield
    if lesson is not None and _lesson(nextitem) is None:
        _probes.append(probe())


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
    probes = sorted(_probes)
    spread = f"{probes[0]:.3f} to {probes[-1]:.3f} s" if probes else "none ran"
    write(f"this run is {slowdown():.2f}x the reference machine's time: the median of "
          f"{len(probes)} probes ({spread}) over the reference's {PROBE_REFERENCE_S} s; "
          "budgets are in reference seconds")
    reference = _reference_seconds()
    for name, spent in sorted(_spent.items()):
        flag = "OVER BUDGET" if reference[name] > budget(name) else "ok"
        write(f"{name:<40} {spent:7.1f} s = {reference[name]:6.1f} reference s  "
              f"({budget(name):.0f} s)  {flag}")
    total = sum(_spent.values())
    write(f"{'whole course':<40} {total:7.1f} s = {sum(reference.values()):6.1f} reference s  "
          f"({COURSE_BUDGET_S:.0f} s)")
    for problem in _over_budget():
        write(f"FAILED budget: {problem}", red=True)
