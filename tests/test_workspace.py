import json
import os
import stat

import pytest

from transferkit.workspace import MANIFEST, describe, lesson_files, sync_lessons


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
    assert set(json.loads((work / MANIFEST).read_text())) == {
        "00_welcome.ipynb", "01_gd.ipynb", "data/notes.md"}


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
