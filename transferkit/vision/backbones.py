"""Pre-trained backbones (torchvision's, and EfficientNet-Lite0), online or offline.

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

**Small images.** ImageNet networks shrink their input 32 times, so an 8×8
digit would be less than a pixel by the second layer. ``small_images=True``
gives the network a new, untrained first layer with stride 1
(`transferkit.surgery.small_images.adapt_to_small_images`; everything after it keeps its
weights); ``in_channels`` sets the number of input channels (1 for grey images).

**Families and weights, as records.** `BACKBONES` holds one `Family` per
network: how to build it, where its head is, which weights it has. ``resnet18``,
``resnet50``, ``mobilenet_v3_small``, ``mobilenet_v3_large``, ``efficientnet_b0``,
``convnext_tiny``, ``vgg16``, ``vgg11_bn``, ``densenet121`` and ``vit_b_16`` are
torchvision's, with torchvision's weights; ``efficientnet_lite0`` is timm's
architecture, and its ImageNet weights come installed with the course
(`LITE0_IMAGENET`, from `transferkit.vision.efficientnet_lite`), so
``backbone("efficientnet_lite0", weights="DEFAULT")`` never needs the network.
Each set of weights is a `PretrainedWeights` record, as in torchvision and timm:
its file and hash, how it loads, the transform its inputs need, its category
names. `backbone` reads the records; it never asks which family it builds.
The rest of the library (`transferkit.surgery.heads.replace_head`,
`transferkit.surgery.layer_groups.layer_groups`, `transferkit.surgery.freezing.freeze`,
`transferkit.methods.finetune.extract_features` …) works on all of them.
ImageNet weights also bring their 1,000 category names
(``backbone_info.categories``): `transferkit.vision.top_predictions.predict_top` uses them.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from transferkit.surgery.heads import replace_head
from transferkit.surgery.small_images import adapt_to_small_images, set_in_channels
from transferkit.training.checkpoint import (
    CheckpointError,
    check_fits,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from transferkit.vision import efficientnet_lite

DOWNLOAD_HOST = "download.pytorch.org"
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


class WeightsUnavailableError(RuntimeError):
    """Pre-trained weights were asked for, but they are not here and cannot be downloaded."""


# --- 1. the families and their weights, as records -----------------------------------------


@dataclass(frozen=True)
class PretrainedWeights:
    """One set of pre-trained weights, as data (torchvision's ``Weights``, timm's
    ``pretrained_cfg``): `backbone` reads these fields, whoever made the weights."""

    name: str  # what ``backbone_info.weights`` says
    file: str  # where the file comes from: a URL, or a file inside an installed package
    sha256: str | None  # the file's SHA-256 (None: torch.hub checks the prefix in its name)
    load: Callable[[bool], nn.Module]  # (progress) -> the network with these weights loaded
    transforms: Callable[[], nn.Module]  # the preprocessing a photo needs, as a module
    mean: Sequence[float]  # that preprocessing's pixel scaling, per channel:
    std: Sequence[float]  # (pixel − mean) / std, on pixels from 0 to pixel_range
    categories: Callable[[], list[str] | None]  # what the head's outputs mean, in order
    pixel_range: float = 1.0

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """The pixel scaling alone (no resize, no crop) of images (…, 3, H, W) in [0, 1]."""
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        return (images * self.pixel_range - mean) / std


@dataclass(frozen=True)
class Family:
    """A backbone family: its architecture, where its head is, and its weights: installed
    ones by name, or (``installed=None``) torchvision's, found in its ``WeightsEnum``."""

    name: str
    build: Callable[[int], nn.Module]  # (num_classes) -> the network, random weights
    head: str  # the head's dotted name (`transferkit.surgery.heads.find_head` agrees)
    installed: Mapping[str, PretrainedWeights] | None = None


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k category names, in the order of the classifiers' outputs
    (the list torchvision ships with its ImageNet weights)."""
    from torchvision.models import ResNet50_Weights  # heavy; the list lives in its meta

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _torchvision_network(name: str, num_classes: int = 1000) -> nn.Module:
    from torchvision.models import get_model  # heavy; only when a network is built

    return get_model(name, weights=None, num_classes=num_classes)


def _torchvision(name: str, head: str) -> Family:
    return Family(name, partial(_torchvision_network, name), head)


LITE0_IMAGENET = PretrainedWeights(  # installed with the course: never downloaded
    name=f"{efficientnet_lite.PACKAGE} ({efficientnet_lite.FILENAME}, ImageNet-1k)",
    file=f"{efficientnet_lite.PACKAGE}/models/{efficientnet_lite.FILENAME}",
    sha256=efficientnet_lite.SHA256,
    load=lambda progress: efficientnet_lite.pretrained(),  # hash-checked, then read safely
    transforms=efficientnet_lite.TFLitePreprocess,
    mean=(efficientnet_lite.MEAN,) * 3, std=(efficientnet_lite.STD,) * 3, pixel_range=255.0,
    categories=imagenet_categories,
)
BACKBONES = {family.name: family for family in (
    _torchvision("resnet18", "fc"), _torchvision("resnet50", "fc"),
    _torchvision("mobilenet_v3_small", "classifier.3"),
    _torchvision("mobilenet_v3_large", "classifier.3"),
    _torchvision("efficientnet_b0", "classifier.1"), _torchvision("convnext_tiny", "classifier.2"),
    _torchvision("vgg16", "classifier.6"), _torchvision("vgg11_bn", "classifier.6"),
    _torchvision("densenet121", "classifier"), _torchvision("vit_b_16", "heads.head"),
    Family("efficientnet_lite0", efficientnet_lite.build, "classifier",  # timm's architecture
           installed={"DEFAULT": LITE0_IMAGENET, "IMAGENET1K": LITE0_IMAGENET}),
)}
FAMILIES = tuple(BACKBONES)


# --- 2. which weights -------------------------------------------------------------------


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(FAMILIES)}.")
    return BACKBONES[name]


def pretrained_weights(name: str, weights: Any = "DEFAULT") -> PretrainedWeights:
    """The record of ``name``'s weights called ``weights``: one it has installed
    (``"DEFAULT"`` …), or torchvision's (any name `weights_enum` takes)."""
    family = _family(name)
    if family.installed is None:
        return _torchvision_weights(name, weights_enum(name, weights))
    if str(weights).upper() not in family.installed:
        raise ValueError(f"{name} takes weights={' or '.join(map(repr, family.installed))} "
                         "(the installed ImageNet weights), a file, or None.")
    return family.installed[str(weights).upper()]


