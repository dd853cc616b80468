"""The learner's working copy of the lessons, kept without ever losing work.

The course's notebooks live in ``lessons/``. Learners work in a copy (by
default ``my-lessons/``), so that updating the course never touches what they
wrote. `sync_lessons` brings the copy up to date with these rules:

* a lesson not in the copy yet is copied in;
* a lesson the learner has not changed since it was copied is updated when the
  course changes it;
* a lesson the learner *has* changed is never touched: if the course has a
  newer version, it is written beside it as ``NAME.updated-XXXXXXXX.ipynb``;
* nothing in the copy is ever deleted.

A small manifest (``.transferkit-lessons.json``) remembers the fingerprint of
each file as it was copied, which is how "changed by the learner" is told
apart from "changed by the course". The rules live in `sync_files`, which
takes the course's files as contents; `sync_lessons` feeds it the lessons as
they are, and `transferkit.student` feeds it their student versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MANIFEST = ".transferkit-lessons.json"
_SKIP_PARTS = {".ipynb_checkpoints", "__pycache__", "artifacts"}


@dataclass(frozen=True)
class SyncAction:
    path: str  # relative to the lessons folder
    action: str  # "copied", "updated", "unchanged", "kept", "kept+new"
    note: str = ""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(dest: Path, data: bytes) -> None:
    """Write to a temporary file beside ``dest``, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)  # mkstemp makes the file private; give it the usual mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lesson_files(lessons: Path) -> list[Path]:
    """The files of the course, relative to ``lessons`` (outputs and caches left out)."""
    return sorted(
        p.relative_to(lessons)
        for p in lessons.rglob("*")
        if p.is_file() and not _SKIP_PARTS.intersection(p.relative_to(lessons).parts)
    )


def check_folders(lessons: str | Path, workdir: str | Path,
                  role: str = "working folder") -> tuple[Path, Path]:
    """Both folders, resolved; the lessons must exist and ``workdir`` must lie outside them.

    ``role`` names ``workdir`` in the error message.
    """
    lessons, workdir = Path(lessons).resolve(), Path(workdir).resolve()
    if not lessons.is_dir():
        raise FileNotFoundError(f"no lessons folder at {lessons}.")
    if workdir == lessons or lessons in workdir.parents:
        raise ValueError(f"the {role} {workdir} must be outside {lessons}.")
    return lessons, workdir


def sync_files(sources: Mapping[str, bytes], workdir: str | Path) -> list[SyncAction]:
    """Bring ``workdir`` up to date with ``sources`` without losing any learner edit.

    ``sources`` maps a path relative to ``workdir`` (with ``/``) to the content
    the course wants there. The rules are those of the module docstring.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    manifest_path = workdir / MANIFEST
    manifest: dict[str, str] = (
        json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    )

    actions = []
    for key, data in sources.items():
        dest = workdir / key
        new = hashlib.sha256(data).hexdigest()
        if not dest.exists():
            _write_atomic(dest, data)
            manifest[key] = new
            actions.append(SyncAction(key, "copied"))
            continue
        have = _digest(dest)
        if have == new:
            manifest[key] = new
            actions.append(SyncAction(key, "unchanged"))
        elif manifest.get(key) == have:  # the learner never touched it: safe to update
            _write_atomic(dest, data)
            manifest[key] = new
            actions.append(SyncAction(key, "updated"))
        elif manifest.get(key) == new:  # learner's edits, and no newer course version
            actions.append(SyncAction(key, "kept"))
        else:  # learner's edits, and the course changed too: deliver it beside theirs
            beside = dest.with_name(f"{dest.stem}.updated-{new[:8]}{dest.suffix}")
            if not beside.exists():
                _write_atomic(beside, data)
            actions.append(SyncAction(key, "kept+new", f"new version: {beside.name}"))

    _write_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return actions


def sync_lessons(lessons: str | Path, workdir: str | Path) -> list[SyncAction]:
    """Bring ``workdir`` up to date with ``lessons`` without losing any learner edit."""
    lessons, workdir = check_folders(lessons, workdir)
    sources = {rel.as_posix(): (lessons / rel).read_bytes() for rel in lesson_files(lessons)}
    return sync_files(sources, workdir)


def describe(actions: list[SyncAction]) -> str:
    """A short summary for the terminal."""
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.action] = counts.get(a.action, 0) + 1
    lines = [", ".join(f"{n} {action}" for action, n in sorted(counts.items()))]
    lines += [f"  {a.path}: your edits kept; {a.note}" for a in actions if a.action == "kept+new"]
    return "\n".join(lines)
