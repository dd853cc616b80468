"""Open every lesson in a real JupyterLab in headless Chromium, run it, and poke its widgets.

Each lesson is served as a learner gets it: the student copy that ``transferkit lab`` (and
``course.py lab``, and Binder) writes into a temporary folder, so the repository is never
touched (nbval runs the instructor's full lessons, answers included). For each one the test
opens the notebook in JupyterLab, runs all cells from the Run menu, waits for the kernel to
finish, and asserts that every non-empty code cell executed and that nothing went wrong: no
error output, no traceback, no widget that failed to render or reports a callback error, no
uncaught exception in the page; and that every exercise, not answered yet, shows its check's
NOT YET. Lessons listed in ``browser_expectations.EXPECTATIONS`` must also show the listed
widgets and respond to the listed interactions. A screenshot of each lesson is saved in the
test's temporary directory and its path printed (see it with ``-s``).

Needs Chromium at /usr/bin/chromium (or ``$TRANSFERKIT_CHROMIUM``); without it the test is
skipped, except when ``$CI`` is set, where it fails. Playwright never downloads a browser
here. ``$TRANSFERKIT_BROWSER_LESSONS`` points the test at another lessons folder (for
developing the test itself).

Run: ``python -m pytest tests/test_browser.py -v -s`` (or ``-m browser`` / ``-m "not browser"``).
Every browser test is also ``slow`` (the root conftest.py marks it): ``python3 course.py test
--fast`` leaves it out, the full ``python3 course.py test`` runs it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from transferkit.course.cli import install_lab_settings
from transferkit.course.student import exercise_names, prepare_workspace

try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
    from browser_expectations import EXPECTATIONS, Interaction, LessonExpectation, unanswered
except ImportError:  # tests/ made a package
    from tests.browser_expectations import (
        EXPECTATIONS,
        Interaction,
        LessonExpectation,
        unanswered,
    )

REPO = Path(__file__).resolve().parent.parent
LESSONS_DIR = Path(os.environ.get("TRANSFERKIT_BROWSER_LESSONS") or REPO / "lessons").resolve()
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

SERVER_START_TIMEOUT_S = 90
PAGE_LOAD_TIMEOUT_MS = 90_000  # JupyterLab shell + notebook + kernel idle
RUN_ALL_TIMEOUT_MS = 540_000  # all cells of one lesson (07 takes about 4.5 minutes on a slow day)
WIDGET_TIMEOUT_MS = 30_000  # an expected selector to become visible

# JupyterLab 4 DOM.
NOTEBOOK_PANEL = ".jp-NotebookPanel"
# Beware: the toolbar's ".jp-Notebook-ExecutionIndicator" reads data-status="idle" before
# any kernel exists, so kernel state is read from the app (see _KERNEL_IDLE_JS).
CODE_PROMPT = ".jp-CodeCell .jp-InputArea-prompt"
MENU = '.lm-MenuBar-item:has(.lm-MenuBar-itemLabel:text-is("{}"))'
MENU_ITEM = '.lm-Menu-item[data-command="{}"]'

# Settings for the test's own JupyterLab: no notebook windowing, so every cell is in the DOM.
# No news/update toasts comes from the course's own settings, installed in this environment
# as `transferkit lab` does (transferkit.course.cli.install_lab_settings); the test checks
# that it works.
LAB_USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
# What JupyterLab's news question and update notice say (apputils-extension's announcements).
NEWS_OR_UPDATE_TOAST = re.compile(r"Jupyter news|newer version|Ignore all updates", re.I)


def _lesson_names() -> list[str]:
    if not LESSONS_DIR.is_dir():
        return []
    return sorted(
        p.name
        for p in LESSONS_DIR.glob("*.ipynb")
        if p.is_file() and ".updated-" not in p.name and not p.name.startswith(".")
    )


LESSONS = _lesson_names()


def test_expectations_name_existing_lessons() -> None:
    """Every entry in EXPECTATIONS belongs to a lesson (catches typos and renames)."""
    unknown = sorted(set(EXPECTATIONS) - set(LESSONS))
    assert not unknown, f"EXPECTATIONS names lessons not in {LESSONS_DIR}: {unknown}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """Chromium and Playwright, or skip (fail under CI: it must never skip silently there)."""
    path = os.environ.get("TRANSFERKIT_CHROMIUM") or DEFAULT_CHROMIUM
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        _skip_or_fail(
            f"no Chromium executable at {path} (install the 'chromium' package or set "
            "$TRANSFERKIT_CHROMIUM); the browser test never downloads a browser"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        _skip_or_fail(f"Playwright for Python is not installed ({exc}): pip install playwright")
    return path


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; $CI is set, so the browser test must not be skipped")
    pytest.skip(reason)


@dataclass(frozen=True)
class LabServer:
    base_url: str
    token: str
    root_dir: Path
    log_path: Path

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_sessions(self) -> None:
        """Stop every kernel session (one lesson's kernel must not eat the next's CPU)."""
        try:
            for session in self.api("GET", "/api/sessions") or []:
                self.api("DELETE", f"/api/sessions/{session['id']}")
        except (OSError, urllib.error.URLError) as exc:
            print(f"[browser] could not shut down kernel sessions: {exc}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def lab_server(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab on 127.0.0.1 serving the learner's copy of the lessons (the student
    versions, as ``transferkit lab`` writes them), in a temporary folder."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root_dir = base / "my-lessons"
    assert prepare_workspace(LESSONS_DIR, root_dir)[0] == "student"
    install_lab_settings()  # the course's JupyterLab settings, as `transferkit lab` writes them
    settings_dir = base / "user-settings"
    for plugin, values in LAB_USER_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    for sub in ("workspaces", "config", "data", "runtime"):
        (base / sub).mkdir()

    port = _free_port()
    token = secrets.token_hex(24)
    env = dict(os.environ)
    env.update(
        # Isolate from the user's Jupyter config, kernelspecs and runtime files.
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings_dir}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
    ]  # fmt: skip
    log_path = base / "jupyterlab.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = LabServer(f"http://127.0.0.1:{port}", token, root_dir, log_path)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with code {proc.returncode} during startup; "
                    f"log {log_path}:\n{server.log_tail()}"
                )
            try:
                server.api("GET", "/api/status")
                break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"JupyterLab did not answer /api/status within {SERVER_START_TIMEOUT_S} s; "
                    f"log {log_path}:\n{server.log_tail()}"
                )
            time.sleep(0.25)
        print(f"\n[browser] JupyterLab at {server.base_url}, root {root_dir}, log {log_path}")
        yield server
    finally:
        if proc.poll() is None:
            server.shutdown_sessions()
        _stop_process_group(proc)
        log.close()


@pytest.fixture(scope="module")
def chromium(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# --------------------------------------------------------------------------- helpers


def _prompts(page) -> list[str]:
    return [t.strip() for t in page.locator(f"{NOTEBOOK_PANEL} {CODE_PROMPT}").all_text_contents()]


def _menu(page, menu: str, command: str) -> None:
    """Click a main-menu entry, e.g. ``_menu(page, "Run", "runmenu:run-all")``."""
    page.locator(MENU.format(menu)).click()
    page.locator(MENU_ITEM.format(command)).click()


# The current notebook's kernel is connected and idle (window.jupyterapp is exposed by
# --LabApp.expose_app_in_browser).
_KERNEL_IDLE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const ctx = panel && panel.sessionContext;
  const kernel = ctx && ctx.isReady && ctx.session && ctx.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

_KERNEL_STATE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const ctx = panel && panel.sessionContext;
  if (!ctx) return 'no notebook session';
  const kernel = ctx.session && ctx.session.kernel;
  if (!kernel) return `no kernel (session ready: ${ctx.isReady})`;
  return `kernel ${kernel.name}: ${kernel.status}, ${kernel.connectionStatus}`;
}"""


