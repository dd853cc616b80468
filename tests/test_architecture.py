"""The library's shape: layers that import only from below, a core without plotting
code, no private names across modules, modules a learner can read in a sitting."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "transferkit"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 520  # "about 500 lines at most": one concept per module

# Everything below the course layer (README, "Architecture").
CORE = ["attention", "autoencoder", "cached_bottom", "callbacks", "checkpoint", "data", "device",
        "distributed", "efficientnet_lite", "encoder", "experiments", "finetune", "freezing", "gd",
        "heads", "imagenet", "integrity", "layers", "lora", "metrics", "model_files", "models",
        "modes", "optimizers", "precision", "preflight", "schedules", "selection",
        "small_images", "stats", "strategies", "tables", "text", "text_data",
        "text_finetune", "text_grid", "text_methods", "train", "transferability"]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


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
    train = tmp_path / "transferkit" / "train.py"
    train.write_text(train.read_text() + "\n\ndef _draw(history):\n"
                     "    from .plots import history_figure\n\n"
                     "    return history_figure(history)\n")
    result = run_lint_imports(tmp_path)
    assert result.returncode != 0
    assert "transferkit.train -> transferkit.plots" in result.stdout


def test_the_core_imports_neither_plotly_nor_ipywidgets():
    """One fresh interpreter imports the core modules one by one; after each, neither
    plotly nor ipywidgets may be loaded (so the first one that pulls them in is named)."""
    code = ("import importlib, sys\n"
            f"for name in {CORE!r}:\n"
            "    importlib.import_module('transferkit.' + name)\n"
            "    bad = [m for m in ('plotly', 'ipywidgets') if m in sys.modules]\n"
            "    assert not bad, f'transferkit.{name} imports {bad}'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "finetune" in CORE  # the issue's own check is among them


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
