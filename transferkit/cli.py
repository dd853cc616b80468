"""The ``transferkit`` command line.

* ``transferkit doctor`` — the environment report (versions, device, widgets).
* ``transferkit lab`` — copy the lessons into a working folder (never
  overwriting your edits) and start JupyterLab on it, on 127.0.0.1 with a
  fresh token, printing the address to open. It first writes the course's
  JupyterLab settings into the environment it runs in (`install_lab_settings`:
  no "get notified about news?" question, no update check), never into your
  own JupyterLab settings.
* ``transferkit student DEST`` — write the student versions of the lessons
  (answers replaced by ``raise NotImplementedError``, checks kept) into DEST,
  for an instructor to hand out; a student's edits there are never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from .doctor import format_report, report
from .student import write_student_versions
from .workspace import describe, sync_lessons

FIRST_LESSON = "00_welcome.ipynb"
# The course's JupyterLab defaults: a first run without distractions, and no requests to the
# internet. JupyterLab otherwise asks "Would you like to get notified about official Jupyter
# news?" (fetchNews "none") and checks for a newer version of itself.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}


def lab_settings_path(prefix: str | Path | None = None) -> Path:
    """The ``overrides.json`` of the JupyterLab in the environment at ``prefix`` (default:
    this Python's): JupyterLab's defaults for everyone using that environment, which a
    learner can still change in Settings. ``$JUPYTERLAB_DIR`` moves it, as it moves JupyterLab."""
    app_dir = os.environ.get("JUPYTERLAB_DIR") or Path(prefix or sys.prefix, "share", "jupyter",
                                                       "lab")
    return Path(app_dir) / "settings" / "overrides.json"


def install_lab_settings(prefix: str | Path | None = None) -> Path:
    """Merge `LAB_SETTINGS` into the environment's ``overrides.json`` (other entries kept);
    the file is only written when something changes. Returns its path."""
    path = lab_settings_path(prefix)
    try:
        current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it.") from None
    merged = {**current, **{plugin: {**current.get(plugin, {}), **values}
                            for plugin, values in LAB_SETTINGS.items()}}
    if merged != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    return path


def default_lessons() -> Path:
    """``./lessons`` if there is one, else the lessons beside this package's source."""
    here = Path.cwd() / "lessons"
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "lessons"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def lab_command(workdir: Path, port: int, token: str, open_browser: bool) -> list[str]:
    """The command that starts JupyterLab on ``workdir``, bound to loopback."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0  # containers, CI: Jupyter refuses
    return [
        sys.executable, "-m", "jupyter", "lab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={workdir}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={open_browser}",
        *(["--ServerApp.allow_root=True"] if as_root else []),
    ]


def _headless() -> bool:
    return sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    facts = report()
    print(format_report(facts))
    return 1 if facts["problems"] else 0


def cmd_lab(args: argparse.Namespace) -> int:
    lessons = Path(args.lessons) if args.lessons else default_lessons()
    workdir = Path(args.workdir).resolve()
    try:
        actions = sync_lessons(lessons, workdir)
    except (FileNotFoundError, ValueError) as err:
        print(f"transferkit lab: {err}", file=sys.stderr)
        return 2
    print(f"Lessons in {workdir}: {describe(actions)}")
    try:
        install_lab_settings()
    except OSError as err:  # a read-only environment: JupyterLab still works, with its pop-ups
        print(f"transferkit lab: could not write the course's JupyterLab settings ({err})",
              file=sys.stderr)
    port = args.port or free_port()
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/lab/tree/{FIRST_LESSON}?token={token}"
    print(f"\nOpen the course at:\n\n    {url}\n\nStop the server with Ctrl-C (twice).\n",
          flush=True)
    if args.dry_run:
        return 0
    open_browser = not (args.no_browser or _headless())
    command = lab_command(workdir, port, token, open_browser)
    os.chdir(workdir)
    if os.name == "posix":  # become JupyterLab: Ctrl-C and kill reach it directly
        os.execv(command[0], command)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0


def cmd_student(args: argparse.Namespace) -> int:
    lessons = Path(args.lessons) if args.lessons else default_lessons()
    dest = Path(args.dest).resolve()
    try:
        actions = write_student_versions(lessons, dest)
    except (FileNotFoundError, ValueError) as err:
        print(f"transferkit student: {err}", file=sys.stderr)
        return 2
    print(f"Student versions in {dest}: {describe(actions)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transferkit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="print the environment report")
    p.set_defaults(run=cmd_doctor)
    p = sub.add_parser("lab", help="copy the lessons to a working folder and open JupyterLab")
    p.add_argument("--workdir", default="my-lessons",
                   help="your working copy of the lessons (default: ./my-lessons)")
    p.add_argument("--lessons", help="the course's lessons folder (default: ./lessons)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--dry-run", action="store_true",
                   help="sync the lessons and print the address, but do not start JupyterLab")
    p.set_defaults(run=cmd_lab)
    p = sub.add_parser("student", help="write the student versions of the lessons (no answers)")
    p.add_argument("dest", help="the folder to write them to (outside the lessons folder)")
    p.add_argument("--lessons", help="the course's lessons folder (default: ./lessons)")
    p.set_defaults(run=cmd_student)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
