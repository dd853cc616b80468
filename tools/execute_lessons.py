"""Re-run lessons in place so their stored outputs are fresh (for maintainers).

    .venv/bin/python tools/execute_lessons.py                 # every lesson
    .venv/bin/python tools/execute_lessons.py lessons/00_welcome.ipynb

Outputs are what readers see on GitHub, so they must come from a real run.
Widget state is not stored (it goes stale and bloats the file); execution
counts and outputs are kept. Fails if a lesson raises an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e3:.0f} kB")


def main(argv: list[str]) -> int:
    paths = [Path(p).resolve() for p in argv] or sorted((ROOT / "lessons").glob("[0-9]*.ipynb"))
    for path in paths:
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
