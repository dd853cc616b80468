"""transferkit: the library behind a course on pre-training and fine-tuning.

The folders are the layers, lowest first; a module imports only from its own folder's
lower modules and from the folders below it (``lint-imports`` checks it):

=================  =========================================================================
1. foundations     data, devices and processes, train/eval modes, gradient descent, schedules,
                   metrics, paired verdicts, tables, file integrity
2. surgery         heads, layer groups, freezing and BatchNorm, LoRA, a cached frozen bottom
3. training        the loop (``fit`` / ``evaluate`` / ``predict``), callbacks, optimizers,
                   checkpoints
4. methods         fine-tuning strategies, autoencoders, label-budget studies, selection
4. vision, text    the two domains: backbones, ImageNet weights and predictions, the
                   layer-copying experiment; review snippets, a pre-trained transformer,
                   text methods and fine-tuning
5. course          plots, widgets, self-checks, student versions, workspace, doctor, magics,
                   the command line
=================  =========================================================================

Import a name from the module that defines it, e.g. ``from transferkit.training.loop
import fit``. Everything below the course never imports plotly or ipywidgets.
``import transferkit`` is light: each folder and module (and torch, plotly, ipywidgets,
torchvision, transformers behind them) is imported the first time you use it. In a
notebook, ``%load_ext transferkit`` adds ``%transferkit_doctor`` and ``%transferkit_seed``.
"""

from __future__ import annotations

import importlib
import pkgutil

__version__ = "0.1.0"

# The folders (layers): found on disk, never listed by hand.
_SUBPACKAGES = frozenset(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBPACKAGES)


def load_ipython_extension(ipython) -> None:
    """``%load_ext transferkit``: register the course's magics."""
    from transferkit.course.magics import load_ipython_extension as _load  # keeps it light

    _load(ipython)
