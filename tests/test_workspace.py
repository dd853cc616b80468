import hashlib
import json
import os
import stat

import pytest

from transferkit.course import cli
from transferkit.course.workspace import (
    FULL,
    MANIFEST,
    STUDENT,
    describe,
    lesson_files,
    read_manifest,
    sync_files,
    sync_lessons,
)


@pytest.fixture
def course(tmp_path):
    lessons = tmp_path / "lessons"
    (lessons / "data").mkdir(parents=True)
    (lessons / "00_welcome.ipynb").write_text("v1 welcome")
    (lessons / "01_gd.ipynb").write_text("v1 gd")
    (lessons / "data" / "notes.md").write_text("notes")
    (lessons / ".ipynb_checkpoints").mkdir()
    (lessons / ".ipynb_checkpoints" / "00_welcome-checkpoint.ipynb").write_text("x")
    return lessons, tmp_path / "work"


def actions(result):
    return {a.path: a.action for a in result}


def test_first_sync_copies_everything_but_checkpoints(course):
    lessons, work = course
    result = sync_lessons(lessons, work)
    assert actions(result) == {"00_welcome.ipynb": "copied", "01_gd.ipynb": "copied",
                               "data/notes.md": "copied"}
    assert (work / "data" / "notes.md").read_text() == "notes"
    assert not (work / ".ipynb_checkpoints").exists()
    manifest = read_manifest(work)
    assert set(manifest.files) == {"00_welcome.ipynb", "01_gd.ipynb", "data/notes.md"}
    assert manifest.kind == FULL


def test_learner_edits_are_never_overwritten(course):
    lessons, work = course
    sync_lessons(lessons, work)
    (work / "00_welcome.ipynb").write_text("my answers")
    (lessons / "00_welcome.ipynb").write_text("v2 welcome")
    (lessons / "01_gd.ipynb").write_text("v2 gd")

    result = actions(sync_lessons(lessons, work))
    assert result["00_welcome.ipynb"] == "kept+new"
    assert (work / "00_welcome.ipynb").read_text() == "my answers"
    beside = list(work.glob("00_welcome.updated-*.ipynb"))
    assert len(beside) == 1 and beside[0].read_text() == "v2 welcome"
    # an untouched lesson simply follows the course
    assert result["01_gd.ipynb"] == "updated"
    assert (work / "01_gd.ipynb").read_text() == "v2 gd"

    # running again changes nothing and writes no second copy
    again = actions(sync_lessons(lessons, work))
    assert again["00_welcome.ipynb"] == "kept+new" and again["01_gd.ipynb"] == "unchanged"
    assert len(list(work.glob("00_welcome.updated-*.ipynb"))) == 1
    assert (work / "00_welcome.ipynb").read_text() == "my answers"


def test_edited_lesson_without_course_change_is_kept_quietly(course):
    lessons, work = course
    sync_lessons(lessons, work)
    (work / "01_gd.ipynb").write_text("mine")
    assert actions(sync_lessons(lessons, work))["01_gd.ipynb"] == "kept"
    assert (work / "01_gd.ipynb").read_text() == "mine"


def test_files_already_there_without_a_manifest_are_kept(course):
    lessons, work = course
    work.mkdir()
    (work / "00_welcome.ipynb").write_text("mine from before")
    result = actions(sync_lessons(lessons, work))
    assert result["00_welcome.ipynb"] == "kept+new"
    assert (work / "00_welcome.ipynb").read_text() == "mine from before"


def test_nothing_is_deleted(course):
    lessons, work = course
    sync_lessons(lessons, work)
    (work / "my_notes.ipynb").write_text("private")
    (lessons / "01_gd.ipynb").unlink()
    sync_lessons(lessons, work)
    assert (work / "my_notes.ipynb").exists() and (work / "01_gd.ipynb").exists()


def test_bad_folders(course, tmp_path):
    lessons, _ = course
    with pytest.raises(FileNotFoundError):
        sync_lessons(tmp_path / "none", tmp_path / "w")
    with pytest.raises(ValueError, match="outside"):
        sync_lessons(lessons, lessons / "inner")


def test_describe_mentions_kept_edits(course):
    lessons, work = course
    sync_lessons(lessons, work)
    (work / "00_welcome.ipynb").write_text("mine")
    (lessons / "00_welcome.ipynb").write_text("v2")
    text = describe(sync_lessons(lessons, work))
    assert "your edits kept" in text and "updated-" in text


