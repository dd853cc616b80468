"""How transferable are features? Two studies: copying layers, and ImageNet features.

**Copying layers**, the experiment of Yosinski et al. (2014).

Train a network A on a *source* task. For a *target* task, build a new network
of the same shape, copy A's first ``n`` layer groups into it, and train the rest
on the target:

* **frozen** (the paper's AnB): the copied layers stay as they are (their
  BatchNorm statistics too); only the layers above them learn;
* **fine-tuned** (AnB⁺): the copied layers are only the starting point; every
  layer learns.

``n = 0`` copies nothing: the *target-only* baseline (the paper's BaseB). Plot
target accuracy against ``n`` and you see how general each layer is. The paper
(ImageNet, two halves of the classes) found frozen transfer losing accuracy as
``n`` grows, because higher layers are specific to the source classes (and, in
the middle, because layers that were trained together co-adapt), while
fine-tuned transfer never fell below the baseline and even beat it.

>>> import torch
>>> from torch import nn
>>> source = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))
>>> target = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 3))
>>> _ = copy_first_groups(source, target, 1, frozen=True)
>>> torch.equal(target[0].weight, source[0].weight), target[0].weight.requires_grad
(True, False)

`transferability_study` runs the whole grid (depths × frozen / fine-tuned ×
label budgets × seeds) through `transferkit.methods.label_budget.label_budget_study`,
and `summarise_transfer` turns it into one row per (mode, n, budget).

**ImageNet features on the course's digits.** Do features learnt on photos help
on 8×8 digits? `features_vs_pixels` measures it: logistic regression on a frozen
ImageNet network's features (`frozen_features` of `digit_photos`: the digits as
dark ink on light paper, enlarged, grey repeated to RGB) against logistic
regression on the 64 pixels, with the same labelled draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from transferkit.foundations.data import Data, Splits
from transferkit.foundations.device import seeded
from transferkit.methods.finetune import extract_features
from transferkit.methods.label_budget import label_budget_study, logistic_regression, summarise
from transferkit.surgery.freezing import freeze
from transferkit.surgery.heads import without_head
from transferkit.surgery.layer_groups import layer_groups
from transferkit.training.loop import epochs_for_steps, fit

MODES = ("frozen", "fine-tuned")
BASELINE = "target only"


def _groups_below_head(model: nn.Module) -> list:
    return layer_groups(model)[:-1]  # the head belongs to its task: it is never copied


def max_depth(model: nn.Module) -> int:
    """How many layer groups sit below the head: the largest ``n`` that can be copied."""
    return len(_groups_below_head(model))


def copy_first_groups(source: nn.Module, target: nn.Module, n: int, *,
                      frozen: bool) -> nn.Module:
    """Copy the weights (and BatchNorm statistics) of ``source``'s first ``n`` layer
    groups into ``target``, which has the same layers below the head; with
    ``frozen=True`` freeze them, BatchNorm statistics included (``bn="freeze"``).
    Returns ``target``."""
    have, want = _groups_below_head(source), _groups_below_head(target)
    if [[name for name, _ in g.modules] for g in have] != [[name for name, _ in g.modules]
                                                             for g in want]:
        raise ValueError("source and target must have the same layers below the head; build "
                         "both with the same function (only the head's size may differ).")
    if not isinstance(n, int) or not 0 <= n <= len(have):
        raise ValueError(f"n must be an integer from 0 to {len(have)} (the layer groups below "
                         f"the head: {', '.join(g.name for g in have)}), got {n!r}.")
    for mine, theirs in zip(want[:n], have[:n], strict=True):
        for (_, module), (_, original) in zip(mine.modules, theirs.modules, strict=True):
            module.load_state_dict(original.state_dict())
    if frozen and n:
        freeze(target, slice(0, n), bn="freeze")
    return target


def transfer_method(source: nn.Module, make_model: Callable[[], nn.Module], n: int,
                    mode: str = "frozen", *, steps: int = 150, batch_size: int = 64,
                    **fit_options: Any) -> Callable[[Data, Any, int], nn.Module]:
    """A `transferkit.methods.label_budget` study method: a fresh ``make_model()``, the first
    ``n`` groups copied from ``source`` (`copy_first_groups`), then ``steps``
    optimizer steps of `transferkit.training.loop.fit` on the labelled target examples.
    ``fit_options`` go to `fit` (``lr``, ``optimizer`` …)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")

    source_parameters = {id(p) for p in source.parameters()}

    def method(train: Data, val: Any, seed: int) -> nn.Module:
        with seeded(seed):  # the same new layers for a seed; your RNG is left alone
            model = make_model()
            if any(id(p) in source_parameters for p in model.parameters()):
                raise ValueError("make_model() returned a network that shares weights with "
                                 "the source network, so training it would change the source. "
                                 "Build a new one each time, e.g. lambda: small_cnn(5).")
            copy_first_groups(source, model, n, frozen=mode == "frozen")
            epochs = epochs_for_steps(len(train), batch_size, steps)
            fit(model, train, epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
                **fit_options)
        return model

    method.__name__ = f"{mode} {n}"
    return method


