"""Student versions of the lessons: the exercises without their answers.

The lessons in ``lessons/`` are the instructor's version: every exercise cell
holds its reference answer between two marker lines, the convention of
`nbgrader <https://nbgrader.readthedocs.io>`_::

    # NBVAL_CHECK_OUTPUT
    ### BEGIN SOLUTION
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ### END SOLUTION
    check("04.trainable_after_freeze_to", n_trainable)

A learner who is handed that notebook sees the answer before trying. The
student version replaces each marked region by a stub, indented like the
``### BEGIN SOLUTION`` line it replaces: nbgrader's ``# YOUR CODE HERE``, then
the variable that the cell's ``check(...)`` reads, set to ``...``::

    # NBVAL_CHECK_OUTPUT
    # YOUR CODE HERE
    n_trainable = ...
    check("04.trainable_after_freeze_to", n_trainable)

So the cell runs as it is, and its check says NOT YET ("no answer yet")
until the learner replaces the ``...``. (Where no such variable can be found,
the stub is nbgrader's own: ``raise NotImplementedError(...)``.) Everything
else stays: the ``check(...)`` line, the cells without markers and their
stored outputs. The exercise cell's own outputs are cleared (the stored
``PASS`` would give the game away), and it gets the tag ``raises-exception``:
JupyterLab's *Run All* then carries on past an attempt that raises instead of
stopping there. A markdown answer between the same markers becomes ``YOUR
ANSWER HERE``.

`student_notebook` does this to one notebook (a pure function on the notebook's
JSON); `write_student_versions` and `prepare_workspace` (what ``transferkit
lab`` runs) do it to a whole lessons folder and write the results with the
rules of `transferkit.course.workspace`, so a lesson that a learner has started
working in is never overwritten. The answers stay one deliberate step away:
`solution` returns the course's answer to one exercise, read from the
instructor's lessons.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferkit.course.workspace import (
    FULL,
    KINDS,
    STUDENT,
    SyncAction,
    check_folders,
    course_files,
    lesson_files,
    read_manifest,
    sync_files,
)

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_MESSAGE = "replace this line with your answer"
CODE_STUB = ["# YOUR CODE HERE", f'raise NotImplementedError("{STUB_MESSAGE}")']
TEXT_STUB = ["YOUR ANSWER HERE"]
TAG = "raises-exception"
NOT_COPIED = {"INSTRUCTORS.md"}  # course files that stay with the instructor
# The course's own lessons, beside this package (an editable install: course.py, Binder, a hub)
COURSE_LESSONS = Path(__file__).resolve().parents[2] / "lessons"  # beside transferkit/
_CHECK_NAME = re.compile(r"""\bcheck\(\s*["']([^"']+)["']""")

Notebook = dict[str, Any]


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def solution_regions(source: str, where: str = "this cell") -> list[tuple[int, int]]:
    """The ``(begin, end)`` line numbers (0-based) of each solution region in ``source``.

    A marker is a line that reads exactly ``### BEGIN SOLUTION`` or
    ``### END SOLUTION`` once its indentation is stripped. Raises ``ValueError``,
    naming ``where``, when the markers do not pair up.
    """
    regions: list[tuple[int, int]] = []
    begin: int | None = None
    for number, line in enumerate(source.splitlines()):
        marker = line.strip()
        if marker == BEGIN:
            if begin is not None:
                raise ValueError(
                    f"{where}: '{BEGIN}' on line {number + 1} comes before the region opened "
                    f"on line {begin + 1} is closed. Solution regions cannot nest: add "
                    f"'{END}' after the first answer.")
            begin = number
        elif marker == END:
            if begin is None:
                raise ValueError(
                    f"{where}: '{END}' on line {number + 1} has no '{BEGIN}' before it. "
                    f"Add the '{BEGIN}' line above the answer, or remove this line.")
            regions.append((begin, number))
            begin = None
    if begin is not None:
        raise ValueError(
            f"{where}: '{BEGIN}' on line {begin + 1} is never closed. "
            f"Add a line '{END}' after the answer.")
    return regions


def _checked_variables(source: str) -> list[str]:
    """The variables passed as answers in ``check("name", variable)`` calls of ``source``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics, say: no variable is guessed
        return []
    return [node.args[1].id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Name)]