# Whether any of the elements matched by the selector in args[0] has text matching PATTERN.
_ANY_PROMPT_MATCHES_JS = (
    "([sel]) => [...document.querySelectorAll(sel)].some(e => PATTERN.test(e.textContent))"
)


def _wait_kernel_idle(page, lesson: str, timeout_ms: int) -> None:
    try:
        page.wait_for_function(_KERNEL_IDLE_JS, timeout=timeout_ms, polling=250)
    except Exception as exc:
        state = page.evaluate(_KERNEL_STATE_JS)
        raise AssertionError(
            f"{lesson}: no connected, idle kernel within {timeout_ms / 1000:.0f} s ({state})"
        ) from exc


def _run_all_and_wait(page, lesson: str) -> float:
    """Edit → Clear Outputs of All Cells, Run → Run All Cells, then wait until no cell is
    queued or running and the kernel is idle."""
    panel = page.locator(NOTEBOOK_PANEL)
    panel.locator(".jp-Cell").first.click()  # make sure the notebook is the current widget
    # Also clears execution counts: every prompt reads "[ ]:" until its cell runs.
    _menu(page, "Edit", "editmenu:clear-all")
    prompts = f"{NOTEBOOK_PANEL} {CODE_PROMPT}"
    started = time.monotonic()
    _menu(page, "Run", "runmenu:run-all")
    try:  # queued cells read "[*]:", run ones "[n]:"
        page.wait_for_function(
            _ANY_PROMPT_MATCHES_JS.replace("PATTERN", "/[*0-9]/"),
            arg=[prompts],
            timeout=15_000,
        )
    except Exception as exc:
        raise AssertionError(
            f"{lesson}: Run All Cells started no cell ({page.evaluate(_KERNEL_STATE_JS)}; "
            f"prompts: {_prompts(page)})"
        ) from exc
    try:
        page.wait_for_function(
            f"(args) => !({_ANY_PROMPT_MATCHES_JS.replace('PATTERN', '/[*]/')})(args)"
            f" && ({_KERNEL_IDLE_JS})()",
            arg=[prompts],
            timeout=RUN_ALL_TIMEOUT_MS,
            polling=250,
        )
    except Exception as exc:  # playwright TimeoutError: add what the prompts showed
        raise AssertionError(
            f"{lesson}: cells did not finish within {RUN_ALL_TIMEOUT_MS / 1000:.0f} s "
            f"({page.evaluate(_KERNEL_STATE_JS)}; prompts: {_prompts(page)})"
        ) from exc
    return time.monotonic() - started


