#!/usr/bin/env python3
"""Set up the course and open it, or set it up and run every test.

    python3 course.py lab     # JupyterLab on your copy of the lessons (my-lessons/)
    python3 course.py test    # unit tests, every lesson end to end, the browser test
    python3 course.py test --fast   # the library's tests alone, in a few minutes
    python3 course.py bench   # benchmarks: fit against plain PyTorch, fine-tuning, a CNN, text
    python3 course.py gpu-check   # every lesson on this machine's GPU: device, seconds, errors

Your copy holds the student versions: every exercise waits for your answer, and
transferkit.course.student.solution("NN.name") shows the course's answer when you ask.
Instructors: `python3 course.py lab --instructor --workdir my-lessons-full` gives the
full lessons, answers and instructor guide included.

Both create (or reuse) a virtual environment in .venv/ and install the course
into it; nothing else on your machine is touched. Needs only Python 3.10+ and
access to PyPI. Run either command again at any time: the install is skipped
when nothing changed, and your edited notebooks are never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".transferkit-install"
CHROMIUM = os.environ.get("TRANSFERKIT_CHROMIUM", "/usr/bin/chromium")
# The kernels' environment, as `transferkit lab` sets it
# (transferkit.course.cli.KERNEL_ENV says why)
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}

# The test command, the full tier (CI runs it): library tests, then nbval over every lesson
# (outputs of cells marked NBVAL_CHECK_OUTPUT are compared), then the browser test, in one
# pytest run. Each lesson runs twice: in full under nbval, and as a learner's copy (the
# student version) in the browser test.
PYTEST_ARGS = [
    "-m", "pytest", "tests", "lessons",
    "--nbval-lax", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg",
    "--durations=0", "-p", "no:cacheprovider", "-o", "console_output_style=classic",
]
# `test --fast`, for everyday work: the library's tests alone. No lesson runs: the tests
# marked slow (every lesson under nbval, the browser test; conftest.py marks them) are left
# out, so neither a kernel nor Chromium starts.
FAST = "--fast"
FAST_PYTEST_ARGS = [
    "-m", "pytest", "tests", "-m", "not slow",
    "--durations=15", "-p", "no:cacheprovider", "-o", "console_output_style=classic",
]


def say(message: str) -> None:
    print(f"[course] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> None:
    say(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_venv(extras: set[str]) -> None:
    """Create .venv and install the course (with ``extras``), unless already done."""
    if sys.version_info < (3, 10):  # noqa: UP036  (this script may run on an old Python)
        sys.exit(f"transferkit needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists():
        have_hash, *have_extras = STAMP.read_text().split()
        if have_hash == wanted and extras <= set(have_extras):
            return
        extras = extras | set(have_extras)
    if not PYTHON.exists():
        say(f"creating a virtual environment in {VENV}")
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (subprocess.CalledProcessError, OSError) as err:
            shutil.rmtree(VENV, ignore_errors=True)
            sys.exit(f"Could not create a virtual environment in {VENV} ({err}). On Debian or "
                     "Ubuntu install the venv module first: sudo apt-get install python3-venv")
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    say("installing the course (the first time takes a few minutes: PyTorch is large)")
    run([PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], env=env)
    target = f"{ROOT}[{','.join(sorted(extras))}]" if extras else str(ROOT)
    run([PYTHON, "-m", "pip", "install", "--progress-bar", "off", "-e", target], env=env)
    STAMP.write_text(" ".join([wanted, *sorted(extras)]))


def ensure_chromium() -> None:
    """The browser test needs Chromium; install Debian's as root if it is missing."""
    if Path(CHROMIUM).exists():
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing Chromium for the browser test (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "chromium"], env=env)
    else:
        say(f"no Chromium at {CHROMIUM}: the browser test will be skipped. Install it "
            "(e.g. 'sudo apt-get install chromium') or set TRANSFERKIT_CHROMIUM.")


def lab(args: list[str]) -> int:
    """`transferkit lab` on my-lessons/: the student versions (`--instructor`: the full lessons)."""
    ensure_venv(set())
    command = [str(c) for c in [PYTHON, "-m", "transferkit.course.cli", "lab", "--lessons",
                                ROOT / "lessons", "--workdir", ROOT / "my-lessons", *args]]
    say(" ".join(command))
    if os.name == "posix":  # hand the terminal over: Ctrl-C and kill reach JupyterLab
        sys.stdout.flush()
        os.execv(command[0], command)
    return subprocess.call(command)


def test(args: list[str]) -> int:
    """Every test (the full tier), or with ``--fast`` the library's tests alone; the other
    arguments go to pytest (a ``-m`` of yours replaces the fast tier's ``-m "not slow"``)."""
    ensure_venv({"test"})
    fast = FAST in args
    args = [arg for arg in args if arg != FAST]
    if not fast:
        ensure_chromium()
    command = [PYTHON, *(FAST_PYTEST_ARGS if fast else PYTEST_ARGS), *args]
    say(" ".join(str(c) for c in command))
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", PYTHONDONTWRITEBYTECODE="1")
    if not KERNEL_ENV.keys() & env.keys():  # the lessons run under what `transferkit lab` gives
        env = {**KERNEL_ENV, **env}  # them (unless you set either setting yourself)
    return subprocess.call([str(c) for c in command], cwd=ROOT, env=env)


BENCHMARKS = ("bench_fit.py", "bench_finetune.py", "bench_cnn.py", "bench_text.py")  # in order


def bench(args: list[str]) -> int:
    ensure_venv(set())
    status = 0
    for script in BENCHMARKS:
        command = [PYTHON, ROOT / "benchmarks" / script, *args]
        say(" ".join(str(c) for c in command))
        status = subprocess.call([str(c) for c in command], cwd=ROOT) or status
    return status


def gpu_check(args: list[str]) -> int:
    """Every lesson executed on this machine's accelerator (tools/gpu_check.py says more)."""
    ensure_venv(set())
    command = [PYTHON, ROOT / "tools" / "gpu_check.py", *args]
    say(" ".join(str(c) for c in command))
    return subprocess.call([str(c) for c in command], cwd=ROOT)


def main(argv: list[str]) -> int:
    commands = {"lab": lab, "test": test, "bench": bench, "gpu-check": gpu_check}
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
