"""An encoder that knows how to rebuild itself, and how it is kept on disk.

Pre-training pays off only if its result can be reused later, in another lesson
or another program that does not have the code that built it. So the encoder
half of an autoencoder is described by a plain dictionary, its *architecture*
(``{"kind": "mlp", "dims": [64, 128, …, 2], "activation": "relu"}``), and
`save_encoder` stores that description beside the weights. `load_encoder`
rebuilds the module from the file alone.

* `Encoder(arch)`: the module, built from the description; inputs of the wrong
  size are refused with a message naming the size it expects.
* `save_encoder` / `load_encoder`: a `transferkit.training.checkpoint` file (atomic write,
  safe loading) with the architecture in its ``meta``. An existing file is
  never silently replaced: ``versioned=True`` writes ``name-v2.pt``, ``-v3`` …
* `encoder_versions` / `latest_encoder`: the versions that exist, the newest.

The building blocks (`activation_layer`, `mlp_layers`, `conv_geometry`) are shared
with the decoders in `transferkit.methods.autoencoder`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.training.checkpoint import (
    CheckpointError,
    check_fits,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation_layer(name: str | None) -> nn.Module:
    """A new activation layer by name (``"relu"``, ``"tanh"`` …; None means none)."""
    key = "identity" if name is None else str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(_ACTIVATIONS)} "
                         "or None.")
    return _ACTIVATIONS[key]()


# --- the encoder: a module that knows how to rebuild itself ---------------------------


def mlp_layers(dims: Sequence[int], activation: str | None, last: str | None) -> list[nn.Module]:
    """Linear layers over ``dims`` with ``activation`` between them and ``last`` at the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        is_last = i == len(dims) - 2
        if not is_last:
            layers.append(activation_layer(activation))
        elif last is not None:
            layers.append(activation_layer(last))
    return layers


def check_dims(dims: Sequence[int]) -> list[int]:
    """``dims`` as a list of at least two positive sizes, or a clear error."""
    dims = [int(d) for d in dims]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"dims must list at least two positive sizes (input, …, code), "
                         f"got {list(dims)}.")
    return dims