def study_methods(source: nn.Module, make_model: Callable[[], nn.Module],
                  depths: Iterable[int] | None = None, modes: Sequence[str] = MODES,
                  **options: Any) -> dict[str, Callable]:
    """The methods of the grid, named ``"target only"``, ``"frozen 1"``,
    ``"fine-tuned 1"`` …; ``depths`` default to 1 … `max_depth`."""
    depths = range(1, max_depth(source) + 1) if depths is None else depths
    methods = {BASELINE: transfer_method(source, make_model, 0, "fine-tuned", **options)}
    for n in depths:
        if n == 0:
            continue  # n = 0 is the baseline, whatever the mode
        for mode in modes:
            methods[f"{mode} {n}"] = transfer_method(source, make_model, n, mode, **options)
    return methods


def parse_method(name: str) -> tuple[str, int]:
    """``"frozen 3"`` → ("frozen", 3); ``"target only"`` → ("target only", 0)."""
    if name == BASELINE:
        return BASELINE, 0
    mode, _, n = name.rpartition(" ")
    if mode not in MODES or not n.isdigit():
        raise ValueError(f"{name!r} is not a transferability method ('frozen 2', "
                         "'fine-tuned 2' or 'target only').")
    return mode, int(n)


def transferability_study(source: nn.Module, make_model: Callable[[], nn.Module], splits,
                          *, depths: Iterable[int] | None = None, modes: Sequence[str] = MODES,
                          budgets: Iterable[int | None] = (10,), seeds: Iterable[int] = (0, 1, 2),
                          progress: bool = True, **options: Any) -> list[dict[str, Any]]:
    """Run the layer-copying grid on the target ``splits`` (train, val, test).

    One trial per (method, budget, seed), as in
    `transferkit.methods.label_budget.label_budget_study` (whose rows these are), with two
    more columns: ``mode`` (frozen, fine-tuned or target only) and ``n``.
    ``options`` go to `transfer_method` (``steps``, ``lr`` …).
    """
    methods = study_methods(source, make_model, depths, modes, **options)
    rows = label_budget_study(methods, splits, budgets=budgets, seeds=seeds, progress=progress)
    for row in rows:
        row["mode"], row["n"] = parse_method(row["method"])
    return rows


def summarise_transfer(rows: Sequence[dict[str, Any]],
                       metric: str = "test_accuracy") -> list[dict[str, Any]]:
    """`transferkit.methods.label_budget.summarise`'s rows (``mean``, ``std`` … over seeds),
    one per (method, budget), with the method read as ``mode`` and ``n`` (layers
    copied); the number of seeds is ``n_seeds``. The baseline appears once per
    budget, with mode "target only" and n = 0."""
    if not rows:
        raise ValueError("no rows to summarise; run transferability_study first.")
    summary = []
    for row in summarise(rows, metric):
        mode, depth = parse_method(row["method"])
        summary.append({**row, "n_seeds": row["n"], "mode": mode, "n": depth})
    return summary


