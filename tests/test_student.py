"""Student versions of the lessons: answers out, checks in, a student's work never lost."""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transferkit import cli
from transferkit.student import (
    BEGIN,
    END,
    STUB_MESSAGE,
    TAG,
    solution_regions,
    student_files,
    student_notebook,
    write_student_versions,
)

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (ROOT / "lessons").glob("*.ipynb") if ".updated-" not in p.name)


_ids = itertools.count()


def code_cell(source: str, outputs=None, count=None, **metadata) -> dict:
    return {"cell_type": "code", "execution_count": count, "id": f"cell-{next(_ids)}",
            "metadata": metadata, "outputs": outputs or [],
            "source": source.splitlines(keepends=True)}


def markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "id": "m1", "metadata": {},
            "source": source.splitlines(keepends=True)}


def notebook(*cells) -> dict:
    return {"cells": list(cells), "metadata": {"kernelspec": {
        "display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}


def text(cell: dict) -> str:
    return "".join(cell["source"])


RESULT = [{"output_type": "execute_result", "execution_count": 7, "metadata": {},
           "data": {"text/plain": ["PASS 00.x: right"]}}]
EXERCISE = code_cell(
    "# NBVAL_CHECK_OUTPUT\n"
    "for _ in range(1):\n"
    f"    {BEGIN}\n"
    "    x = secret_answer()\n"
    f"    {END}\n"
    "check('00.x', x)",
    outputs=RESULT, count=7, tags=["keep-me"])
PLAIN = code_cell("y = 2\nprint(y)", outputs=[{"output_type": "stream", "name": "stdout",
                                                "text": ["2\n"]}], count=3)
PROSE = markdown_cell(f"Why?\n{BEGIN}\nBecause the labels are scarce.\n{END}\n")


# --- the transformation ------------------------------------------------------------------


def test_solution_becomes_an_indented_stub_and_the_check_stays():
    nb = notebook(PLAIN, EXERCISE, PROSE)
    before = copy.deepcopy(nb)
    out = student_notebook(nb)
    assert nb == before, "the input notebook must not be changed"

    cell = out["cells"][1]
    assert text(cell).splitlines() == [
        "# NBVAL_CHECK_OUTPUT",
        "for _ in range(1):",
        "    # YOUR CODE HERE",
        f'    raise NotImplementedError("{STUB_MESSAGE}")',
        "check('00.x', x)",
    ]
    assert "secret_answer" not in json.dumps(out)
    assert cell["outputs"] == [] and cell["execution_count"] is None
    assert cell["metadata"]["tags"] == ["keep-me", TAG]
    assert out["cells"][2]["source"] == ["Why?\n", "YOUR ANSWER HERE\n"]
    assert "raises-exception" not in json.dumps(out["cells"][2])
    assert out["cells"][0] == PLAIN, "a cell without markers keeps everything, outputs too"
    assert out["metadata"] == nb["metadata"]


def test_student_version_of_a_student_version_is_the_same():
    once = student_notebook(notebook(PLAIN, EXERCISE, PROSE))
    assert student_notebook(once) == once


def test_several_regions_in_one_cell():
    cell = code_cell(f"a = 1\n{BEGIN}\nb = 2\n{END}\nc = 3\n{BEGIN}\nd = 4\n{END}\n")
    lines = text(student_notebook(notebook(cell))["cells"][0]).splitlines()
    assert lines[0] == "a = 1" and lines[3] == "c = 3"
    assert lines.count("# YOUR CODE HERE") == 2 and "b = 2" not in lines and "d = 4" not in lines


@pytest.mark.parametrize("source, problem", [
    (f"{BEGIN}\nx = 1\n", "never closed"),
    (f"x = 1\n{END}\n", f"has no '{BEGIN}' before it"),
    (f"{BEGIN}\n{BEGIN}\nx = 1\n{END}\n{END}\n", "cannot nest"),
])
def test_unbalanced_markers_name_the_cell_and_the_fix(source, problem):
    nb = notebook(PLAIN, PLAIN, code_cell(source))
    with pytest.raises(ValueError, match=problem) as err:
        student_notebook(nb, name="07_broken.ipynb")
    message = str(err.value)
    assert "07_broken.ipynb, cell 2" in message and ("Add" in message or "add" in message)


def test_solution_regions_are_found_by_line():
    assert solution_regions(f"a\n  {BEGIN}\nb\n  {END}\nc") == [(1, 3)]
    assert solution_regions("no markers here") == []


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_lesson_loses_its_answers_and_keeps_its_checks(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = student_notebook(nb, name=path.name)
    exercises = 0
    for before, after in zip(nb["cells"], out["cells"], strict=True):
        regions = solution_regions(text(before))
        if not regions:
            assert after == before
            continue
        exercises += 1
        lines = text(before).splitlines()
        answer = [line for b, e in regions for line in lines[b + 1:e] if line.strip()]
        kept = text(after).splitlines()
        assert not set(answer) & set(kept), f"an answer line is left in {path.name}"
        assert [line for line in lines if "check(" in line] == \
               [line for line in kept if "check(" in line]
        assert kept[0] == "# NBVAL_CHECK_OUTPUT"
        assert after["outputs"] == [] and TAG in after["metadata"]["tags"]
    assert exercises >= 2


# --- writing the student versions --------------------------------------------------------


@pytest.fixture
def course(tmp_path):
    lessons = tmp_path / "lessons"
    (lessons / "data").mkdir(parents=True)
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (lessons / name).write_text(json.dumps(notebook(PLAIN, EXERCISE)))
    (lessons / "data" / "notes.md").write_text("notes")
    (lessons / "INSTRUCTORS.md").write_text("the answers are in the lessons")
    return lessons, tmp_path / "handout"


def test_writes_student_versions_and_other_files_but_not_the_instructor_notes(course):
    lessons, dest = course
    actions = {a.path: a.action for a in write_student_versions(lessons, dest)}
    assert actions == {"00_a.ipynb": "copied", "01_b.ipynb": "copied", "data/notes.md": "copied"}
    assert not (dest / "INSTRUCTORS.md").exists()
    assert (dest / "data" / "notes.md").read_text() == "notes"
    written = json.loads((dest / "00_a.ipynb").read_text())
    assert written == student_notebook(json.loads((lessons / "00_a.ipynb").read_text()))
    assert "secret_answer" in (lessons / "00_a.ipynb").read_text(), "the course is untouched"


def test_a_students_edits_are_never_overwritten(course):
    lessons, dest = course
    write_student_versions(lessons, dest)
    mine = json.loads((dest / "00_a.ipynb").read_text())
    mine["cells"][1]["source"] = ["x = 42\n", "check('00.x', x)"]
    (dest / "00_a.ipynb").write_text(json.dumps(mine))
    for name in ("00_a.ipynb", "01_b.ipynb"):  # the course changes both lessons
        (lessons / name).write_text(json.dumps(notebook(PLAIN, PLAIN, EXERCISE)))

    actions = {a.path: a.action for a in write_student_versions(lessons, dest)}
    assert actions["00_a.ipynb"] == "kept+new" and actions["01_b.ipynb"] == "updated"
    assert json.loads((dest / "00_a.ipynb").read_text()) == mine
    beside = list(dest.glob("00_a.updated-*.ipynb"))
    assert len(beside) == 1 and len(json.loads(beside[0].read_text())["cells"]) == 3
    assert len(json.loads((dest / "01_b.ipynb").read_text())["cells"]) == 3
    again = {a.path: a.action for a in write_student_versions(lessons, dest)}
    assert again["00_a.ipynb"] == "kept+new" and again["01_b.ipynb"] == "unchanged"
    assert len(list(dest.glob("00_a.updated-*.ipynb"))) == 1


def test_refuses_a_folder_inside_the_lessons(course):
    lessons, _ = course
    with pytest.raises(ValueError, match="student folder .* must be outside"):
        write_student_versions(lessons, lessons / "students")


def test_a_broken_lesson_stops_before_anything_is_written(course):
    lessons, dest = course
    (lessons / "01_b.ipynb").write_text(json.dumps(notebook(code_cell(f"{BEGIN}\nx = 1"))))
    with pytest.raises(ValueError, match="01_b.ipynb, cell 0"):
        write_student_versions(lessons, dest)
    assert not dest.exists()


def test_student_files_of_the_real_course():
    files = student_files(ROOT / "lessons")
    assert {name for name in files if name.endswith(".ipynb")} >= {p.name for p in LESSONS}
    assert not any(name.endswith("INSTRUCTORS.md") for name in files)


def test_command_line(course, capsys):
    lessons, dest = course
    assert cli.main(["student", str(dest), "--lessons", str(lessons)]) == 0
    assert "Student versions in" in capsys.readouterr().out and (dest / "00_a.ipynb").exists()
    assert cli.main(["student", str(lessons / "inner"), "--lessons", str(lessons)]) == 2
    assert "must be outside" in capsys.readouterr().err
    assert cli.main(["student", str(dest), "--lessons", str(lessons / "none")]) == 2
    assert "no lessons folder" in capsys.readouterr().err
    (lessons / "00_a.ipynb").write_text("{not json")
    assert cli.main(["student", str(dest), "--lessons", str(lessons)]) == 2
    assert "00_a.ipynb is not a readable notebook" in capsys.readouterr().err


# --- the student versions run: nbval ------------------------------------------------------


def expect_not_implemented(nb: dict) -> dict:
    """For the test copy only: each exercise cell's reference output is the stub's error.

    nbval's ``raises-exception`` tag only *allows* an error. With this reference
    output and ``# NBVAL_CHECK_OUTPUT``, nbval compares ``ename`` and ``evalue``
    (never the traceback), so an exercise cell that does not raise the stub's
    ``NotImplementedError`` fails the run.
    """
    for cell in nb["cells"]:
        if TAG in cell.get("metadata", {}).get("tags", []):
            assert text(cell).startswith("# NBVAL_CHECK_OUTPUT"), text(cell)
            cell["execution_count"] = 1
            cell["outputs"] = [{"output_type": "error", "ename": "NotImplementedError",
                                "evalue": STUB_MESSAGE, "traceback": []}]
    return nb


def run_nbval(notebooks: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """nbval over ``notebooks`` in one pytest run, in this interpreter's kernel."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), TRANSFERKIT_DEVICE="cpu")
    command = [sys.executable, "-m", "pytest", *map(str, notebooks), "--nbval-lax",
               "--nbval-current-env", "--nbval-sanitize-with",
               str(ROOT / "tests" / "nbval_sanitize.cfg"), "-p", "no:cacheprovider",
               "-o", "console_output_style=classic", "-q"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1500)


def write_test_copies(nbs: dict[str, dict], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, nb in nbs.items():
        (folder / name).write_text(json.dumps(expect_not_implemented(nb)))
        paths.append(folder / name)
    return paths


def assert_ran(result: subprocess.CompletedProcess, ok: bool) -> None:
    tail = (result.stdout + result.stderr)[-6000:]
    assert (result.returncode == 0) == ok, f"nbval rc={result.returncode}:\n{tail}"


TINY_EXERCISE = code_cell(f"# NBVAL_CHECK_OUTPUT\n{BEGIN}\nanswer = 6 * 7\n{END}\n"
                          "assert answer == 42\nanswer", outputs=[], count=1)


@pytest.mark.parametrize("case, ok", [
    ("as written", True),
    ("a stub removed", False),
    ("a later cell needs the answer", False),
])
def test_nbval_fails_when_an_exercise_does_not_raise_or_is_depended_on(case, ok, tmp_path):
    """The mechanism of the test below, on a notebook small enough to run in seconds."""
    nb = student_notebook(notebook(code_cell("x = 1"), TINY_EXERCISE, code_cell("y = x + 1")))
    if case == "a stub removed":
        nb["cells"][1]["source"] = ["# NBVAL_CHECK_OUTPUT\n", "answer = 6 * 7\n", "answer"]
    if case == "a later cell needs the answer":
        nb["cells"].append(code_cell("print(answer)"))
    paths = write_test_copies({"tiny.ipynb": nb}, tmp_path / "nb")
    assert_ran(run_nbval(paths, tmp_path), ok)


def test_student_versions_of_all_lessons_run_under_nbval(tmp_path, capsys):
    """Every exercise raises the stub's NotImplementedError; every other cell passes.

    All lessons run in one pytest process, in order: lesson 04 reads what
    lesson 03 saves under ``artifacts/``. This re-runs the whole course.
    """
    files = student_files(ROOT / "lessons")
    nbs = {name: json.loads(data) for name, data in files.items()
           if name.endswith(".ipynb") and "/" not in name}
    assert sum(TAG in c["metadata"].get("tags", []) for nb in nbs.values()
               for c in nb["cells"]) >= 2 * len(nbs)
    paths = write_test_copies(nbs, tmp_path / "student")
    start = time.perf_counter()
    result = run_nbval(paths, tmp_path)
    with capsys.disabled():
        print(f"\n[student versions under nbval: {time.perf_counter() - start:.0f} s]")
    assert_ran(result, True)