def conv_geometry(in_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    """Channels, height and width after the encoder's stride-2 convolutions."""
    c, h, w = (int(v) for v in in_shape)
    factor = 2 ** len(channels)
    if h % factor or w % factor:
        raise ValueError(
            f"images of {h}×{w} cannot be halved {len(channels)} times exactly (each of the "
            f"{len(channels)} conv layers halves the size); use fewer channels entries, or "
            f"pad the images to a multiple of {factor}."
        )
    return int(channels[-1]), h // factor, w // factor


class Encoder(nn.Module):
    """The encoder half of an autoencoder, described by a plain dictionary ``arch``.

    ``arch`` is what `save_encoder` stores beside the weights, so `load_encoder`
    can rebuild the module with no other code:

    * ``{"kind": "mlp", "dims": [64, 128, …, 2], "activation": "relu"}``
    * ``{"kind": "conv", "in_shape": [1, 8, 8], "channels": [16, 32],
      "code_dim": 16, "activation": "relu"}``

    Inputs of the wrong size are refused with a message naming the size it expects.
    """

    def __init__(self, arch: dict[str, Any]):
        super().__init__()
        kind = arch.get("kind")
        activation = arch.get("activation", "relu")
        if kind == "mlp":
            dims = check_dims(arch["dims"])
            self.arch = {"kind": "mlp", "dims": dims, "activation": activation}
            self.in_shape: tuple[int, ...] = (dims[0],)
            self.code_dim = dims[-1]
            self.layers = nn.Sequential(*mlp_layers(dims, activation, last=None))
        elif kind == "conv":
            in_shape = [int(v) for v in arch["in_shape"]]
            channels = [int(c) for c in arch["channels"]]
            code_dim = int(arch["code_dim"])
            if len(in_shape) != 3 or not channels:
                raise ValueError(f"a conv encoder needs in_shape (C, H, W) and at least one "
                                 f"channel count, got {in_shape} and {channels}.")
            c, h, w = conv_geometry(in_shape, channels)
            self.arch = {"kind": "conv", "in_shape": in_shape, "channels": channels,
                         "code_dim": code_dim, "activation": activation}
            self.in_shape, self.code_dim = tuple(in_shape), code_dim
            layers: list[nn.Module] = []
            for a, b in zip([in_shape[0], *channels[:-1]], channels, strict=True):
                layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), activation_layer(activation)]
            layers += [nn.Flatten(), nn.Linear(c * h * w, code_dim)]
            self.layers = nn.Sequential(*layers)
        else:
            raise ValueError(f"unknown encoder kind {kind!r}; expected 'mlp' or 'conv'.")

    @property
    def in_features(self) -> int:
        """Number of input values per example (64 for a flat 8×8 image)."""
        return int(torch.Size(self.in_shape).numel())

    @property
    def out_features(self) -> int:
        """The code size (what a classifier head on top of this encoder takes in)."""
        return self.code_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            per_example = math.prod(x.shape[1:])  # no x[0]: the batch may be empty
            hint = ""
            if x.ndim == len(self.in_shape) and x.numel() == self.in_features:
                hint = " Add a batch dimension for a single example: x.unsqueeze(0)."
            elif len(self.in_shape) == 1 and per_example == self.in_shape[0]:
                hint = " Flatten the images first: x.flatten(1)."
            elif len(self.in_shape) == 3 and per_example == self.in_features:
                hint = f" Reshape them first: x.reshape(-1, {', '.join(map(str, self.in_shape))})."
            raise ValueError(
                f"this encoder expects inputs of shape (batch, "
                f"{', '.join(map(str, self.in_shape))}), i.e. {self.in_features} values per "
                f"example, but got {tuple(x.shape)}.{hint}"
            )
        return self.layers(x)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, code_dim={self.code_dim}"


# --- keeping the encoder --------------------------------------------------------------

ENCODER_FORMAT = "transferkit-encoder"


class EncoderFileError(CheckpointError):
    """A file is not a saved encoder, or does not match what was expected."""


def _encoder_of(model: nn.Module) -> Encoder:
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, Encoder):
        raise TypeError(f"save_encoder needs a transferkit Autoencoder, ConvAutoencoder or "
                        f"Encoder (its architecture is saved too); got {type(model).__name__}.")
    return encoder


def _numbered_versions(path: Path) -> list[tuple[int, Path]]:
    """``(1, name.pt)``, ``(2, name-v2.pt)``, … for the versions that exist, in order."""
    pattern = re.compile(rf"^{re.escape(path.stem)}-v(\d+){re.escape(path.suffix)}$")
    found = [(1, path)] if path.is_file() else []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = pattern.match(p.name)
            if m and int(m.group(1)) >= 2:
                found.append((int(m.group(1)), p))
    return sorted(found)


def encoder_versions(path: str | Path) -> list[Path]:
    """The saved versions of ``path`` that exist: ``name.pt``, ``name-v2.pt``, … in order."""
    return [p for _, p in _numbered_versions(Path(path).expanduser())]


def latest_encoder(path: str | Path) -> Path:
    """The newest saved version of ``path`` (see `save_encoder` with ``versioned=True``)."""
    versions = encoder_versions(path)
    if not versions:
        raise FileNotFoundError(f"no encoder saved at {path} (nor a numbered version of it). "
                                "Pre-train one and save it there first: save_encoder(model, "
                                "path, versioned=True).")
    return versions[-1]


def _same_encoder(path: Path, encoder: Encoder) -> bool:
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError:
        return False
    state = ckpt["model"]
    own = encoder.state_dict()
    return (ckpt["meta"].get("architecture") == encoder.arch and state.keys() == own.keys()
            and all(torch.equal(state[k].cpu(), own[k].cpu()) for k in own))


