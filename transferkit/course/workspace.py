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
apart from "changed by the course", and which copy the folder holds: the
student versions (`STUDENT`: exercises open, what ``transferkit lab`` gives a
learner) or the full lessons (`FULL`: answers filled in, the instructor's). A
folder keeps the kind it was made with: `sync_files` refuses to write the
other kind into it. (Manifests written before kinds were recorded are a plain
``{path: fingerprint}`` object; they are read as they are, and
`transferkit.course.student.workspace_kind` tells their kind from the files.)

The rules live in `sync_files`, which takes the course's files as contents;
`sync_lessons` feeds it the lessons as they are, and `transferkit.course.student`
feeds it their student versions.
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
MANIFEST_FORMAT = 2  # 1: a plain {path: fingerprint} object, without the kind
STUDENT = "student"  # the student versions: exercises open (transferkit.course.student)
FULL = "full"  # the lessons as they are: answers filled in, the instructor guide
KINDS = {STUDENT: "the student versions of the lessons (exercises open)",
         FULL: "the full lessons (answers filled in)"}
_SKIP_PARTS = {".ipynb_checkpoints", "__pycache__", "artifacts"}


@dataclass(frozen=True)
class SyncAction:
    path: str  # relative to the lessons folder
    action: str  # "copied", "updated", "unchanged", "kept", "kept+new"
    note: str = ""


@dataclass(frozen=True)
class Manifest:
    """What a working folder's manifest records."""

    files: dict[str, str]  # path -> SHA-256 of the file as the course last wrote it
    kind: str | None  # STUDENT, FULL, or None: not recorded (an older manifest, or none)


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


def _unreadable(path: Path, problem: str) -> ValueError:
    return ValueError(
        f"{path} is not a lesson record transferkit can read ({problem}). It remembers which "
        "lessons you changed; delete it and run again: every lesson that differs from the "
        "course's is then kept as yours, with the course's version written beside it.")


def read_manifest(workdir: str | Path) -> Manifest:
    """The manifest of ``workdir`` (empty when it has none).

    A file that is not a manifest (broken JSON, a list, a folder) is a
    ``ValueError`` that names it and says how to recover: nothing is guessed.
    """
    path = Path(workdir) / MANIFEST
    if not path.exists():
        return Manifest({}, None)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _unreadable(path, str(err)) from None
    kind = None
    if isinstance(data, dict) and "format" in data:
        if data["format"] != MANIFEST_FORMAT:
            raise _unreadable(path, f"format {data['format']!r}, from another transferkit")
        files, kind = data.get("files"), data.get("kind")
        if kind is not None and kind not in KINDS:
            raise _unreadable(path, f"unknown kind {kind!r}")
    else:  # format 1: {path: fingerprint}
        files = data
    if not (isinstance(files, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise _unreadable(path, f"expected paths and fingerprints, found {type(files).__name__}")
    return Manifest(dict(files), kind)


def _write_manifest(workdir: Path, manifest: Manifest) -> None:
    record = {"format": MANIFEST_FORMAT, "kind": manifest.kind, "files": manifest.files}
    _write_atomic(workdir / MANIFEST, json.dumps(record, indent=1, sort_keys=True).encode())


def sync_files(sources: Mapping[str, bytes], workdir: str | Path,
               kind: str | None = None) -> list[SyncAction]:
    """Bring ``workdir`` up to date with ``sources`` without losing any learner edit.

    ``sources`` maps a path relative to ``workdir`` (with ``/``) to the content
    the course wants there. The rules are those of the module docstring.
    ``kind`` (`STUDENT` or `FULL`) is recorded in the manifest; a folder that
    records the other kind is refused with a ``ValueError`` before anything
    is written.
    """
    workdir = Path(workdir).resolve()
    old = read_manifest(workdir)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if kind and old.kind and kind != old.kind:
        raise ValueError(f"{workdir} holds {KINDS[old.kind]}; {KINDS[kind]} go in a folder of "
                         "their own. Nothing was changed.")
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(old.files, kind or old.kind)

    actions = []
    for key, data in sources.items():
        dest = workdir / key
        new = hashlib.sha256(data).hexdigest()
        if not dest.exists():
            _write_atomic(dest, data)
            manifest.files[key] = new
            actions.append(SyncAction(key, "copied"))
            continue
        if not dest.is_file():  # e.g. a folder of the learner's with a lesson's name
            beside = _write_beside(dest, data, new)
            actions.append(SyncAction(key, "kept+new", f"{dest.name} is a folder of yours, "
                                      f"kept; the lesson is at {beside.name}"))
            continue
        have = _digest(dest)
        if have == new:
            manifest.files[key] = new
            actions.append(SyncAction(key, "unchanged"))
        elif manifest.files.get(key) == have:  # the learner never touched it: safe to update
            _write_atomic(dest, data)
            manifest.files[key] = new
            actions.append(SyncAction(key, "updated"))
        elif manifest.files.get(key) == new:  # learner's edits, and no newer course version
            actions.append(SyncAction(key, "kept"))
        else:  # learner's edits, and the course changed too: deliver it beside theirs
            beside = _write_beside(dest, data, new)
            actions.append(SyncAction(key, "kept+new",
                                      f"your edits kept; new version: {beside.name}"))

    _write_manifest(workdir, manifest)
    return actions


def _write_beside(dest: Path, data: bytes, digest: str) -> Path:
    """Write ``data`` as ``NAME.updated-XXXXXXXX.SUFFIX`` beside ``dest`` (once)."""
    beside = dest.with_name(f"{dest.stem}.updated-{digest[:8]}{dest.suffix}")
    if not beside.exists():
        _write_atomic(beside, data)
    elif not beside.is_file():
        raise ValueError(f"{dest} and {beside} are both folders, where the course puts a "
                         f"lesson; rename one of them and run again.")
    return beside


def course_files(lessons: str | Path) -> dict[str, bytes]:
    """Every course file under ``lessons`` as it is (the `FULL` copy), by relative path."""
    lessons = Path(lessons)
    return {rel.as_posix(): (lessons / rel).read_bytes() for rel in lesson_files(lessons)}


def sync_lessons(lessons: str | Path, workdir: str | Path) -> list[SyncAction]:
    """Bring ``workdir`` up to date with the full ``lessons`` without losing any learner edit."""
    lessons, workdir = check_folders(lessons, workdir)
    return sync_files(course_files(lessons), workdir, kind=FULL)


def describe(actions: list[SyncAction]) -> str:
    """A short summary for the terminal."""
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.action] = counts.get(a.action, 0) + 1
    lines = [", ".join(f"{n} {action}" for action, n in sorted(counts.items()))]
    lines += [f"  {a.path}: {a.note}" for a in actions if a.action == "kept+new"]
    return "\n".join(lines)