def _bound_names(code: str) -> set[str]:
    """The names that ``code`` (dedented) assigns."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return set()
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}


def _strip_solutions(source: str, regions: list[tuple[int, int]], code: bool) -> str:
    """``source`` with each region replaced by the stub, indented like its BEGIN line."""
    lines = source.splitlines()
    checked = _checked_variables(source) if code else []
    kept: list[str] = []
    position = 0
    for begin, end in regions:
        kept += lines[position:begin]
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        bound = _bound_names("\n".join(lines[begin + 1:end]))
        answer = next((name for name in checked if name in bound), None)
        if answer is not None:
            checked.remove(answer)
            stub = [CODE_STUB[0], f"{answer} = ..."]
        else:
            stub = CODE_STUB if code else TEXT_STUB
        kept += [indent + line for line in stub]
        position = end + 1
    kept += lines[position:]
    return "\n".join(kept)


def student_notebook(nb: Notebook, name: str = "the notebook") -> Notebook:
    """The student version of the notebook ``nb`` (its JSON as a dict); ``nb`` is not changed.

    Each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region becomes the stub
    (see the module docstring); the cell's outputs and execution count are
    cleared and it is tagged ``raises-exception``. Cells without markers are
    copied unchanged, outputs included, so applying this to a student version
    changes nothing. ``name`` is used in error messages.

    >>> cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 3,
    ...         "source": ["### BEGIN SOLUTION\\n", "x = 6 * 7\\n", "### END SOLUTION\\n",
    ...                    "check('00.x', x)"]}
    >>> print("".join(student_notebook({"cells": [cell]})["cells"][0]["source"]))
    # YOUR CODE HERE
    x = ...
    check('00.x', x)
    """
    out = copy.deepcopy(nb)
    for index, cell in enumerate(out.get("cells", [])):
        source = _source(cell)
        regions = solution_regions(source, where=f"{name}, cell {index}")
        if not regions:
            continue
        new = _strip_solutions(source, regions, code=cell["cell_type"] == "code")
        if source.endswith("\n"):
            new += "\n"
        cell["source"] = new.splitlines(keepends=True) if isinstance(
            cell.get("source"), list) else new
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if TAG not in tags:
                tags.append(TAG)
    return out


def notebook_bytes(nb: Notebook) -> bytes:
    """``nb`` as a file, in the layout Jupyter itself writes (so diffs stay small)."""
    return (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def student_files(lessons: str | Path) -> dict[str, bytes]:
    """Every course file under ``lessons`` as the student gets it, by relative path.

    Notebooks become their student versions; other files are copied as they
    are, except the instructor's notes (``INSTRUCTORS.md``).
    """
    lessons = Path(lessons)
    files: dict[str, bytes] = {}
    for rel in lesson_files(lessons):
        if rel.name in NOT_COPIED:
            continue
        data = (lessons / rel).read_bytes()
        if rel.suffix == ".ipynb":
            try:
                nb = json.loads(data)
            except json.JSONDecodeError as err:
                raise ValueError(f"{rel} is not a readable notebook ({err}).") from err
            data = notebook_bytes(student_notebook(nb, name=rel.as_posix()))
        files[rel.as_posix()] = data
    return files


def write_student_versions(lessons: str | Path, dest: str | Path) -> list[SyncAction]:
    """Write the student versions of the course in ``lessons`` into ``dest``.

    Never overwrites a file a student has edited: ``dest`` is kept up to date
    with the rules of `transferkit.course.workspace.sync_files` (an edited file is
    kept and the new version written beside it as ``NAME.updated-XXXXXXXX``;
    nothing is deleted). ``dest`` must be outside ``lessons``, and must not
    hold the full lessons. Returns what was done to each file;
    `transferkit.course.workspace.describe` prints it.
    """
    check_folders(lessons, dest, role="student folder")
    return prepare_workspace(lessons, dest, STUDENT)[1]


# --- the learner's folder: which copy it holds ----------------------------------------------


def _has_answers(path: Path) -> bool:
    """Whether the notebook at ``path`` holds a solution region (is a full lesson)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False
    return any(line.strip() == BEGIN for cell in cells if isinstance(cell, dict)
               for line in _source(cell).splitlines())