def weights_enum(name: str, weights: Any) -> Any:
    """torchvision's weights object for ``weights`` ("DEFAULT", "IMAGENET1K_V1",
    "ResNet18_Weights.IMAGENET1K_V1" or the object itself) of the family ``name``."""
    from torchvision.models import WeightsEnum, get_model_weights  # heavy: loaded on first use

    if _family(name).installed is not None:
        raise ValueError(f"{name}'s weights are not torchvision's: pass weights='DEFAULT' (the "
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


def _torchvision_weights(name: str, weights: Any) -> PretrainedWeights:
    """torchvision's record of ``weights`` (a ``WeightsEnum`` member) as ours."""
    transform = weights.transforms()
    return PretrainedWeights(
        name=str(weights), file=weights.url, sha256=None,
        load=partial(_load_torchvision, name, weights), transforms=weights.transforms,
        mean=transform.mean, std=transform.std,
        categories=lambda: list(weights.meta.get("categories") or []) or None)


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


def _load_torchvision(name: str, weights: Any, progress: bool = True) -> nn.Module:
    """torchvision's network with ``weights``: fetched (`fetch_weights`), read safely first."""
    from torchvision.models import get_model  # heavy: loaded on first use

    cached = fetch_weights(name, weights, progress)
    try:  # torchvision reads the file with weights_only=False, which runs any code pickled
        read_checkpoint(cached)  # in it: so it is read safely first (tensors only)
        return get_model(name, weights=weights)  # reads the file fetch_weights made sure of
    except (CheckpointError, RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{cached} should hold the {weights} weights, but it cannot be read safely "
            f"(corrupt, truncated, or more than tensors): {err}\nDelete it and call "
            "backbone again to download it anew, or copy a good copy of the file there."
        ) from None


# --- 3. preprocessing -------------------------------------------------------------------


def preprocess(name: str, weights: Any = None, *, small_images: bool = False) -> nn.Module:
    """The transform a model's inputs need (a module: call it on an image batch).

    With torchvision weights: those weights' transform. Otherwise the family's
    ImageNet transform (its default weights' ``transforms``; for
    ``efficientnet_lite0`` TF-Lite's, `efficientnet_lite.TFLitePreprocess`),
    except for a small-image network, whose inputs are used as they are
    (``nn.Identity``; normalise them the way its source task was trained).
    """
    from torchvision.models import WeightsEnum  # heavy: loaded on first use

    _family(name)
    if small_images:
        return nn.Identity()
    chosen = weights if isinstance(weights, WeightsEnum) else "DEFAULT"
    return pretrained_weights(name, chosen).transforms()


# --- 4. the backbone --------------------------------------------------------------------


def _adapt(model: nn.Module, small_images: bool, in_channels: int) -> list[str]:
    if small_images:
        return adapt_to_small_images(model, in_channels)
    if in_channels != 3:
        return set_in_channels(model, in_channels)
    return []


def _saved_options(name: str, ckpt: dict) -> dict[str, Any] | None:
    """The options a `save_backbone` file was built with; None for a plain state dict."""
    saved = (ckpt.get("meta") or {}).get("backbone")
    if saved and saved.get("name") != name:
        raise ValueError(f"the file holds a {saved.get('name')!r} backbone, not {name!r}; "
                         f"call backbone({saved.get('name')!r}, weights=...).")
    return saved or None


def _load_file(family: Family, path: Path, small_images: bool, in_channels: int
               ) -> tuple[nn.Module, list[str], bool, int]:
    ckpt = read_checkpoint(path)  # safe loading; a clear error for a missing or bad file
    saved = _saved_options(family.name, ckpt)
    if saved:  # rebuild the network exactly as it was saved, then load
        small_images, in_channels = bool(saved["small_images"]), int(saved["in_channels"])

    def build() -> tuple[nn.Module, list[str]]:  # as the file says, on the default device
        model = family.build(1000)
        changes = _adapt(model, small_images, in_channels) if saved else []
        head = f"{family.head}.weight"
        if head in ckpt["model"]:  # the file's head may have another size
            replace_head(model, int(ckpt["model"][head].shape[0]), name=family.head)
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
    normalise: Callable[[torch.Tensor], torch.Tensor] | None = None  # preprocess's pixel
    # scaling alone, for images that already have their size (None for small images)

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
            file: a `save_backbone` / `transferkit.training.checkpoint.save_checkpoint`
            file, or a plain state dict such as torchvision's own download. For
            ``efficientnet_lite0``, ``"DEFAULT"`` (or ``"IMAGENET1K"``) is the
            installed, hash-checked ImageNet file (`transferkit.vision.efficientnet_lite`).
        num_classes: the size of the head. Default: the weights' (1000 for
            ImageNet, the file's own for a file); another number gives a new,
            untrained head (`transferkit.surgery.heads.replace_head`).
        small_images: adapt the first layer to small inputs
            (`adapt_to_small_images`) after the weights are loaded. A file saved
            by `save_backbone` records how it was built; that wins.
        in_channels: input channels (1 for grey images).
        progress: show a progress bar while downloading.

    Raises `WeightsUnavailableError` (offline, weights not cached), ValueError for
    an unknown name or weights, `transferkit.training.checkpoint.CheckpointError` for a
    file that is corrupt or does not fit, FileNotFoundError for a missing file.

    >>> model = backbone("resnet18", num_classes=5, small_images=True, in_channels=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape    # a batch of two 8×8 grey images
    torch.Size([2, 5])
    >>> model.backbone_info.changes[-1]
    'maxpool: removed'
    """
    family = _family(name)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    record, categories = None, None
    if weights is None:
        model = family.build(num_classes or 1000)
        changes, source = _adapt(model, small_images, in_channels), None
    elif _is_file(weights):
        source = str(Path(weights).expanduser())
        model, changes, small_images, in_channels = _load_file(
            family, Path(source), small_images, in_channels)
    else:  # the record says where the file is, how it is checked, and what it means
        record = pretrained_weights(name, weights)
        model = record.load(progress)
        changes, source = _adapt(model, small_images, in_channels), record.name
        categories = record.categories()
    if num_classes is not None and num_classes != model.get_submodule(family.head).out_features:
        replace_head(model, num_classes, name=family.head)
        categories = None  # a new head: the weights' class names no longer apply
    inputs = record or pretrained_weights(name)  # random or a file: the family's default's
    model.backbone_info = BackboneInfo(
        name, source, small_images, in_channels, changes,
        nn.Identity() if small_images else inputs.transforms(), categories,
        None if small_images else inputs.normalise)
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
    Each block is one layer group (`transferkit.surgery.layer_groups.layer_groups`), the unit
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

    The file is a `transferkit.training.checkpoint` file (atomic, never overwrites unless
    asked) whose ``meta["backbone"]`` records the family and the small-image
    options. Returns the path.
    """

    info = getattr(model, "backbone_info", None)
    if not isinstance(info, BackboneInfo):
        raise ValueError("this model was not built by transferkit.vision.backbones.backbone, "
                         "so the file "
                         "could not say how to rebuild it; save it with save_checkpoint.")
    return save_checkpoint(path, model, meta={**(meta or {}), "backbone": info.options()},
                           overwrite=overwrite)


__all__ = [
    "BACKBONES", "BackboneInfo", "DOWNLOAD_HOST", "FAMILIES", "Family", "LITE0_IMAGENET",
    "PretrainedWeights", "WeightsUnavailableError", "backbone",
    "cached_weights_path", "fetch_weights", "imagenet_categories", "online", "preprocess",
    "pretrained_weights", "save_backbone", "small_cnn", "weights_enum",
]
