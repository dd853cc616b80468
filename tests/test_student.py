"""Student versions of the lessons: answers out, checks in, a student's work never lost.

The student versions also run, every cell, in the browser test (tests/test_browser.py
opens the copy `transferkit lab` gives a learner); here, nothing runs a whole lesson.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import itertools
import json
import math
import re
import textwrap
from pathlib import Path

import pytest

import transferkit.course.text_checks  # noqa: F401  (registers lesson 07's checks)
from transferkit.course import cli
from transferkit.course.checks import check
from transferkit.course.student import (
    BEGIN,
    CODE_STUB,
    END,
    TAG,
    exercise_names,
    prepare_workspace,
    solution,
    solution_regions,
    student_files,
    student_notebook,
    workspace_kind,
    write_student_versions,
)
from transferkit.course.workspace import FULL, MANIFEST, STUDENT, read_manifest

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
        "    x = ...",
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


@pytest.mark.parametrize("source, stub", [
    # the checked variable is set to ... so that the check runs and says NOT YET
    (f"{BEGIN}\nhelper = 2\nanswer = helper * 21\n{END}\ncheck('00.x', answer)",
     ["# YOUR CODE HERE", "answer = ..."]),
    (f"{BEGIN}\nm = 2\n{END}\n{BEGIN}\nn = 3\n{END}\ncheck('00.x', m)\ncheck('00.y', n)",
     ["# YOUR CODE HERE", "m = ...", "# YOUR CODE HERE", "n = ..."]),
    # no variable to set: nbgrader's own stub
    (f"{BEGIN}\nanswer = 42\n{END}\ncheck('00.x', answer + 0)", CODE_STUB),
    (f"{BEGIN}\nhelper = 2\n{END}\nanswer = helper\ncheck('00.x', answer)",
     [*CODE_STUB, "answer = helper"]),
    (f"%time x = 1\n{BEGIN}\nanswer = 42\n{END}\ncheck('00.x', answer)", CODE_STUB),
])
def test_the_stub_sets_the_checked_variable_or_raises(source, stub):
    lines = text(student_notebook(notebook(code_cell(source)))["cells"][0]).splitlines()
    assert [line for line in lines if "check(" not in line and "%time" not in line] == stub


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


# --- the learner's copy: what `transferkit lab` (and `course.py lab`) gives -----------------


def exercise_pairs(path: Path):
    """(lesson cell, student cell) for each exercise cell of the lesson at ``path``."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = student_notebook(nb, name=path.name)
    return [(before, after) for before, after in zip(nb["cells"], out["cells"], strict=True)
            if before["cell_type"] == "code" and solution_regions(text(before))]


def answer_lines(cell: dict) -> list[str]:
    lines = text(cell).splitlines()
    return [line for b, e in solution_regions(text(cell)) for line in lines[b + 1:e]]


def test_lab_gives_a_learner_no_answers_and_no_instructor_guide(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))  # not this venv's JupyterLab
    mine = tmp_path / "my-lessons"
    assert cli.main(["lab", "--dry-run", "--lessons", str(ROOT / "lessons"),
                     "--workdir", str(mine)]) == 0
    out = capsys.readouterr().out
    assert "exercises are open" in out and "solution(" in out and "--instructor" in out
    assert not (mine / "INSTRUCTORS.md").exists()
    assert read_manifest(mine).kind == STUDENT
    exercises = 0
    for path in LESSONS:
        copied = json.loads((mine / path.name).read_text(encoding="utf-8"))
        assert BEGIN not in json.dumps(copied), f"a solution marker in {path.name}"
        for (lesson_cell, _), cell in zip(exercise_pairs(path), [
                c for c in copied["cells"] if TAG in c["metadata"].get("tags", [])], strict=True):
            answer = {line.strip() for line in answer_lines(lesson_cell)} - {""}
            assert not answer & {line.strip() for line in text(cell).splitlines()}, path.name
            assert cell["outputs"] == [], "a stored PASS would give the answer away"
            exercises += 1
    assert exercises >= 3 * len(LESSONS)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_exercise_fails_its_check_until_answered_and_passes_with_the_answer(path):
    """Cheap, without running the lesson: the stub hands its check ``...`` (NOT YET); with
    the answer typed in, the cell is the lesson's own cell, whose stored PASS nbval compares
    (``# NBVAL_CHECK_OUTPUT``) every time the tests run the lessons."""
    for lesson_cell, cell in exercise_pairs(path):
        (name,) = exercise_names({"cells": [cell]})
        calls = [node for node in ast.walk(ast.parse(text(cell))) if isinstance(node, ast.Call)
                 and getattr(node.func, "id", None) == "check"]
        (variable,) = [call.args[1].id for call in calls]
        lines = text(cell).splitlines()
        stub = f"{variable} = ..."
        assert [line.strip() for line in lines].count(stub) == 1, f"{name}: no stub {stub!r}"
        namespace = {"check": check}
        exec(f"{stub}\nresult = check({name!r}, {variable})", namespace)
        result = namespace["result"]
        assert not result and "no answer yet" in result.message, name

        at = [line.strip() for line in lines].index(stub)
        answered = lines[:at - 1] + answer_lines(lesson_cell) + lines[at + 1:]
        regionless = [line for line in text(lesson_cell).splitlines()
                      if line.strip() not in (BEGIN, END)]
        assert answered == regionless, f"{name}: the answer does not fit the stub's place"
        (stored,) = lesson_cell["outputs"]
        assert "".join(stored["data"]["text/plain"]).startswith(f"PASS {name}:"), name


