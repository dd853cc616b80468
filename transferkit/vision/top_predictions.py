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
(Whether its features help on *our* task is a transfer study:
`transferkit.vision.transfer_studies.features_vs_pixels`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from transferkit.foundations.device import model_device
from transferkit.foundations.train_eval import eval_mode
from transferkit.vision.efficientnet_lite import centre_square


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

    ``model`` is a `transferkit.vision.backbones.backbone` with ImageNet weights (its
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


__all__ = ["Guess", "image_tensor", "predict_top", "thumbnails", "top_label"]
