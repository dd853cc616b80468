"""transferkit: the library behind a course on pre-training and fine-tuning.

One concept per module, each readable top to bottom, in five layers; a module
imports only from the layers below it (``lint-imports`` checks it):

=================  ==========================================================================
the course         ``plots`` (pure figure builders), ``widgets`` (one module per lesson's
                   controls), ``checks`` (self-checks), ``student``, ``workspace``,
                   ``doctor``, ``magics``, ``cli``
methods            ``strategies`` (what each fine-tuning strategy trains, stage by stage),
                   ``finetune`` (running them, feature caching), ``autoencoder`` and
                   ``encoder``, ``models`` (torchvision backbones), ``experiments``
                   (label-budget studies), ``transferability``, ``selection``, ``text``
                   (a pre-trained transformer: verified loading, ``encode``, ``zero_shot``),
                   ``model_files`` (what is checked in a model's files before they are read),
                   ``cached_bottom`` (partial fine-tuning, the frozen bottom computed once)
training           ``train`` (``fit`` / ``evaluate`` / ``predict``), ``callbacks``
                   (``History``, ``Callback``, ``EarlyStopping``), ``checkpoint``,
                   ``preflight`` (one small batch before training: clear errors)
model surgery      ``heads`` (``Classifier``, ``replace_head``), ``layers``
                   (``layer_groups``), ``freezing`` (``freeze``, BatchNorm policy,
                   ``param_groups``, ``trainable_report``), ``lora`` (low-rank updates),
                   ``small_images`` (a new first layer for 8×8 to 32×32 inputs)
foundations        ``device``, ``precision`` (mixed precision on CUDA), ``distributed``
                   (what ``fit`` does under ``torchrun``),
                   ``modes``, ``data``, ``gd``, ``schedules``, ``stats`` (paired comparisons),
                   ``text_data`` (the review snippets), ``metrics`` (accuracy, per-class
                   recall, macro-F1), ``integrity`` (file hashes checked or refused,
                   weight fingerprints, a tensor cache)
=================  ==========================================================================

The core (everything below the course) never imports plotly or ipywidgets.
``import transferkit`` is light: each submodule (and torch, plotly, ipywidgets,
torchvision, transformers behind it) is imported the first time you use it. In a notebook,
``%load_ext transferkit`` adds ``%transferkit_doctor`` and ``%transferkit_seed``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "attention", "autoencoder", "cached_bottom", "callbacks", "checkpoint", "checks", "cli",
    "data", "device", "distributed", "doctor", "encoder", "experiments", "finetune", "freezing",
    "gd", "heads", "integrity", "layers", "lora", "magics", "metrics", "model_files", "models",
    "modes", "optimizers", "plots", "precision", "preflight", "schedules", "selection",
    "small_images", "stats", "strategies", "student", "tables",
    "text", "text_checks", "text_data", "text_finetune", "text_grid", "text_methods", "train",
    "transferability", "widgets", "workspace",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)


def load_ipython_extension(ipython) -> None:
    """``%load_ext transferkit``: register the course's magics."""
    from .magics import load_ipython_extension as _load  # keeps `import transferkit` light

    _load(ipython)