def names_read(source: str) -> set[str]:
    source = "\n".join(line for line in source.splitlines()
                       if not line.lstrip().startswith(("%", "!")))
    return {node.id for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def needs_an_answer(nb: dict) -> list[str]:
    """Cells of ``nb`` that read a name only an answer (a solution region) defines: in the
    student version they would fail, or compute with ``...``."""
    problems, answers = [], set()
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = text(cell)
        regions = solution_regions(source)
        lines = source.splitlines()
        if regions:
            kept = text(student_notebook({"cells": [cell]})["cells"][0])
            checked = {call.args[1].id for call in ast.walk(ast.parse(kept))
                       if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "check"}
            bound = {node.id for b, e in regions for node in ast.walk(
                ast.parse(textwrap.dedent("\n".join(lines[b + 1:e]))))
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
            read = names_read(kept) - checked
            problems += [f"cell {index} reads {n}" for n in sorted(read & (bound | answers))]
            answers |= bound
        else:
            problems += [f"cell {index} reads {n}" for n in sorted(names_read(source) & answers)]
    return problems


def test_needs_an_answer_finds_a_cell_that_reads_an_answer():
    exercise = code_cell(f"{BEGIN}\nhelper = 2\nanswer = helper * 21\n{END}\ncheck('00.x', answer)")
    assert needs_an_answer(notebook(code_cell("x = 1"), exercise, code_cell("x + 1"))) == []
    assert needs_an_answer(notebook(exercise, code_cell("print(answer)"))) == [
        "cell 1 reads answer"]
    assert needs_an_answer(notebook(exercise, code_cell("helper + 1"))) == ["cell 1 reads helper"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_no_cell_of_a_lesson_needs_an_answer(path):
    assert needs_an_answer(json.loads(path.read_text(encoding="utf-8"))) == []


# --- the answers, one deliberate step away ------------------------------------------------


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_solution_returns_each_exercises_answer(path):
    for lesson_cell, cell in exercise_pairs(path):
        (name,) = exercise_names({"cells": [cell]})
        shown = solution(name)
        assert shown.lesson == path.name and shown.name == name
        assert str(shown) == textwrap.dedent("\n".join(answer_lines(lesson_cell))).strip("\n")
        assert textwrap.indent(str(shown), "    ") in repr(shown)
        assert f"```python\n{shown}\n```" in shown._repr_markdown_()


def test_a_revealed_answer_passes_its_check():
    """The cheap ones, run: what `solution` shows is an answer the check accepts."""
    from transferkit.foundations import schedules
    from transferkit.foundations.data import load_digits

    x, y = load_digits()
    context = {"x": x, "y": y, "math": math, "schedules": schedules}
    names = ["00.count_of_threes", "00.pixels_per_image", "00.which_step_needs_labels",
             "01.one_step", "01.largest_stable_lr", "01.momentum_limit", "02.cross_entropy",
             "04.momentum_drift", "05.bn_running_mean", "06.stlr_peak_step",
             "06.one_cycle_first_lr", "07.lora_parameters"]
    for name in names:
        namespace = dict(context)
        before = set(namespace)
        exec(str(solution(name)), namespace)
        (variable,) = [v for v in set(namespace) - before - {"__builtins__", "_", "values"}]
        assert check(name, namespace[variable]), name


def test_solution_names_what_is_missing(tmp_path):
    with pytest.raises(KeyError, match="no exercise checked as '00.nope'"):
        solution("00.nope")
    with pytest.raises(FileNotFoundError, match="lessons folder, and there is none"):
        solution("00.count_of_threes", lessons=tmp_path / "none")


# --- which copy a folder holds: kept across versions -------------------------------------


def test_lab_instructor_gives_the_full_lessons_and_the_guide(course, capsys, monkeypatch,
                                                            tmp_path):
    lessons, _ = course
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))
    full = tmp_path / "full"
    assert cli.main(["lab", "--dry-run", "--instructor", "--lessons", str(lessons),
                     "--workdir", str(full)]) == 0
    assert "instructor guide" in capsys.readouterr().out
    for rel in ("00_a.ipynb", "01_b.ipynb", "INSTRUCTORS.md", "data/notes.md"):
        assert (full / rel).read_bytes() == (lessons / rel).read_bytes()
    assert read_manifest(full).kind == FULL


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != MANIFEST}