_MODEL_STATE_JS = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return null;
  const errors = [];
  const notRun = [];
  const cells = panel.content.model.cells;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    if (cell.sharedModel.getSource().trim() && cell.executionCount == null) notRun.push(i);
    for (const out of cell.outputs.toJSON()) {
      if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  return { errors, notRun };
}"""


_DOM_PROBLEMS_JS = """([panelSel]) => {
  const problems = [];
  const panel = document.querySelector(panelSel);
  if (!panel) return problems;
  panel.querySelectorAll('.jp-Notebook .jp-Cell').forEach((cell, i) => {
    for (const output of cell.querySelectorAll('.jp-OutputArea-output')) {
      const text = (output.innerText || '').trim();
      const mime = output.getAttribute('data-mime-type');
      if (mime === 'application/vnd.jupyter.stderr' && text.includes('Traceback')) {
        problems.push({ cell: i, kind: 'traceback shown', text });
      }
      // transferkit.course.widgets.guarded shows a failing widget callback as .transferkit-error
      for (const el of output.querySelectorAll('.transferkit-error')) {
        problems.push({ cell: i, kind: 'widget callback error', text: el.innerText || '' });
      }
      if (output.querySelector('.jupyter-widgets-error-widget')) {
        const kind = 'widget failed to render';
        problems.push({ cell: i, kind, text: 'ipywidgets error widget' });
      }
      if (text.startsWith('Error displaying widget')) {
        problems.push({ cell: i, kind: 'widget failed to render', text });
      }
      if (text === 'Loading widget...') {
        problems.push({ cell: i, kind: 'widget still loading', text });
      }
    }
  });
  return problems;
}"""


def _dom_problems(page) -> list[dict]:
    return page.evaluate(_DOM_PROBLEMS_JS, [NOTEBOOK_PANEL])


def _wait_widgets_settled(page, lesson: str) -> None:
    """Wait until no widget output still reads "Loading widget..."."""
    deadline = time.monotonic() + WIDGET_TIMEOUT_MS / 1000
    while True:
        loading = [p for p in _dom_problems(page) if p["kind"] == "widget still loading"]
        if not loading:
            return
        if time.monotonic() > deadline:
            cells = sorted({p["cell"] for p in loading})
            raise AssertionError(
                f"{lesson}: widget output(s) in cell(s) {cells} still read 'Loading widget...' "
                f"after {WIDGET_TIMEOUT_MS / 1000:.0f} s"
            )
        page.wait_for_timeout(250)


def _error_outputs(page, page_errors: list[str]) -> list[str]:
    """Every error the executed notebook shows, as readable strings (empty when clean).

    Cell numbers are 0-based positions among all cells of the notebook.
    """
    found: list[str] = []
    # 1. Error outputs and never-run cells (Run All stops at the first error) in the
    #    notebook model; window.jupyterapp is exposed by --LabApp.expose_app_in_browser.
    state = page.evaluate(_MODEL_STATE_JS)
    if state is None:
        found.append("could not read the notebook model through window.jupyterapp")
    else:
        found.extend(f"error output: {e}" for e in state["errors"])
        if state["notRun"]:
            found.append(f"non-empty code cells that did not run: {state['notRun']}")
    # 2. What the user sees: tracebacks (JupyterLab renders errors as stderr-typed
    #    outputs) and widgets that failed to render.
    for problem in _dom_problems(page):
        found.append(f"cell {problem['cell']}: {problem['kind']}:\n{_clip(problem['text'])}")
    # 3. Uncaught exceptions in the page (e.g. an anywidget whose render() throws leaves
    #    an empty output and only this trace).
    found.extend(f"uncaught page error: {_clip(e, 600)}" for e in page_errors)
    return found


def _clip(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2 :]


def _check_selectors(page, lesson: str, expectation: LessonExpectation) -> None:
    panel = page.locator(NOTEBOOK_PANEL)
    missing = []
    timeout = WIDGET_TIMEOUT_MS
    for selector in expectation.selectors:
        try:
            panel.locator(selector).first.wait_for(state="visible", timeout=timeout)
        except Exception:
            missing.append(selector)
            timeout = 2_000  # already failing: do not wait the full time for the rest
    if missing:
        outputs = [_clip(t, 120) for t in panel.locator(".jp-OutputArea-output").all_inner_texts()]
        raise AssertionError(
            f"{lesson}: expected selector(s) not visible: {missing}; "
            f"the notebook's outputs read: {outputs}"
        )


def _check_unanswered_exercises(page, lesson: str, root_dir: Path) -> None:
    """Every exercise of the student copy, not answered yet, shows its check's NOT YET."""
    names = exercise_names(json.loads((root_dir / lesson).read_text(encoding="utf-8")))
    assert names, f"{lesson}: the student copy has no exercises"
    panel = page.locator(NOTEBOOK_PANEL)
    missing = []
    for name in names:
        try:
            panel.locator(unanswered(name)).first.wait_for(state="visible", timeout=5_000)
        except Exception:
            missing.append(name)
    if missing:
        outputs = [_clip(t, 120) for t in panel.locator(".jp-OutputArea-output").all_inner_texts()]
        raise AssertionError(
            f"{lesson}: no 'NOT YET <name>: no answer yet' for {missing}; "
            f"the notebook's outputs read: {outputs}"
        )


