"""transferkit: the library behind a course on pre-training and fine-tuning.

One concept per module, each readable top to bottom:

========================  ==========================================================
``transferkit.device``    ``pick_device()``, ``seed_everything(seed)``
``transferkit.gd``        objectives, ``descend`` (= ``torch.optim.SGD``), ``adam``,
                          stability limits and optimal steps on a quadratic
``transferkit.data``      ``load_digits()``, ``few_labels``, ``split_classes``, splits,
                          MNIST / Fashion-MNIST / CIFAR-10 from local files
``transferkit.train``     ``fit(...) -> History``, ``evaluate``, ``predict``, early stopping
``transferkit.checkpoint``  ``save_checkpoint`` / ``load_checkpoint`` (safe, atomic)
``transferkit.experiments``  ``label_budget_study`` over budgets and seeds, ``summarise``,
                          the ``logistic_regression`` baseline
``transferkit.autoencoder``  ``Autoencoder``, ``ConvAutoencoder``, ``pretrain``, ``PCA``,
                          ``reconstruction_error``, ``save_encoder`` / ``load_encoder``
``transferkit.finetune``  ``Classifier``, ``replace_head``, ``layer_groups``, ``freeze`` /
                          ``unfreeze`` / ``freeze_to``, ``param_groups``,
                          ``trainable_report``, ``extract_features``, ``fine_tune``
``transferkit.schedules``  learning-rate schedules: ``constant``, ``step_decay``, ``cosine``,
                          ``one_cycle``, ``slanted_triangular`` (``fit(..., schedule=...)``)
``transferkit.models``    ``backbone(name, weights=...)``: torchvision networks with random,
                          downloaded or local-file weights; small-image adaptation
``transferkit.transferability``  copy the first n layers, frozen or fine-tuned: the
                          ``transferability_study`` of Yosinski et al. (2014)
``transferkit.plots``     pure figure builders (data in, plotly figure out)
``transferkit.widgets``   ipywidgets controls wired to ``plots``
``transferkit.checks``    self-checks for the lessons' exercises
``transferkit.doctor``    the environment report
``transferkit.student``   ``student_notebook``, ``write_student_versions``: the lessons
                          without their answers, for instructors to hand out
========================  ==========================================================

``import transferkit`` is light: each submodule (and torch, plotly, ipywidgets,
torchvision behind it) is imported the first time you use it. In a notebook,
``%load_ext transferkit`` adds ``%transferkit_doctor`` and ``%transferkit_seed``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "autoencoder", "checkpoint", "checks", "cli", "data", "device", "doctor", "experiments",
    "finetune", "schedules",
    "gd", "magics", "models", "transferability", "plots", "train", "widgets", "workspace",
    "student",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)


def load_ipython_extension(ipython) -> None:
    """``%load_ext transferkit``: register the course's magics."""
    from .magics import load_ipython_extension as _load

    _load(ipython)