def save_encoder(
    model: nn.Module,
    path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
    versioned: bool = False,
) -> Path:
    """Save the encoder of ``model`` with its architecture; return the path written.

    The file is a `transferkit.training.checkpoint` (atomic write, safe to load) whose
    ``meta`` holds the architecture description, so `load_encoder` rebuilds the
    module from the file alone. ``meta`` adds your own notes (data, epochs …).

    An existing file is never silently replaced:

    * by default it is an error (pass ``overwrite=True`` to replace it);
    * with ``versioned=True``, if the newest version holds exactly this encoder
      nothing is written and its path is returned (re-running a notebook is
      harmless); otherwise the encoder goes to ``name-vN.pt`` with N one more
      than the highest version on disk (``name.pt`` itself when there is none),
      so `latest_encoder(path)` always finds the file just written, even after
      older versions were deleted.
    """
    if isinstance(path, nn.Module) or not isinstance(model, nn.Module):
        raise TypeError("save_encoder(model, path): give the model first, then the file's "
                        f"path; got {type(model).__name__} and {type(path).__name__}.")
    encoder = _encoder_of(model)
    path = Path(path).expanduser()
    if versioned and not overwrite:
        versions = _numbered_versions(path)
        if versions and _same_encoder(versions[-1][1], encoder):
            return versions[-1][1]
        if versions:
            n = versions[-1][0] + 1
            path = path.with_name(f"{path.stem}-v{n}{path.suffix}")
    info = {"format": ENCODER_FORMAT, "architecture": encoder.arch, **dict(meta or {})}
    return save_checkpoint(path, encoder, meta=info, overwrite=overwrite)


def load_encoder(
    path: str | Path,
    *,
    in_features: int | None = None,
    code_dim: int | None = None,
) -> Encoder:
    """Rebuild and load an encoder saved by `save_encoder` (no other code needed).

    ``in_features`` / ``code_dim``: what you expect; a file that holds another
    size is refused with a message saying what it holds. The stored description is
    checked against the stored weights' shapes before anything is built (on the
    ``"meta"`` device, `transferkit.training.checkpoint.check_fits`), so a file whose
    description disagrees with its weights is refused without allocating a layer. The
    returned module is in eval mode; its ``meta`` attribute holds the notes saved with
    it.
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if meta.get("format") != ENCODER_FORMAT or "architecture" not in meta:
        raise EncoderFileError(
            f"{path} is a checkpoint but not a saved encoder (it has no architecture "
            "description). Save encoders with transferkit.methods.encoder.save_encoder(model, "
            "path); "
            "load other checkpoints with transferkit.training.checkpoint.load_checkpoint(path, "
            "model)."
        )
    try:  # first on the "meta" device: shapes without memory, so a description asking
        # for an 8000×8000 layer costs nothing until it is known to fit the stored weights
        with torch.device("meta"):
            check_fits(path, Encoder(meta["architecture"]), ckpt["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise EncoderFileError(f"{path} describes an encoder this version of transferkit "
                               f"cannot build ({err}).") from None
    encoder = Encoder(meta["architecture"])
    for name, wanted, actual in (("in_features", in_features, encoder.in_features),
                                 ("code_dim", code_dim, encoder.code_dim)):
        if wanted is not None and wanted != actual:
            raise EncoderFileError(
                f"{path} holds an encoder with {name}={actual}, but {name}={wanted} was "
                f"expected (its architecture: {meta['architecture']}). Use the encoder "
                "that was pre-trained for this data, or pre-train a new one."
            )
    load_checkpoint(path, encoder)  # strict: weights that do not fit are listed, not half-loaded
    encoder.meta = {k: v for k, v in meta.items() if k not in ("format", "architecture")}
    return encoder.eval()


__all__ = [
    "ENCODER_FORMAT", "Encoder", "EncoderFileError", "activation_layer", "check_dims",
    "conv_geometry", "encoder_versions", "latest_encoder", "load_encoder", "mlp_layers",
    "save_encoder",
]
