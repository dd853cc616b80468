"""Re-run lessons in place so their stored outputs are fresh (for maintainers).

    .venv/bin/python tools/execute_lessons.py                 # every lesson
    .venv/bin/python tools/execute_lessons.py lessons/00_welcome.ipynb

Outputs are what readers see on GitHub, so they must come from a real run.
Widget state is not stored (it goes stale and bloats the file); execution
counts and outputs are kept. Fails if a lesson raises an error.

GitHub cannot draw plotly's interactive figures, so each one also gets a static
PNG beside it (JupyterLab still shows the interactive one). That needs the
``dev`` extra (``pip install -e .[dev]``: kaleido) and a Chrome or Chromium;
without them the PNGs are skipped with a note.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
PLOTLY = "application/vnd.plotly.v1+json"


def add_static_images(nb) -> int:
    """Add an image/png beside every plotly figure output; return how many."""
    try:
        import kaleido  # noqa: F401
        import plotly.graph_objects as go
        import plotly.io as pio
    except ImportError:
        print("  (kaleido is not installed: no static images; pip install -e .[dev])")
        return 0
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            spec = output.get("data", {}).get(PLOTLY)
            if spec:
                figure = go.Figure(data=spec.get("data"), layout=spec.get("layout"))
                png = pio.to_image(figure, format="png")
                output["data"]["image/png"] = base64.b64encode(png).decode()
                count += 1
    return count


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    images = add_static_images(nb)
    nbformat.write(nb, path)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e3:.0f} kB, "
          f"{images} static figure image(s)")


def main(argv: list[str]) -> int:
    paths = [Path(p).resolve() for p in argv] or sorted((ROOT / "lessons").glob("[0-9]*.ipynb"))
    for path in paths:
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
