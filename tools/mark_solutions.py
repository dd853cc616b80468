"""Mark the lessons' exercise cells as nbgrader solution cells (for maintainers).

    .venv/bin/python tools/mark_solutions.py                # every lesson
    .venv/bin/python tools/mark_solutions.py lessons/06_x.ipynb
    .venv/bin/python tools/mark_solutions.py --check        # exit 1 if a lesson lacks marks

Instructors may run nbgrader on the lessons directly. nbgrader's ClearSolutions
(``nbgrader generate_assignment``) refuses a ``### BEGIN SOLUTION`` region in a
cell that is not marked as a solution cell (its ``enforce_metadata``), and the
metadata must validate against nbgrader's cell schema, version 3: the keys
``schema_version``, ``grade``, ``locked``, ``solution`` (and ``task``), plus a
``grade_id`` that matches ``^[a-zA-Z0-9_-]*$`` and is unique in the notebook.

Every cell holding solution markers gets::

    "nbgrader": {"grade": false, "grade_id": "04-momentum_drift", "locked": false,
                 "schema_version": 3, "solution": true, "task": false}

The ``grade_id`` comes from the cell's ``check("04.momentum_drift", ...)`` call
(an existing one is kept, so ids never change under a grader's database). Only
cell metadata changes: sources and outputs are untouched, the lessons are not
re-executed, and running the script again changes nothing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transferkit.course.student import notebook_bytes, solution_regions  # noqa: E402

SCHEMA_VERSION = 3
CHECK_NAME = re.compile(r"""\bcheck\(\s*["']([^"']+)["']""")


def solution_metadata(grade_id: str) -> dict:
    return {"grade": False, "grade_id": grade_id, "locked": False,
            "schema_version": SCHEMA_VERSION, "solution": True, "task": False}


def grade_id_for(source: str, path: Path, index: int) -> str:
    """``04-momentum_drift`` from ``check("04.momentum_drift", ...)``, else by cell index."""
    names = CHECK_NAME.findall(source)
    raw = names[0] if len(names) == 1 else f"{path.stem}-cell-{index}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)


def mark(nb: dict, path: Path) -> dict:
    """``nb`` with nbgrader solution metadata on every cell holding solution markers."""
    seen: set[str] = set()
    for index, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        if not solution_regions(source, where=f"{path.name}, cell {index}"):
            continue
        old = cell.get("metadata", {}).get("nbgrader", {})
        grade_id = old.get("grade_id") or grade_id_for(source, path, index)
        if grade_id in seen:
            raise ValueError(f"{path.name}, cell {index}: grade_id {grade_id!r} is used twice; "
                             "give each exercise its own check name.")
        seen.add(grade_id)
        cell.setdefault("metadata", {})["nbgrader"] = solution_metadata(grade_id)
    return nb


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    paths = [Path(p).resolve() for p in argv if p != "--check"] or sorted(
        (ROOT / "lessons").glob("[0-9]*.ipynb"))
    stale = []
    for path in paths:
        before = path.read_bytes()
        after = notebook_bytes(mark(json.loads(before), path))
        if after == before:
            continue
        stale.append(path.name)
        if not check_only:
            path.write_bytes(after)
            print(f"{path.name}: solution cells marked for nbgrader")
    if check_only and stale:
        print(f"lessons without nbgrader marks: {', '.join(stale)}; "
              "run tools/mark_solutions.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
