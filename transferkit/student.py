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
student version replaces each marked region by nbgrader's stub, indented like
the ``### BEGIN SOLUTION`` line it replaces::

    # NBVAL_CHECK_OUTPUT
    # YOUR CODE HERE
    raise NotImplementedError("replace this line with your answer")
    check("04.trainable_after_freeze_to", n_trainable)

Everything else stays: the ``check(...)`` line (so the learner's answer is
checked as soon as the stub is gone), the cells without markers and their
stored outputs. The exercise cell's own outputs are cleared (the stored
``PASS`` would give the game away), and it gets the tag ``raises-exception``:
JupyterLab's *Run All* then carries on past an exercise not yet done instead
of stopping there, and nbval expects the error. A markdown answer between the
same markers becomes ``YOUR ANSWER HERE``.

`student_notebook` does this to one notebook (a pure function on the notebook's
JSON); `write_student_versions` does it to a whole lessons folder and writes
the results with the rules of `transferkit.workspace`, so a student version
that a learner has started working in is never overwritten.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .workspace import SyncAction, check_folders, lesson_files, sync_files

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_MESSAGE = "replace this line with your answer"
CODE_STUB = ["# YOUR CODE HERE", f'raise NotImplementedError("{STUB_MESSAGE}")']
TEXT_STUB = ["YOUR ANSWER HERE"]
TAG = "raises-exception"
NOT_COPIED = {"INSTRUCTORS.md"}  # course files that stay with the instructor

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


def _strip_solutions(source: str, regions: list[tuple[int, int]], code: bool) -> str:
    """``source`` with each region replaced by the stub, indented like its BEGIN line."""
    lines = source.splitlines()
    kept: list[str] = []
    position = 0
    for begin, end in regions:
        kept += lines[position:begin]
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        kept += [indent + stub for stub in (CODE_STUB if code else TEXT_STUB)]
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
    ...         "source": ["### BEGIN SOLUTION\\n", "x = 1\\n", "### END SOLUTION\\n",
    ...                    "check('00.x', x)"]}
    >>> print("".join(student_notebook({"cells": [cell]})["cells"][0]["source"]))
    # YOUR CODE HERE
    raise NotImplementedError("replace this line with your answer")
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
    with the rules of `transferkit.workspace.sync_files` (an edited file is
    kept and the new version written beside it as ``NAME.updated-XXXXXXXX``;
    nothing is deleted). ``dest`` must be outside ``lessons``. Returns what was
    done to each file; `transferkit.workspace.describe` prints it.
    """
    lessons, dest = check_folders(lessons, dest, role="student folder")
    return sync_files(student_files(lessons), dest)
