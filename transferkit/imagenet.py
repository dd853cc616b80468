"""First, use it as is: what does a pre-trained ImageNet network see in a photo?

Before any fine-tuning, a network pre-trained on ImageNet is already a
classifier for ImageNet's 1,000 categories. `predict_top` asks it, as Keras'
``decode_predictions`` does: the model's own preprocessing
(``model.backbone_info.preprocess``), a forward pass, a softmax, and the ``k``
most likely category names (``model.backbone_info.categories``) with their
probabilities::

    model = backbone("efficientnet_lite0", weights="DEFAULT")   # installed, offline
    predict_top(model, "coffee.jpg")
    # [[Guess(category='espresso', probability=0.9...), Guess(...), Guess(...)]]

An image can be a file path, a PIL image, a numpy array (H, W) or (H, W, 3)
(uint8 0–255, or floats in [0, 1]), or a tensor (C, H, W) (uint8, or floats in
[0, 1]); pass one image or a list of them. The answer is one list of guesses per
image. A network only knows its 1,000 categories and the kind of photos it was
trained on: a photo of something else still gets 1,000 probabilities that sum to one.

Then, the question of this course: do ImageNet features help on *our* task?
`features_vs_pixels` measures it on the 8×8 digits: logistic regression on the
frozen network's features (`frozen_features` of `digit_photos`: the digits as
dark ink on light paper, enlarged, grey repeated to RGB) against logistic
regression on the 64 pixels, with the same labelled draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import Data, Splits
from .device import model_device
from .efficientnet_lite import TFLitePreprocess, centre_square
from .experiments import label_budget_study, logistic_regression
from .finetune import extract_features
from .heads import without_head
from .modes import eval_mode


class Guess(NamedTuple):
    """One of a network's top guesses for an image."""

    category: str
    probability: float


def image_tensor(image: Any) -> torch.Tensor:
    """Any supported image as an RGB uint8 tensor (3, H, W), or floats in [0, 1] kept as floats.

    File paths and PIL images are read as RGB; grey images (one channel) are
    repeated to three; an alpha channel is dropped.
    """
    if isinstance(image, (str, Path)):
        from PIL import Image  # Pillow comes with torchvision; only for images from files

        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        with Image.open(path) as img:
            image = img.convert("RGB")
    if type(image).__module__.startswith("PIL."):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4):  # (H, W, C) -> (C, H, W)
            image = image.transpose(2, 0, 1)
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"an image must be a file path, a PIL image, a numpy array or a tensor, "
                        f"not {type(image).__name__}.")
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"an image tensor must be (C, H, W) with 1, 3 or 4 channels (or a grey "
                         f"(H, W) array); got shape {tuple(image.shape)}.")
    image = image[:3] if image.shape[0] == 4 else image.expand(3, -1, -1)
    if image.dtype == torch.uint8:
        return image.contiguous()
    image = image.float()
    if image.min() < 0 or image.max() > 1:
        raise ValueError("a float image must hold values in [0, 1] (or pass uint8 values "
                         f"0-255); got {image.min().item():.3g} to {image.max().item():.3g}.")
    return image.contiguous()


def _categories(model: nn.Module) -> list[str]:
    info = getattr(model, "backbone_info", None)
    categories = getattr(info, "categories", None)
    if not categories:
        raise ValueError(
            "this model has no category list, so its outputs have no names. predict_top needs "
            "a network with ImageNet weights and its ImageNet head, e.g. "
            "backbone('efficientnet_lite0', weights='DEFAULT') or backbone('resnet18', "
            "weights='DEFAULT'); random weights, a file, or a new head (num_classes=...) have "
            "no names."
        )
    return list(categories)


def predict_top(model: nn.Module, images: Any, k: int = 3) -> list[list[Guess]]:
    """The ``k`` most likely categories, with probabilities, for each image.

    ``model`` is a `transferkit.models.backbone` with ImageNet weights (its
    ``backbone_info`` gives the preprocessing and the category names). ``images``
    is one image or a list of them (see `image_tensor`). Returns one list of
    `Guess` (category, probability) per image, most likely first.
    """
    categories = _categories(model)
    if not isinstance(k, int) or not 1 <= k <= len(categories):
        raise ValueError(f"k must be an integer from 1 to {len(categories)}, got {k!r}.")
    many = isinstance(images, (list, tuple))
    prepare = model.backbone_info.preprocess
    batch = torch.stack([prepare(image_tensor(image)) for image in (images if many else [images])])
    with eval_mode(model), torch.no_grad():
        logits = model(batch.to(model_device(model)))
    if logits.shape[-1] != len(categories):
        raise ValueError(f"the model has {logits.shape[-1]} outputs but {len(categories)} "
                         "category names; was its head replaced?")
    probabilities = logits.float().softmax(dim=-1).cpu()
    top = probabilities.topk(k, dim=-1)
    return [[Guess(categories[i], float(p)) for p, i in zip(ps.tolist(), ids.tolist(), strict=True)]
            for ps, ids in zip(top.values, top.indices, strict=True)]


def top_label(guesses: list[Guess], sep: str = ", ") -> str:
    """The guesses as text (``sep="<br>"``: one per line, for a figure's caption).

    >>> top_label([Guess("espresso", 0.9412), Guess("cup", 0.0153)])
    'espresso 0.94, cup 0.02'
    """
    return sep.join(f"{g.category} {g.probability:.2f}" for g in guesses)


def thumbnails(images: list[Any], size: int = 128) -> torch.Tensor:
    """The centre squares of ``images`` (what the network looks at), ``size`` pixels a
    side, as one batch (N, 3, size, size) of floats in [0, 1], ready to draw."""
    out = []
    for image in images:
        pixels = image_tensor(image)
        pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels
        out.append(centre_square(pixels[None], size)[0].clamp(0, 1))
    return torch.stack(out)


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
    """The model's own pixel scaling, without its resize and crop (``images`` keep their size)."""
    prepare = model.backbone_info.preprocess
    if isinstance(prepare, TFLitePreprocess):
        return (images * 255 - 127) / 128
    mean, std = getattr(prepare, "mean", None), getattr(prepare, "std", None)
    if mean is None or std is None:
        raise ValueError(f"cannot tell how {type(prepare).__name__} scales pixels; pass images "
                         "already scaled to frozen_features(..., normalise=False).")
    return (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


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
    and `transferkit.experiments.logistic_regression` from the pixels, on the
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


__all__ = ["Guess", "digit_photos", "features_vs_pixels", "frozen_features", "image_tensor",
           "predict_top", "standardised_logistic_regression", "thumbnails", "top_label"]