def test_lesson_files_skips_outputs(course):
    lessons, _ = course
    (lessons / "artifacts").mkdir()
    (lessons / "artifacts" / "encoder.pt").write_text("x")
    assert [p.as_posix() for p in lesson_files(lessons)] == [
        "00_welcome.ipynb", "01_gd.ipynb", "data/notes.md"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_copied_files_get_the_usual_mode_not_a_private_one(course):
    lessons, work = course
    old = os.umask(0o022)
    try:
        sync_lessons(lessons, work)
    finally:
        os.umask(old)
    assert stat.S_IMODE((work / "00_welcome.ipynb").stat().st_mode) == 0o644


# --- the manifest: unreadable ones are named, older ones are read ------------------------


@pytest.mark.parametrize("content, problem", [
    ("{not json", "Expecting property name"),
    ("[]", "found list"),
    ('{"00_welcome.ipynb": 1}', "found dict"),
    ('{"format": 9, "files": {}}', "format 9"),
    ('{"format": 2, "kind": "answers", "files": {}}', "unknown kind"),
])
def test_an_unreadable_manifest_is_named_with_the_fix(course, content, problem):
    lessons, work = course
    work.mkdir()
    (work / MANIFEST).write_text(content)
    with pytest.raises(ValueError) as err:
        sync_lessons(lessons, work)
    message = str(err.value)
    assert str(work / MANIFEST) in message and problem in message
    assert "delete it and run again" in message
    assert sorted(p.name for p in work.iterdir()) == [MANIFEST], "nothing was written"


def test_lab_reports_an_unreadable_manifest_in_one_line(course, capsys):
    lessons, work = course
    work.mkdir()
    (work / MANIFEST).write_text("[]")
    assert cli.main(["lab", "--dry-run", "--lessons", str(lessons), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("transferkit lab: ") and MANIFEST in err and len(err.splitlines()) == 1


def test_a_manifest_that_is_a_folder_is_named(course):
    lessons, work = course
    (work / MANIFEST).mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{MANIFEST} is not a lesson record"):
        sync_lessons(lessons, work)


def test_a_manifest_from_before_kinds_is_read_and_rewritten(course):
    """Earlier versions wrote ``{path: fingerprint}``: their records of what was copied hold."""
    lessons, work = course
    sync_lessons(lessons, work)
    (work / MANIFEST).write_text(json.dumps(read_manifest(work).files))  # the old format
    assert read_manifest(work).kind is None
    (work / "00_welcome.ipynb").write_text("mine")
    (lessons / "00_welcome.ipynb").write_text("v2 welcome")
    (lessons / "01_gd.ipynb").write_text("v2 gd")
    result = actions(sync_lessons(lessons, work))
    assert result == {"00_welcome.ipynb": "kept+new", "01_gd.ipynb": "updated",
                      "data/notes.md": "unchanged"}
    assert (work / "00_welcome.ipynb").read_text() == "mine"
    assert read_manifest(work).kind == FULL


def test_a_folder_keeps_the_kind_it_was_made_with(course):
    lessons, work = course
    sync_lessons(lessons, work)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="holds the full lessons .* folder of their own"):
        sync_files({"00_welcome.ipynb": b"student version"}, work, kind=STUDENT)
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before


# --- something of the learner's where a lesson goes ----------------------------------------


def test_a_folder_named_like_a_lesson_is_kept_and_the_lesson_goes_beside(course):
    lessons, work = course
    (work / "00_welcome.ipynb").mkdir(parents=True)
    (work / "00_welcome.ipynb" / "mine.txt").write_text("mine")
    result = sync_lessons(lessons, work)
    assert actions(result)["00_welcome.ipynb"] == "kept+new"
    assert (work / "00_welcome.ipynb" / "mine.txt").read_text() == "mine"
    beside = list(work.glob("00_welcome.updated-*.ipynb"))
    assert len(beside) == 1 and beside[0].read_text() == "v1 welcome"
    text = describe(result)
    assert "00_welcome.ipynb is a folder of yours, kept" in text and beside[0].name in text
    sync_lessons(lessons, work)  # again: no second copy
    assert list(work.glob("00_welcome.updated-*.ipynb")) == beside


def test_folders_in_the_way_of_a_lesson_and_its_new_version_are_named(course):
    lessons, work = course
    sync_lessons(lessons, work)
    (work / "00_welcome.ipynb").unlink()
    (work / "00_welcome.ipynb").mkdir()
    (lessons / "00_welcome.ipynb").write_text("v2 welcome")
    digest = hashlib.sha256(b"v2 welcome").hexdigest()[:8]
    (work / f"00_welcome.updated-{digest}.ipynb").mkdir()
    with pytest.raises(ValueError, match="are both folders.*rename one"):
        sync_lessons(lessons, work)
