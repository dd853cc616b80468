"""IPython magics, loaded with ``%load_ext transferkit``.

* ``%transferkit_doctor`` prints the environment report (as ``transferkit doctor``).
* ``%transferkit_seed 42`` seeds Python, NumPy and PyTorch for a repeatable run.
"""

from __future__ import annotations

from transferkit.course.doctor import format_report
from transferkit.foundations.device import seed_everything


def transferkit_doctor(line: str = "") -> None:
    """Print versions, the training device, threads and whether widgets render."""
    print(format_report())


def transferkit_seed(line: str = "") -> None:
    """Seed every random number generator: ``%transferkit_seed 42``."""
    text = line.strip()
    if not text.isdigit():
        print(f"usage: %transferkit_seed N   (N a non-negative integer, got {text!r})")
        return
    print(f"seeded Python, NumPy and PyTorch with {seed_everything(int(text))}")


def load_ipython_extension(ipython) -> None:
    ipython.register_magic_function(transferkit_doctor, "line", "transferkit_doctor")
    ipython.register_magic_function(transferkit_seed, "line", "transferkit_seed")
