"""Pre-trained backbones from torchvision, online or offline.

The source articles load a pre-trained network with ``resnet50(pretrained=True)``.
torchvision replaced ``pretrained=True`` with ``weights=``, and a course that
runs offline needs a third way to get weights: a file. `backbone` gives all
three behind one call::

    backbone("resnet18")                                   # random weights
    backbone("resnet18", weights="DEFAULT")                # ImageNet weights (download)
    backbone("resnet18", weights="IMAGENET1K_V1")          # a named set of weights
    backbone("resnet18", weights="artifacts/source.pt")    # weights from a file

Weights that must be downloaded are looked for in torch's cache first
(``torch.hub.get_dir()/checkpoints``); only if they are not there is the network
tried. Offline, the call fails at once with `WeightsUnavailableError`, which
says which file is needed, where to put it, and how to pass it instead.

Every model comes with the preprocessing its weights expect, as
``model.backbone_info.preprocess``: for ImageNet weights, the weights' own
transform (resize, centre crop, normalise with ImageNet's mean and std; the
articles write it out by hand with ``transforms.Compose``). ``backbone_info``
also says how the model was built; `save_backbone` stores it with the weights, so that
``backbone(name, weights=path)`` rebuilds the same network from the file.

**Small images.** ImageNet networks shrink their input 32 times (ResNet: a
stride-2 7×7 convolution, then a stride-2 max pool, then three stride-2
stages), so an 8×8 digit would be less than a pixel by the second layer.
``small_images=True`` makes the change explicit (`adapt_to_small_images`): the
first convolution becomes a 3×3 convolution with stride 1 and ResNet's max pool
is removed; ``in_channels`` sets the number of input channels (1 for grey
images). The new first layer starts untrained, even with pre-trained weights;
everything after it keeps its weights. ViT cannot be adapted this way (its
position embeddings are made for 14×14 patches of 16×16 pixels): resize small
images to 224 pixels instead.

Families: ``resnet18``, ``resnet50`` (head ``fc``), ``mobilenet_v3_small``,
``mobilenet_v3_large``, ``efficientnet_b0``, ``convnext_tiny``, ``vgg16``,
``vgg11_bn`` (head ``classifier[-1]``), ``densenet121`` (head ``classifier``)
and ``vit_b_16`` (head ``heads.head``), all from torchvision; and
``efficientnet_lite0`` (timm's architecture, head ``classifier``), whose ImageNet
weights come installed with the course (`transferkit.efficientnet_lite`), so
``backbone("efficientnet_lite0", weights="DEFAULT")`` never needs the network.
The rest of the library (`transferkit.finetune`'s ``replace_head``,
``layer_groups``, ``freeze``, ``extract_features`` …) works on all of them.
ImageNet weights also bring their 1,000 category names
(``backbone_info.categories``): `transferkit.imagenet.predict_top` uses them.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from . import efficientnet_lite
from .checkpoint import (
    CheckpointError,
    check_fits,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .heads import find_head, replace_head, set_submodule

LITE = "efficientnet_lite0"  # timm's architecture, weights from an installed package
FAMILIES = ("resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large",
            "efficientnet_b0", "convnext_tiny", "vgg16", "vgg11_bn", "densenet121", "vit_b_16",
            LITE)
LITE_WEIGHTS = ("DEFAULT", "IMAGENET1K")
LITE_SOURCE = f"{efficientnet_lite.PACKAGE} ({efficientnet_lite.FILENAME}, ImageNet-1k)"
DOWNLOAD_HOST = "download.pytorch.org"
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


class WeightsUnavailableError(RuntimeError):
    """Pre-trained weights were asked for, but they are not here and cannot be downloaded."""


# --- 1. which weights -------------------------------------------------------------------


def _check_family(name: str) -> None:
    if name not in FAMILIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(FAMILIES)}.")


def weights_enum(name: str, weights: Any) -> Any:
    """torchvision's weights object for ``weights`` ("DEFAULT", "IMAGENET1K_V1",
    "ResNet18_Weights.IMAGENET1K_V1" or the object itself) of the family ``name``."""
    from torchvision.models import WeightsEnum, get_model_weights  # heavy: loaded on first use

    _check_family(name)
    if name == LITE:
        raise ValueError(f"{LITE}'s weights are not torchvision's: pass weights='DEFAULT' (the "
                         "installed ImageNet weights), a file, or None.")
    family = get_model_weights(name)
    if isinstance(weights, WeightsEnum):
        if not isinstance(weights, family):
            raise ValueError(f"{weights} are weights for another network; {name} takes "
                             f"{family.__name__}.{{{', '.join(family.__members__)}}}.")
        return weights
    if isinstance(weights, bool):
        raise ValueError("weights must name the weights: torchvision's pretrained=True is now "
                         "weights='DEFAULT'; pretrained=False is weights=None.")
    member = str(weights).removeprefix(f"{family.__name__}.")
    if member == "DEFAULT":
        return family.DEFAULT
    if member in family.__members__:
        return family[member]
    raise ValueError(
        f"{name} has no weights called {weights!r}. Choose one of "
        f"{', '.join(['DEFAULT', *family.__members__])}, give the path of a weights file "
        "(ending in .pt or .pth), or pass weights=None for random weights."
    )


def _is_file(weights: Any) -> bool:
    if isinstance(weights, Path):
        return True
    if not isinstance(weights, str):
        return False
    return ("/" in weights or os.sep in weights or weights.endswith(_FILE_SUFFIXES)
            or Path(weights).expanduser().exists())


def cached_weights_path(weights: Any) -> Path:
    """Where torch keeps the downloaded file of ``weights`` (it may not exist yet)."""
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def online(host: str = DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    """Can this machine open a connection to ``host``? False at once when the
    environment variable ``TRANSFERKIT_OFFLINE`` is set (to anything but 0)."""
    if os.environ.get("TRANSFERKIT_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(name: str, weights: Any, reason: str) -> WeightsUnavailableError:
    target = cached_weights_path(weights)
    return WeightsUnavailableError("\n".join([
        f"{name}: the pre-trained weights {weights} are not on this machine, and {reason}.",
        f"  looked for: {target}",
        "To use them offline, download this file on a machine with internet access:",
        f"  {weights.url}",
        f"then either copy it to {target.parent}/ (it is then found by itself), or pass the "
        f"file: backbone({name!r}, weights='path/to/{target.name}').",
        f"Or start from random weights: backbone({name!r}, weights=None).",
    ]))


def fetch_weights(name: str, weights: Any, progress: bool = True) -> Path:
    """Make sure the file of ``weights`` is in torch's cache: download it if it is
    missing and the network can be reached; otherwise `WeightsUnavailableError`."""
    weights = weights_enum(name, weights)
    path = cached_weights_path(weights)
    if path.is_file():
        return path
    if not online():
        raise _unavailable(name, weights, f"{DOWNLOAD_HOST} cannot be reached (offline)")
    try:  # downloads into the cache and checks the file's hash
        torch.hub.load_state_dict_from_url(weights.url, progress=progress, check_hash=True)
    except (OSError, RuntimeError) as err:  # no connection, a full disk, a wrong hash …
        raise _unavailable(name, weights, f"the download failed ({err})") from None
    return path


# --- 2. small images --------------------------------------------------------------------


def _stem_conv(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, old.out_channels, kernel_size=3, stride=1, padding=1,
                    bias=old.bias is not None)
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


def adapt_to_small_images(model: nn.Module, in_channels: int = 3) -> list[str]:
    """Make an ImageNet network fit small images (8×8 to 32×32); returns what changed.

    * ResNet: ``conv1`` (7×7, stride 2) becomes a 3×3 convolution with stride 1
      and the max pool is removed, as ResNets for CIFAR do.
    * DenseNet: the same for its stem, ``features.conv0`` and ``features.pool0``.
    * MobileNetV3, EfficientNet (torchvision's and timm's Lite0) and ConvNeXt:
      the first convolution (stride 2, or ConvNeXt's 4×4 "patchify" with
      stride 4) becomes a 3×3 convolution with stride 1.
    * VGG: its first convolution is already 3×3 with stride 1 and is kept (for
      ``in_channels=1`` its RGB filters are summed); of its five 2×2 max pools,
      the first two are removed, so an 8×8 image ends as 1×1 after the last
      three (8 → 4 → 2 → 1); its ``avgpool`` repeats that 1×1 map to the 7×7
      its pre-trained classifier was made for.

    A new first layer takes ``in_channels`` channels and is untrained. ViT is
    refused (resize the images to 224 instead).
    """
    from torchvision.models import (  # heavy; only to tell the families apart
        VGG,
        ConvNeXt,
        DenseNet,
        EfficientNet,
        MobileNetV3,
        ResNet,
        VisionTransformer,
    )

    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}.")
    if isinstance(model, VisionTransformer):
        raise ValueError(
            "a ViT cannot be adapted to small images: it cuts the image into 16×16 patches "
            "and has a position embedding for each patch of a 224×224 image. Resize the "
            "images to 224×224 (model.preprocess does) or choose a CNN such as 'resnet18'."
        )
    if isinstance(model, ResNet):
        old = model.conv1
        model.conv1 = _stem_conv(old, in_channels)
        model.maxpool = nn.Identity()
        return [f"conv1: {old} -> {model.conv1} (untrained)", "maxpool: removed"]
    if isinstance(model, DenseNet):
        old = model.features.conv0
        model.features.conv0 = _stem_conv(old, in_channels)
        model.features.pool0 = nn.Identity()
        return [f"features.conv0: {old} -> {model.features.conv0} (untrained)",
                "features.pool0: MaxPool2d(3, stride 2) removed"]
    if isinstance(model, VGG):
        if in_channels == 3:
            changes = [f"features.0: {model.features[0]} kept (already 3×3 with stride 1)"]
        else:
            changes = _set_in_channels(model, in_channels)
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        for i in pools[:2]:
            model.features[i] = nn.Identity()
        return [*changes, f"features.{pools[0]}, features.{pools[1]}: the first two of the "
                "five 2×2 max pools removed (8×8 -> 1×1 after the other three)",
                f"avgpool: {model.avgpool} kept: it repeats a 1×1 map 49 times for the "
                "pre-trained classifier"]
    if isinstance(model, (MobileNetV3, EfficientNet, ConvNeXt)):
        old = model.features[0][0]
        model.features[0][0] = _stem_conv(old, in_channels)
        return [f"features.0.0: {old} -> {model.features[0][0]} (untrained)"]
    if type(model).__module__.startswith("timm.") and hasattr(model, "conv_stem"):
        old = model.conv_stem  # timm's EfficientNet(-Lite): a stride-2 "same"-padded conv
        model.conv_stem = _stem_conv(old, in_channels)
        return [f"conv_stem: {old} -> {model.conv_stem} (untrained)"]
    raise TypeError(f"adapt_to_small_images knows ResNet, DenseNet, VGG, MobileNetV3, "
                    f"EfficientNet and ConvNeXt, not {type(model).__name__}; change its first "
                    "layer by hand.")


def _set_in_channels(model: nn.Module, in_channels: int) -> list[str]:
    """Keep the stem but take ``in_channels`` channels: its pre-trained filters are
    summed over RGB for 1 channel (a grey image is R = G = B), else it is rebuilt."""
    name = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    old = model.get_submodule(name)
    # the same class (timm's "same"-padded Conv2dSame stays one), other input channels
    new = type(old)(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    old.dilation, old.groups, old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    set_submodule(model, name, new)
    kept = "RGB filters summed" if in_channels == 1 else "untrained"
    return [f"{name}: {old} -> {new} ({kept})"]


# --- 3. preprocessing -------------------------------------------------------------------


def preprocess(name: str, weights: Any = None, *, small_images: bool = False) -> nn.Module:
    """The transform a model's inputs need (a module: call it on an image batch).

    With torchvision weights: those weights' transform. Otherwise the family's
    ImageNet transform (what its pre-trained weights expect; for
    ``efficientnet_lite0`` TF-Lite's, `efficientnet_lite.TFLitePreprocess`),
    except for a small-image network, whose inputs are used as they are
    (``nn.Identity``; normalise them the way its source task was trained).
    """
    from torchvision.models import WeightsEnum, get_model_weights  # heavy: loaded on first use

    _check_family(name)
    if small_images:
        return nn.Identity()
    if name == LITE:
        return efficientnet_lite.TFLitePreprocess()
    if not isinstance(weights, WeightsEnum):
        weights = get_model_weights(name).DEFAULT
    return weights.transforms()


# --- 4. the backbone --------------------------------------------------------------------


def _build(name: str, num_classes: int = 1000) -> nn.Module:
    """The family's network with random weights (nothing is downloaded)."""
    if name == LITE:
        return efficientnet_lite.build(num_classes)
    from torchvision.models import get_model  # heavy; only when a network is built

    return get_model(name, weights=None, num_classes=num_classes)


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k category names, in the order of the classifiers' outputs
    (the list torchvision ships with its ImageNet weights)."""
    from torchvision.models import ResNet50_Weights  # heavy; the list lives in its meta

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _adapt(model: nn.Module, small_images: bool, in_channels: int) -> list[str]:
    if small_images:
        return adapt_to_small_images(model, in_channels)
    if in_channels != 3:
        return _set_in_channels(model, in_channels)
    return []


def _saved_options(name: str, ckpt: dict) -> dict[str, Any] | None:
    """The options a `save_backbone` file was built with; None for a plain state dict."""
    saved = (ckpt.get("meta") or {}).get("backbone")
    if saved and saved.get("name") != name:
        raise ValueError(f"the file holds a {saved.get('name')!r} backbone, not {name!r}; "
                         f"call backbone({saved.get('name')!r}, weights=...).")
    return saved or None


def _load_file(name: str, path: Path, small_images: bool, in_channels: int
               ) -> tuple[nn.Module, list[str], bool, int]:
    ckpt = read_checkpoint(path)  # safe loading; a clear error for a missing or bad file
    saved = _saved_options(name, ckpt)
    if saved:  # rebuild the network exactly as it was saved, then load
        small_images, in_channels = bool(saved["small_images"]), int(saved["in_channels"])

    def build() -> tuple[nn.Module, list[str]]:  # as the file says, on the default device
        model = _build(name)
        changes = _adapt(model, small_images, in_channels) if saved else []
        head = find_head(model)
        if f"{head}.weight" in ckpt["model"]:  # the file's head may have another size
            replace_head(model, int(ckpt["model"][f"{head}.weight"].shape[0]))
        return model, changes

    if saved:  # what the file describes, on the "meta" device (no memory), against its weights
        with torch.device("meta"):
            check_fits(path, build()[0], ckpt["model"])
    model, changes = build()
    load_checkpoint(path, model)
    if not saved:  # plain ImageNet-style weights: adapt after loading, as for a download
        changes = _adapt(model, small_images, in_channels)
    return model, changes, small_images, in_channels


@dataclass
class BackboneInfo:
    """How `backbone` built a model (kept as ``model.backbone_info``)."""

    name: str
    weights: str | None  # the torchvision weights, the file, or None (random)
    small_images: bool
    in_channels: int
    changes: list[str]  # what `adapt_to_small_images` changed
    preprocess: Any  # call it on a batch of images before the model (see `preprocess`)
    categories: list[str] | None = None  # the head's class names (ImageNet weights)

    def options(self) -> dict[str, Any]:
        """What `save_backbone` stores to rebuild the network."""
        return {"name": self.name, "small_images": self.small_images,
                "in_channels": self.in_channels}


def backbone(
    name: str,
    weights: Any = None,
    *,
    num_classes: int | None = None,
    small_images: bool = False,
    in_channels: int = 3,
    progress: bool = True,
) -> nn.Module:
    """A pre-trainable network, with random, downloaded, installed or local-file weights.

    Args:
        name: one of `FAMILIES`, e.g. ``"resnet18"``.
        weights: None (random), a torchvision weights name or object (``"DEFAULT"``,
            ``"IMAGENET1K_V1"``, ``ResNet18_Weights.DEFAULT``), or the path of a
            file: a `save_backbone` / `transferkit.checkpoint.save_checkpoint`
            file, or a plain state dict such as torchvision's own download. For
            ``efficientnet_lite0``, ``"DEFAULT"`` (or ``"IMAGENET1K"``) is the
            installed, hash-checked ImageNet file (`transferkit.efficientnet_lite`).
        num_classes: the size of the head. Default: the weights' (1000 for
            ImageNet, the file's own for a file); another number gives a new,
            untrained head (`transferkit.heads.replace_head`).
        small_images: adapt the first layer to small inputs
            (`adapt_to_small_images`) after the weights are loaded. A file saved
            by `save_backbone` records how it was built; that wins.
        in_channels: input channels (1 for grey images).
        progress: show a progress bar while downloading.

    Raises `WeightsUnavailableError` (offline, weights not cached), ValueError for
    an unknown name or weights, `transferkit.checkpoint.CheckpointError` for a
    file that is corrupt or does not fit, FileNotFoundError for a missing file.

    >>> model = backbone("resnet18", num_classes=5, small_images=True, in_channels=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape    # a batch of two 8×8 grey images
    torch.Size([2, 5])
    >>> model.backbone_info.changes[-1]
    'maxpool: removed'
    """
    from torchvision.models import get_model  # heavy: loaded on first use

    _check_family(name)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    categories = None
    if weights is None:
        model = _build(name, num_classes or 1000)
        changes, source = _adapt(model, small_images, in_channels), None
    elif name == LITE and not _is_file(weights):
        if str(weights).upper() not in LITE_WEIGHTS:
            raise ValueError(f"{LITE} takes weights={' or '.join(map(repr, LITE_WEIGHTS))} "
                             "(the installed ImageNet weights), a file, or None.")
        model = efficientnet_lite.pretrained()  # installed file, hash-checked; no network
        changes = _adapt(model, small_images, in_channels)
        source, categories = LITE_SOURCE, imagenet_categories()
    elif _is_file(weights):
        source = str(Path(weights).expanduser())
        model, changes, small_images, in_channels = _load_file(
            name, Path(source), small_images, in_channels)
    else:
        weights = weights_enum(name, weights)
        cached = fetch_weights(name, weights, progress)
        try:  # torchvision reads the file with weights_only=False, which runs any code pickled
            read_checkpoint(cached)  # in it: so it is read safely first (tensors only)
            model = get_model(name, weights=weights)  # reads the file fetch_weights made sure of
        except (CheckpointError, RuntimeError, EOFError, OSError) as err:
            raise CheckpointError(
                f"{cached} should hold the {weights} weights, but it cannot be read safely "
                f"(corrupt, truncated, or more than tensors): {err}\nDelete it and call "
                "backbone again to download it anew, or copy a good copy of the file there."
            ) from None
        changes, source = _adapt(model, small_images, in_channels), str(weights)
        categories = list(weights.meta.get("categories") or []) or None
    head = model.get_submodule(find_head(model))
    if num_classes is not None and num_classes != head.out_features:
        replace_head(model, num_classes)
        categories = None  # a new head: the weights' class names no longer apply
    model.backbone_info = BackboneInfo(name, source, small_images, in_channels, changes,
                                       preprocess(name, weights, small_images=small_images),
                                       categories)
    return model


# --- 5. a small CNN of our own -------------------------------------------------------------


def _conv_block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
              nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


def small_cnn(num_classes: int = 10, *, width: int = 16, in_channels: int = 1) -> nn.Sequential:
    """A small CNN for 8×8 images, quick enough to train dozens of times in a lesson.

    Four blocks ``conv1`` … ``conv4`` (3×3 convolution, BatchNorm, ReLU) with
    ``width``, 2·width, 4·width and 4·width channels, a 2×2 max pool after blocks
    2 and 4 (8×8 → 4×4 → 2×2), then ``head``: average pool and a linear layer.
    Each block is one layer group (`transferkit.layers.layer_groups`), the unit
    that lesson 05 copies, freezes or fine-tunes.

    >>> net = small_cnn(5)
    >>> net(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 5])
    """
    w = width
    return nn.Sequential(OrderedDict(
        conv1=_conv_block(in_channels, w, pool=False),
        conv2=_conv_block(w, 2 * w, pool=True),
        conv3=_conv_block(2 * w, 4 * w, pool=False),
        conv4=_conv_block(4 * w, 4 * w, pool=True),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes)),
    ))


def save_backbone(model: nn.Module, path: str | Path, *, overwrite: bool = False,
                  meta: dict[str, Any] | None = None) -> Path:
    """Save a `backbone` model so that ``backbone(name, weights=path)`` rebuilds it.

    The file is a `transferkit.checkpoint` file (atomic, never overwrites unless
    asked) whose ``meta["backbone"]`` records the family and the small-image
    options. Returns the path.
    """

    info = getattr(model, "backbone_info", None)
    if not isinstance(info, BackboneInfo):
        raise ValueError("this model was not built by transferkit.models.backbone, so the file "
                         "could not say how to rebuild it; save it with save_checkpoint.")
    return save_checkpoint(path, model, meta={**(meta or {}), "backbone": info.options()},
                           overwrite=overwrite)


__all__ = [
    "BackboneInfo", "DOWNLOAD_HOST", "FAMILIES", "WeightsUnavailableError",
    "adapt_to_small_images", "backbone", "cached_weights_path", "fetch_weights", "online",
    "preprocess", "save_backbone", "small_cnn", "weights_enum",
]