def _check_no_news_or_update_toast(page, lesson: str) -> None:
    """A first run without distractions: JupyterLab shows no "get notified about official
    Jupyter news?" question and no update notice (the course's settings turn both off)."""
    page.wait_for_timeout(1_000)  # the announcements plugin asks once the app is restored
    toasts = page.locator(".Toastify__toast, .jp-Notification-Toast").all_inner_texts()
    unwanted = [t for t in toasts if NEWS_OR_UPDATE_TOAST.search(t)]
    assert not unwanted, f"{lesson}: JupyterLab shows news/update notifications: {unwanted}"


def _interact(page, lesson: str, interaction: Interaction) -> tuple[str, str]:
    panel = page.locator(NOTEBOOK_PANEL)
    what = f"{lesson}: {interaction.describe()}"
    control = panel.locator(interaction.control)
    watch = panel.locator(interaction.watch)
    for name, locator in (("control", control), ("watched", watch)):
        try:
            locator.first.wait_for(state="attached", timeout=WIDGET_TIMEOUT_MS)
        except Exception as exc:
            raise AssertionError(f"{what}: no element matches the {name} selector") from exc
        if (n := locator.count()) != 1:
            raise AssertionError(f"{what}: the {name} selector is ambiguous ({n} matches)")
    control.scroll_into_view_if_needed()
    before = (watch.text_content() or "").strip()
    if interaction.before and not re.search(interaction.before, before):
        raise AssertionError(
            f"{what}: before the action the watched text is {before!r}, "
            f"which does not match {interaction.before!r}"
        )
    if interaction.action == "keys":
        control.click()
        for key in interaction.keys:
            control.press(key)
    elif interaction.action == "click":
        control.click()
    elif interaction.action == "fill":
        control.fill(interaction.text or "")
        control.press("Enter")
    else:
        option = interaction.option
        labels = [t.strip() for t in control.locator("option").all_text_contents()]
        if isinstance(option, int):
            if not 0 <= option < len(labels):
                raise AssertionError(f"{what}: no option #{option}; the options are {labels}")
            control.select_option(index=option)
        else:
            if option not in labels:
                raise AssertionError(f"{what}: no option {option!r}; the options are {labels}")
            control.select_option(label=option)
    deadline = time.monotonic() + interaction.timeout_ms / 1000
    after = before
    while time.monotonic() < deadline:
        after = (watch.text_content() or "").strip()
        if after != before and (not interaction.expect or re.search(interaction.expect, after)):
            return before, after
        page.wait_for_timeout(200)
    expectation = f" to text matching {interaction.expect!r}" if interaction.expect else ""
    raise AssertionError(
        f"{what}: the watched text did not change{expectation} within "
        f"{interaction.timeout_ms / 1000:.0f} s (before {before!r}, now {after!r})"
    )