def old_full_copy(lessons: Path, work: Path) -> None:
    """``my-lessons/`` as earlier versions of ``transferkit lab`` left it: the full lessons
    and a manifest ``{path: fingerprint}``."""
    work.mkdir()
    record = {}
    for path in [*lessons.glob("*.ipynb"), lessons / "INSTRUCTORS.md"]:
        (work / path.name).write_bytes(path.read_bytes())
        record[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (work / MANIFEST).write_text(json.dumps(record))


def test_full_lessons_from_an_earlier_version_are_kept(course, capsys, monkeypatch, tmp_path):
    lessons, work = course
    old_full_copy(lessons, work)
    mine = json.loads((work / "00_a.ipynb").read_text())
    mine["cells"][1]["source"] = ["x = 41 + 1\n", "check('00.x', x)"]
    (work / "00_a.ipynb").write_text(json.dumps(mine))
    before = files(work)

    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))
    assert cli.main(["lab", "--dry-run", "--lessons", str(lessons), "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "holds the full lessons" in out and f"--workdir {work}-student" in out
    after = files(work)
    assert {path: after[path] for path in before} == before, "every file as it was"
    assert set(after) - set(before) == {"data/notes.md"}, "a new course file arrives"
    assert read_manifest(work).kind == FULL

    # the course changes both lessons: the untouched one follows it, as a full lesson
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (lessons / name).write_text(json.dumps(notebook(PLAIN, PLAIN, EXERCISE)))
    kind, actions = prepare_workspace(lessons, work)
    assert kind == FULL
    assert {a.path: a.action for a in actions}["00_a.ipynb"] == "kept+new"
    assert (work / "01_b.ipynb").read_bytes() == (lessons / "01_b.ipynb").read_bytes()
    assert json.loads((work / "00_a.ipynb").read_text()) == mine
    (beside,) = work.glob("00_a.updated-*.ipynb")
    assert "secret_answer" in beside.read_text(), "the new version beside is the full one too"


def test_a_student_folder_refuses_the_full_lessons_and_back(course, tmp_path, capsys):
    lessons, dest = course
    write_student_versions(lessons, dest)
    before = files(dest)
    assert cli.main(["lab", "--dry-run", "--instructor", "--lessons", str(lessons),
                     "--workdir", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "holds the student versions" in err and f"{dest}-full" in err
    assert files(dest) == before

    full = tmp_path / "full"
    prepare_workspace(lessons, full, FULL)
    with pytest.raises(ValueError, match="holds the full lessons"):
        write_student_versions(lessons, full)


@pytest.mark.parametrize("how, kind", [
    ("an earlier transferkit lab (full lessons, old manifest)", FULL),
    ("an earlier transferkit student (old manifest)", STUDENT),
    ("full lessons copied by hand (no manifest)", FULL),
    ("notebooks of the learner's own (no manifest)", None),
    ("nothing yet", None),
])
def test_the_kind_of_a_folder_from_before_kinds_were_recorded(course, how, kind):
    lessons, work = course
    if "earlier transferkit lab" in how:
        old_full_copy(lessons, work)
    elif "earlier transferkit student" in how:
        write_student_versions(lessons, work)
        (work / MANIFEST).write_text(json.dumps(read_manifest(work).files))
    elif "by hand" in how:
        work.mkdir()
        (work / "00_a.ipynb").write_bytes((lessons / "00_a.ipynb").read_bytes())
    elif "own" in how:
        work.mkdir()
        (work / "mine.ipynb").write_text(json.dumps(notebook(PLAIN)))
    assert workspace_kind(work) == kind
    assert prepare_workspace(lessons, work)[0] == (kind or STUDENT)


def test_binder_and_the_hub_links_open_the_learners_copy():
    """Binder writes the student versions into my-lessons/, and every link a learner is given
    opens them; an nbgitpuller link pulls a branch of student versions, never main."""
    postbuild = (ROOT / "binder" / "postBuild").read_text()
    assert "transferkit.course.cli student my-lessons --lessons lessons" in postbuild
    docs = (ROOT / "README.md").read_text() + (ROOT / "lessons" / "INSTRUCTORS.md").read_text()
    opened = re.findall(r"https://mybinder\.org/v2/gh/\S+?urlpath=lab/tree/([^\s)|]+)", docs)
    assert len(opened) >= len(LESSONS)
    assert {path.partition("/")[0] for path in opened} == {"my-lessons"}
    assert {path.partition("/")[2] for path in opened} == {p.name for p in LESSONS}
    assert "https://HUB/hub/user-redirect/lab/tree/my-lessons/00_welcome.ipynb" in docs
    pulls = re.findall(r"git-pull\?\S+", docs)
    assert pulls and all("branch=student" in link for link in pulls)