def workspace_kind(workdir: str | Path) -> str | None:
    """Which copy of the lessons ``workdir`` holds: ``"student"``, ``"full"``, or ``None``.

    The manifest says so when this version of transferkit wrote it. An older
    manifest (or none) does not: then the folder holds the full lessons if any
    of its notebooks still has a ``### BEGIN SOLUTION`` region (an earlier
    ``transferkit lab`` copied the full lessons), the student versions if the
    manifest lists files (an earlier ``transferkit student``), and ``None`` (a
    new folder) otherwise.
    """
    workdir = Path(workdir)
    manifest = read_manifest(workdir)
    if manifest.kind is not None:
        return manifest.kind
    names = list(manifest.files) or [p.name for p in workdir.glob("*.ipynb")]
    if any(_has_answers(workdir / name) for name in names if name.endswith(".ipynb")):
        return FULL
    return STUDENT if manifest.files else None


def prepare_workspace(lessons: str | Path, workdir: str | Path,
                      kind: str | None = None) -> tuple[str, list[SyncAction]]:
    """Bring the learner's folder ``workdir`` up to date; returns its kind and what was done.

    ``kind`` is ``"student"`` (the student versions, without the instructor
    guide), ``"full"`` (the lessons as they are, answers and guide included),
    or ``None``: the student versions, unless ``workdir`` already holds the
    full lessons (from an earlier version of the course, whose ``transferkit
    lab`` copied them): then it keeps them, under the usual rules. A folder is
    never switched to the other kind: asking for it is a ``ValueError`` and
    nothing is written. The rules for each file are `transferkit.course.workspace`'s.
    """
    lessons, workdir = check_folders(lessons, workdir)
    have = workspace_kind(workdir) if workdir.is_dir() else None
    want = kind or have or STUDENT
    if want not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if have is not None and want != have:
        raise ValueError(
            f"{workdir} holds {KINDS[have]}; {KINDS[want]} go in a folder of their own (e.g. "
            f"{workdir.with_name(workdir.name + '-' + want)}). Nothing was changed.")
    sources = student_files(lessons) if want == STUDENT else course_files(lessons)
    return want, sync_files(sources, workdir, kind=want)


# --- the answers, one deliberate step away -------------------------------------------------


@dataclass(frozen=True)
class Solution:
    """The course's answer to one exercise (what `solution` returns); shows as code."""

    name: str  # the check's name, e.g. "00.count_of_threes"
    code: str  # the answer, as the instructor's lesson has it
    lesson: str  # the notebook it comes from

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return (f"The course's answer to {self.name} ({self.lesson}):\n\n"
                f"{textwrap.indent(self.code, '    ')}")

    def _repr_markdown_(self) -> str:
        return (f"The course's answer to `{self.name}` ({self.lesson}):\n\n"
                f"```python\n{self.code}\n```")


def exercise_names(nb: Notebook) -> list[str]:
    """The check names of the exercises in ``nb`` (a lesson or its student version), in order:
    every code cell with a solution region or the ``raises-exception`` tag that calls ``check``."""
    names = []
    for cell in nb.get("cells", []):
        source = _source(cell)
        marked = BEGIN in source or TAG in cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and marked:
            names += _CHECK_NAME.findall(source)
    return names


def solution(name: str, lessons: str | Path | None = None) -> Solution:
    """The course's answer to the exercise checked as ``name``: for after you have tried.

    ``from transferkit.course.student import solution``, then ``solution("00.count_of_threes")``
    shows the code between the solution markers of that exercise in the
    instructor's lesson (``lessons/`` beside this package, or the folder
    ``lessons``). ``str()`` of the result is the code itself.
    """
    folder = Path(lessons) if lessons is not None else COURSE_LESSONS
    if not folder.is_dir():
        raise FileNotFoundError(
            f"the answers come from the course's lessons folder, and there is none at {folder} "
            "(transferkit installed without its lessons). Pass lessons='path/to/lessons' of a "
            "copy of the course.")
    prefix = name.partition(".")[0]
    for path in sorted(folder.glob(f"{prefix}_*.ipynb")):
        if ".updated-" in path.name:
            continue
        for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            source = _source(cell)
            if cell["cell_type"] != "code" or name not in _CHECK_NAME.findall(source):
                continue
            lines = source.splitlines()
            regions = solution_regions(source, where=f"{path.name}, cell {index}")
            code = "\n".join(textwrap.dedent("\n".join(lines[b + 1:e])) for b, e in regions)
            if code.strip():
                return Solution(name, code.strip("\n"), path.name)
    raise KeyError(f"no exercise checked as {name!r} in {folder}; the name is the first "
                   "argument of the exercise's check(...), e.g. '00.count_of_threes'.")