# --------------------------------------------------------------------------- the test


@pytest.mark.browser
@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_in_jupyterlab(lesson: str, lab_server: LabServer, chromium, tmp_path: Path) -> None:
    expectation = EXPECTATIONS.get(lesson)
    stem = Path(lesson).stem
    screenshot = tmp_path / f"{stem}.png"
    context = chromium.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page_errors: list[str] = []  # uncaught exceptions: a failure
    console_errors: list[str] = []  # console.error: only printed when the test fails
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        # A fresh, reset workspace per lesson: only this notebook is open.
        page.goto(
            lab_server.url(f"/lab/workspaces/test-{stem}/tree/{lesson}?reset"),
            timeout=PAGE_LOAD_TIMEOUT_MS,
        )
        try:
            page.locator(f"{NOTEBOOK_PANEL} .jp-Cell").first.wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
            _wait_kernel_idle(page, lesson, PAGE_LOAD_TIMEOUT_MS)
        except Exception as exc:
            raise AssertionError(
                f"{lesson}: notebook with an idle kernel did not appear within "
                f"{PAGE_LOAD_TIMEOUT_MS / 1000:.0f} s ({exc}); "
                f"server log:\n{lab_server.log_tail(20)}"
            ) from exc
        assert page.locator(NOTEBOOK_PANEL).count() == 1, "expected exactly one open notebook"
        timings["open"] = time.monotonic() - t0
        _check_no_news_or_update_toast(page, lesson)

        timings["run all"] = _run_all_and_wait(page, lesson)
        _wait_widgets_settled(page, lesson)

        errors = _error_outputs(page, page_errors)
        assert not errors, f"{lesson}: errors after Run All Cells:\n" + "\n".join(errors)
        _check_unanswered_exercises(page, lesson, lab_server.root_dir)

        if expectation is not None:
            _check_selectors(page, lesson, expectation)
            for interaction in expectation.interactions:
                before, after = _interact(page, lesson, interaction)
                print(f"[browser] {lesson}: {interaction.describe()}: {before!r} -> {after!r}")
            errors = _error_outputs(page, page_errors)
            assert not errors, f"{lesson}: errors after the interactions:\n" + "\n".join(errors)
            if expectation.selectors:  # show the widgets in the screenshot
                first = page.locator(NOTEBOOK_PANEL).locator(expectation.selectors[0]).first
                first.scroll_into_view_if_needed()
    except BaseException:
        for text in console_errors[:10]:
            print(f"[browser] {lesson}: console error: {_clip(text, 600)}")
        raise
    finally:
        try:
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"[browser] {lesson}: screenshot {screenshot}")
        except Exception as exc:  # a screenshot must not mask the real failure
            print(f"[browser] {lesson}: no screenshot ({exc})")
        context.close()
        lab_server.shutdown_sessions()
        timings["total"] = time.monotonic() - t0
        print(f"[browser] {lesson}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