# --- ImageNet features on the course's digits ------------------------------------------------


def digit_photos(x: torch.Tensor, size: int = 64) -> torch.Tensor:
    """8×8 digits (N, 1, 8, 8), pixels in [0, 1], as an ImageNet network would like
    them: dark ink on light paper (``1 − x``), enlarged to ``size`` pixels, grey
    repeated to RGB. Returns (N, 3, size, size) floats in [0, 1]."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"digit_photos takes grey images (N, 1, H, W); got {tuple(x.shape)}.")
    paper = 1 - x.float()
    big = F.interpolate(paper, size=(size, size), mode="bilinear", align_corners=False)
    return big.clamp(0, 1).expand(-1, 3, -1, -1)


def _normalise(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's own pixel scaling, without its resize and crop (``images`` keep their size):
    its weights' record's (`transferkit.vision.backbones.PretrainedWeights.normalise`)."""
    info = model.backbone_info
    if info.normalise is None:
        raise ValueError(f"cannot tell how {type(info.preprocess).__name__} scales pixels; pass "
                         "images already scaled to frozen_features(..., normalise=False).")
    return info.normalise(images)


def frozen_features(model: nn.Module, images: torch.Tensor, *, normalise: bool = True,
                    batch_size: int = 64) -> torch.Tensor:
    """What the frozen network computes just below its head (for EfficientNet-Lite0:
    1,280 numbers per image, its global average pool), cached (`extract_features`)."""
    inputs = _normalise(model, images) if normalise else images
    with without_head(model):
        return extract_features(model, inputs, batch_size=batch_size)


def standardised_logistic_regression(train: Data, val: Data | None = None, seed: int = 0):
    """Logistic regression on standardised inputs (each feature: mean 0, variance 1 on the
    labelled examples), as scikit-learn's pipeline; a study method."""
    from sklearn.linear_model import LogisticRegression  # heavy; only for this study
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = train.x.reshape(len(train.x), -1).numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    return model.fit(x, train.y.numpy())


def features_vs_pixels(model: nn.Module, splits: Splits, *, budgets=(1, 3, 10, None),
                       seeds=(0, 1, 2), size: int = 64, progress: bool = False
                       ) -> list[dict[str, Any]]:
    """Frozen ImageNet features against raw pixels on digits, at each label budget and seed.

    ``splits`` holds 8×8 digit images (N, 1, 8, 8). The network sees every image
    once (`digit_photos` at ``size`` pixels, `frozen_features`); then, for each
    budget and seed, `standardised_logistic_regression` learns from the features
    and `transferkit.methods.label_budget.logistic_regression` from the pixels, on the
    same labelled examples. Returns `label_budget_study` rows for both methods (the
    feature rows carry the pixel sets' fingerprints: they hold the same images).
    """
    method = f"ImageNet features, {size} px"
    features = Splits(*[Data(frozen_features(model, digit_photos(d.x, size)), d.y)
                        for d in splits])
    rows = label_budget_study({"logistic regression (pixels)": logistic_regression}, splits,
                              budgets=budgets, seeds=seeds, progress=progress)
    feature_rows = label_budget_study({method: standardised_logistic_regression}, features,
                                      budgets=budgets, seeds=seeds, progress=progress)
    same_images = {k: v for k, v in rows[0].items() if k.endswith("_fingerprint")}
    for row in feature_rows:  # the same digits, shown as features: comparable image by image
        row.update(same_images)
    return rows + feature_rows


__all__ = ["BASELINE", "MODES", "copy_first_groups", "digit_photos", "features_vs_pixels",
           "frozen_features", "max_depth", "parse_method", "standardised_logistic_regression",
           "study_methods", "summarise_transfer", "transfer_method", "transferability_study"]
