"""The library's shape: layers that import only from below, a core without plotting
code, no private names across modules, modules a learner can read in a sitting."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "transferkit"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 520  # "about 500 lines at most": one concept per module

# The layers are the package's folders, lowest first (README, "Architecture").
LAYERS = ["foundations", "surgery", "training", "methods", "vision", "text", "course"]
# Everything below the course layer, found on disk (a new module is in it at once).
CORE = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
              for p in PACKAGE.rglob("*.py")
              if p.relative_to(PACKAGE).parts[0] in LAYERS[:-1] and p.name != "__init__.py")


def contracts() -> list[dict]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]


def test_the_folders_are_the_layers_and_every_folder_has_its_own_order():
    """The tree shows the layers: each folder is one, the top contract orders them, and
    each folder's own contract lists all of its modules (``exhaustive``), so a new module
    cannot sit outside the order."""
    folders = sorted(p.name for p in PACKAGE.iterdir()
                     if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted(LAYERS)
    top = next(c for c in contracts() if c["type"] == "layers" and "containers" not in c)
    named = [part.strip().removeprefix("transferkit.") for layer in top["layers"]
             for part in re.split(r"[|:]", layer)]
    assert sorted(named) == sorted(LAYERS)
    inner = {c["containers"][0].removeprefix("transferkit."): c for c in contracts()
             if "containers" in c}
    for folder in LAYERS:
        if folder == "course":
            continue  # plots/ and widgets/ above checks; one contract says so
        assert inner[folder].get("exhaustive") is True, folder
    forbidden = next(c for c in contracts() if c["type"] == "forbidden")
    assert sorted(m.removeprefix("transferkit.") for m in forbidden["source_modules"]) == \
        sorted(LAYERS[:-1])


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def run_fresh(code: str) -> None:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it must succeed."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def run_lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test tools (pip install -e .[test]).")
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd), "HOME": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_lint_imports_keeps_every_contract():
    result = run_lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The contract is not decoration: train importing plots (as it once did) fails it."""
    shutil.copytree(PACKAGE, tmp_path / "transferkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    train = tmp_path / "transferkit" / "training" / "loop.py"
    train.write_text(train.read_text() + "\n\ndef _draw(history):\n"
                     "    from transferkit.course.plots import history_figure\n\n"
                     "    return history_figure(history)\n")
    result = run_lint_imports(tmp_path)
    assert result.returncode != 0
    assert "transferkit.training.loop -> transferkit.course.plots" in result.stdout


def test_the_core_imports_neither_plotly_nor_ipywidgets():
    """One fresh interpreter imports the core modules one by one; after each, neither
    plotly nor ipywidgets may be loaded (so the first one that pulls them in is named)."""
    code = ("import importlib, sys\n"
            f"for name in {CORE!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = [m for m in ('plotly', 'ipywidgets') if m in sys.modules]\n"
            "    assert not bad, f'{name} imports {bad}'\n")
    run_fresh(code)
    assert "transferkit.methods.finetune" in CORE  # the issue's own check is among them


def test_every_module_reads_in_a_sitting():
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these modules (one concept each, about 500 lines): {long}"


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node, tree


def test_no_private_name_crosses_a_module_border():
    crossing = []
    for path in modules():
        for node, _ in _imports(path):
            internal = node.level > 0 or (node.module or "").startswith("transferkit")
            for alias in node.names:
                if internal and alias.name.startswith("_") and alias.name != "__version__":
                    crossing.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}")
    assert not crossing, crossing


def test_transferkit_modules_are_imported_at_the_top_not_inside_functions():
    """Function-level imports once dodged an import circle; only heavy optional
    dependencies (torchvision, scikit-learn) may still load on first use."""
    inside = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                is_ours = isinstance(node, ast.ImportFrom) and (
                    node.level > 0 or (node.module or "").startswith("transferkit"))
                lazy_magics = path.name == "__init__.py" and path.parent == PACKAGE
                if is_ours and not lazy_magics:
                    inside.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not inside, inside


def test_every_folder_is_reachable_from_a_light_import_transferkit():
    """``transferkit.<folder>`` works for every folder on disk (none listed by hand, so none
    can be forgotten, as ``transferkit.imagenet`` once was), without importing torch first."""
    code = ("import sys, transferkit\n"
            "assert 'torch' not in sys.modules, 'import transferkit loaded torch'\n"
            f"for name in {LAYERS!r}:\n"
            "    assert name in dir(transferkit), name\n"
            "    assert getattr(transferkit, name).__name__ == 'transferkit.' + name\n"
            "try:\n"
            "    transferkit.imagenet\n"
            "except AttributeError as err:\n"
            "    assert 'imagenet' in str(err)\n"
            "else:\n"
            "    raise AssertionError('an unknown name must be an AttributeError')\n")
    run_fresh(code)


# The course's two packages of figures and controls: one import path per lesson's figures
# (``from transferkit.course.plots import image_grid``), the only places that gather names.
GATHERING = {PACKAGE / "course" / "plots" / "__init__.py",
             PACKAGE / "course" / "widgets" / "__init__.py"}


def test_no_facades_every_name_is_imported_from_where_it_is_defined():
    """A folder's ``__init__`` is its docstring alone, and a module's ``__all__`` lists only
    names it defines itself: ``finetune`` once re-exported 22 names of three modules, so
    lessons imported ``freeze`` from two places."""
    for folder in LAYERS:
        tree = ast.parse((PACKAGE / folder / "__init__.py").read_text(encoding="utf-8"))
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), folder
    passed_on = []
    for path in modules():
        if path in GATHERING:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.asname or alias.name for node, _ in _imports(path)
                    if (node.module or "").startswith("transferkit") for alias in node.names}
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                names = {elt.value for elt in node.value.elts}
                passed_on += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(names & imported)]
    assert not passed_on, f"import these from the module that defines them: {passed_on}"
