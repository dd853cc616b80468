"""The project's promises about installation, environments and the lessons' files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ
LESSONS = sorted(p for p in (ROOT / "lessons").glob("*.ipynb") if ".updated-" not in p.name)


def runtime_dependencies() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0] for dep in project["dependencies"]]


def conda_specs(path: Path) -> list[str]:
    """Every dependency of a conda environment file, its pip: section included
    (packages that are not on conda-forge, such as the model package)."""
    env = yaml.safe_load(path.read_text())
    specs = []
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            specs.append(dep)
        elif isinstance(dep, dict):
            specs += [d for d in dep.get("pip", []) if not d.startswith("-")]
    return specs


def conda_names(path: Path) -> set[str]:
    return {re.split(r"[<>=!~ ]", dep, maxsplit=1)[0].lower() for dep in conda_specs(path)}


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_every_runtime_dependency_is_in_the_environment_file(env_file):
    names = conda_names(ROOT / env_file)
    missing = [d for d in runtime_dependencies() if CONDA_NAMES.get(d, d).lower() not in names]
    assert not missing, f"{env_file} lacks {missing} (listed in pyproject.toml)"


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_exact_pins_are_the_same_everywhere(env_file):
    """A pinned package (the model's: its files' hashes are recorded in transferkit.text.model)
    has the same version in pyproject.toml and in both environment files."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [dep.split(";")[0].replace(" ", "") for dep in project["dependencies"] if "==" in dep]
    assert pins, "the model package is pinned"
    specs = {d.replace(" ", "") for d in conda_specs(ROOT / env_file)}
    assert not [p for p in pins if p not in specs], f"{env_file} must pin {pins} exactly"


def floors(specs: list[str]) -> dict[str, str]:
    """{name: oldest version} of the specs that set one ("torch>=2.4", "pytorch >=2.4 cpu*")."""
    found = {}
    for spec in specs:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^ ,;]*)", spec)
        if match:
            found[match[1].lower()] = match[2]
    return found


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_the_floors_are_the_same_everywhere(env_file):
    """The oldest supported version of each runtime dependency is the same in
    pyproject.toml and both environment files (a conda user gets what pip users get)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {CONDA_NAMES.get(name, name).lower(): version
              for name, version in floors(project["dependencies"]).items()}
    assert "transformers" in wanted and "scipy" in wanted
    have = floors(conda_specs(ROOT / env_file))
    assert {name: have.get(name) for name in wanted} == wanted


def test_the_wheel_carries_the_data_files():
    """Every file in transferkit/assets matches a package-data pattern, so it is in the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["transferkit"]
    assets = sorted(p.relative_to(ROOT / "transferkit") for p in
                    (ROOT / "transferkit" / "assets").iterdir())
    assert assets
    assert not [a for a in assets if not any(a.match(pattern) for pattern in patterns)]


def test_binder_uses_cpu_pytorch_and_a_strict_post_build():
    env = (ROOT / "binder" / "environment.yml").read_text()
    assert re.search(r"^\s*- pytorch [^ ]+ cpu\*$", env, re.M), "Binder needs the CPU build"
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in post and "pip install" in post


def test_import_is_light():
    code = ("import sys, transferkit, transferkit.foundations.data, transferkit.training.loop; "
            "heavy = [m for m in ('plotly', 'ipywidgets', 'torchvision') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 course\.py \w+$", readme, re.M)
    assert commands[:2] == ["python3 course.py lab", "python3 course.py test"]
    assert "python3 course.py test" in (ROOT / ".ci" / "run").read_text()


def test_there_are_lessons():
    assert LESSONS and LESSONS[0].name == "00_welcome.ipynb"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_file_hygiene(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3", "JupyterLab would ask for a kernel"
    assert "widgets" not in nb["metadata"], "stored widget state goes stale; strip it"
    assert path.stat().st_size < 1_000_000
    sources = ["".join(c["source"]) for c in nb["cells"]]
    assert not any("download=True" in s and "NBVAL_SKIP" not in s for s in sources)
    assert sum("check(" in s for s in sources) >= 2, "each lesson has self-checked exercises"
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"stored error output in {path.name}"
            assert "Traceback" not in "".join(output.get("text", ""))


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_exercise_cells_carry_nbgrader_solution_metadata(path):
    """Instructors can run nbgrader on the lessons (tools/mark_solutions.py adds the marks).

    nbgrader's ClearSolutions refuses solution markers in a cell not marked as a
    solution cell, and validates the metadata against its cell schema (version 3).
    """
    from transferkit.course.student import solution_regions

    nb = json.loads(path.read_text(encoding="utf-8"))
    grade_ids = []
    for index, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        marked = bool(solution_regions(source, where=f"{path.name}, cell {index}"))  # balanced
        meta = cell["metadata"].get("nbgrader")
        if not marked:
            # nbgrader would replace a whole solution cell without markers by a stub
            assert not (meta or {}).get("solution"), f"{path.name}, cell {index}: no markers"
            continue
        assert meta, f"{path.name}, cell {index}: run tools/mark_solutions.py"
        assert {k: meta.get(k) for k in ("schema_version", "solution", "grade", "locked")} == {
            "schema_version": 3, "solution": True, "grade": False, "locked": False}
        assert re.fullmatch(r"[A-Za-z0-9_-]+", meta["grade_id"]), meta["grade_id"]
        grade_ids.append(meta["grade_id"])
    assert grade_ids, "each lesson has exercises"
    assert len(grade_ids) == len(set(grade_ids)), f"grade_ids repeat in {path.name}: {grade_ids}"
