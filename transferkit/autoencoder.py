"""Autoencoders: learning a short code for the data without any labels.

An autoencoder is two networks trained together. The *encoder* f squeezes an
input x into a code z = f(x) with far fewer numbers than x; the *decoder* g
rebuilds x̂ = g(z). Training minimises the reconstruction error

    L(x, x̂) = ‖x − x̂‖²       (here averaged over pixels: the "mse" loss)

so the input is its own target and no label is ever needed. To rebuild x
through a narrow code, the encoder has to keep what matters about the data,
which is why its code (and the encoder itself) is worth reusing for a task
that has labels: that reuse is *pre-training*.

What this module gives you:

* `Autoencoder(dims)`: an MLP encoder over ``dims`` and the mirrored decoder
  (``article_dims()`` gives the source article's 784→128→…→2 shape, adapted to
  the input size); `ConvAutoencoder` for image tensors.
* `pretrain(model, x)`: train it with `transferkit.train.fit` on ``(x, x)``,
  optionally as a *denoising* autoencoder (corrupted input, clean target).
* `reconstruct`, `codes`, `interpolate`: run a trained model (in eval mode, on
  the model's device, without gradients; results come back on the CPU).
* `reconstruction_error` and `PCA`: measure it, against the linear baseline
  with the same code size.
* `save_encoder` / `load_encoder`: keep the encoder with a description of its
  architecture, so a later lesson rebuilds it without this lesson's code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .train import _model_device, eval_mode, fit

# The widths of the source article's encoder (784 → 128 → 64 → 32 → 16 → 8 → 4 → 2).
ARTICLE_WIDTHS = (128, 64, 32, 16, 8, 4, 2)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def _activation(name: str | None) -> nn.Module:
    key = "identity" if name is None else str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(_ACTIVATIONS)} "
                         "or None.")
    return _ACTIVATIONS[key]()


def article_dims(in_features: int = 64, code_dim: int = 2) -> tuple[int, ...]:
    """The source article's encoder widths, for ``in_features`` inputs and a ``code_dim`` code.

    The article's encoder is 784 → 128 → 64 → 32 → 16 → 8 → 4 → 2. For another
    input size the first width changes; for another code size the chain stops
    at the first width not larger than the code.

    >>> article_dims(64)
    (64, 128, 64, 32, 16, 8, 4, 2)
    >>> article_dims(64, code_dim=8)
    (64, 128, 64, 32, 16, 8)
    """
    if not isinstance(code_dim, int) or code_dim < 1:
        raise ValueError(f"code_dim must be a positive integer, got {code_dim!r}.")
    return (int(in_features), *[w for w in ARTICLE_WIDTHS if w > code_dim], code_dim)


# --- the encoder: a module that knows how to rebuild itself ---------------------------


def _mlp(dims: Sequence[int], activation: str | None, last: str | None) -> list[nn.Module]:
    """Linear layers over ``dims`` with ``activation`` between them and ``last`` at the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        is_last = i == len(dims) - 2
        if not is_last:
            layers.append(_activation(activation))
        elif last is not None:
            layers.append(_activation(last))
    return layers


def _check_dims(dims: Sequence[int]) -> list[int]:
    dims = [int(d) for d in dims]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"dims must list at least two positive sizes (input, …, code), "
                         f"got {list(dims)}.")
    return dims


def _conv_geometry(in_shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
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
            dims = _check_dims(arch["dims"])
            self.arch = {"kind": "mlp", "dims": dims, "activation": activation}
            self.in_shape: tuple[int, ...] = (dims[0],)
            self.code_dim = dims[-1]
            self.layers = nn.Sequential(*_mlp(dims, activation, last=None))
        elif kind == "conv":
            in_shape = [int(v) for v in arch["in_shape"]]
            channels = [int(c) for c in arch["channels"]]
            code_dim = int(arch["code_dim"])
            if len(in_shape) != 3 or not channels:
                raise ValueError(f"a conv encoder needs in_shape (C, H, W) and at least one "
                                 f"channel count, got {in_shape} and {channels}.")
            c, h, w = _conv_geometry(in_shape, channels)
            self.arch = {"kind": "conv", "in_shape": in_shape, "channels": channels,
                         "code_dim": code_dim, "activation": activation}
            self.in_shape, self.code_dim = tuple(in_shape), code_dim
            layers: list[nn.Module] = []
            for a, b in zip([in_shape[0], *channels[:-1]], channels, strict=True):
                layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), _activation(activation)]
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


# --- the autoencoders ----------------------------------------------------------------


class _EncoderDecoder(nn.Module):
    """What both autoencoders share: ``encoder``, ``decoder``, ``code_dim``, encode/decode."""

    encoder: Encoder
    decoder: nn.Module

    @property
    def code_dim(self) -> int:
        return self.encoder.code_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code z = f(x)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction x̂ = g(z)."""
        if z.ndim != 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"the decoder expects codes of shape (batch, {self.code_dim}), "
                             f"got {tuple(z.shape)}.")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Autoencoder(_EncoderDecoder):
    """An MLP encoder over ``dims`` and the mirrored decoder.

    ``Autoencoder([64, 32, 8])`` is 64 → 32 → 8 (the code) → 32 → 64. Between
    layers sits ``activation``; the code itself is linear (no activation), as in
    the source article; the decoder ends with ``out_activation`` (``"sigmoid"``
    fits pixels in [0, 1]; ``None`` for unbounded data).

    The article's architecture, adapted to the 64-pixel digits, is one call::

        Autoencoder(article_dims(64))        # 64→128→64→32→16→8→4→2→4→…→64
    """

    def __init__(
        self,
        dims: Sequence[int],
        activation: str | None = "relu",
        out_activation: str | None = "sigmoid",
    ):
        super().__init__()
        dims = _check_dims(dims)
        for name in (activation, out_activation):
            _activation(name)  # an unknown name fails here, even if no layer would use it
        self.dims = tuple(dims)
        self.encoder = Encoder({"kind": "mlp", "dims": dims, "activation": activation})
        self.decoder = nn.Sequential(*_mlp(dims[::-1], activation, last=out_activation))


class ConvAutoencoder(_EncoderDecoder):
    """A convolutional autoencoder for images of shape ``in_shape = (C, H, W)``.

    The encoder is stride-2 3×3 convolutions with ``channels`` (each halves H and
    W), then a linear layer to the ``code_dim`` code; the decoder mirrors it with
    transposed convolutions. For the 8×8 digits: ``ConvAutoencoder((1, 8, 8))``.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 8, 8),
        channels: Sequence[int] = (16, 32),
        code_dim: int = 16,
        activation: str | None = "relu",
        out_activation: str | None = "sigmoid",
    ):
        super().__init__()
        _activation(out_activation)  # an unknown name fails before anything is built
        self.encoder = Encoder({"kind": "conv", "in_shape": list(in_shape),
                                "channels": list(channels), "code_dim": code_dim,
                                "activation": activation})
        c, h, w = _conv_geometry(in_shape, channels)
        layers: list[nn.Module] = [nn.Linear(code_dim, c * h * w), _activation(activation),
                                   nn.Unflatten(1, (c, h, w))]
        ups = [*channels[::-1][1:], in_shape[0]]
        for i, (a, b) in enumerate(zip(channels[::-1], ups, strict=True)):
            layers.append(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1))
            if i < len(ups) - 1:
                layers.append(_activation(activation))
        if out_activation is not None:
            layers.append(_activation(out_activation))
        self.decoder = nn.Sequential(*layers)


# --- the linear baseline ---------------------------------------------------------------


class PCA(nn.Module):
    """Principal component analysis as an "autoencoder" with linear encoder and decoder.

    Fitted on ``x`` (N, D): the mean μ and the top-k right singular vectors W
    (k × D) of the centred data. Encode z = (x − μ)Wᵀ, decode x̂ = zW + μ. For a
    given code size k no linear encoder/decoder pair reconstructs ``x`` with a
    smaller squared error (Eckart–Young), which makes it the baseline a deep
    autoencoder has to beat.

    >>> pca = PCA(8).fit(torch.rand(100, 64))
    >>> pca(torch.rand(5, 64)).shape
    torch.Size([5, 64])
    """

    def __init__(self, code_dim: int):
        super().__init__()
        if not isinstance(code_dim, int) or code_dim < 1:
            raise ValueError(f"code_dim must be a positive integer, got {code_dim!r}.")
        self.code_dim = code_dim
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("components", torch.empty(0))

    def fit(self, x: torch.Tensor) -> PCA:
        x = torch.as_tensor(x).flatten(1).double()
        if self.code_dim > min(x.shape):
            raise ValueError(f"PCA with {self.code_dim} components needs at least that many "
                             f"examples and features; x is {tuple(x.shape)}.")
        mean = x.mean(dim=0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        self.mean, self.components = mean.float(), vh[: self.code_dim].float()
        return self

    def _check_fitted(self) -> None:
        if self.mean.numel() == 0:
            raise RuntimeError("this PCA is not fitted yet: call pca.fit(x_train) first.")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        if x.ndim < 2 or x.flatten(1).shape[1] != self.mean.numel():
            raise ValueError(f"this PCA was fitted on {self.mean.numel()} features per example, "
                             f"so it expects inputs of shape (batch, {self.mean.numel()}) (or "
                             f"images with that many pixels); got {tuple(x.shape)}.")
        return (x.flatten(1) - self.mean) @ self.components.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        if z.ndim != 2 or z.shape[1] != self.code_dim:
            raise ValueError(f"this PCA decodes codes of shape (batch, {self.code_dim}), "
                             f"got {tuple(z.shape)}.")
        return z @ self.components + self.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)).reshape(x.shape)


# --- training ---------------------------------------------------------------------------


def corrupt(
    x: torch.Tensor,
    noise: float = 0.0,
    mask: float = 0.0,
    generator: torch.Generator | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """A corrupted copy of ``x`` for a denoising autoencoder.

    ``noise``: standard deviation of Gaussian noise added to every value;
    ``mask``: fraction of values set to 0 ("masking noise"); ``generator``
    draws the noise (torch's global RNG when None). ``clip``: the result is
    clamped to this range, by default [0, 1], the range of the course's pixels;
    pass ``clip=None`` for unbounded data (e.g. standardised features, with
    ``Autoencoder(..., out_activation=None)``).
    """
    if noise < 0 or not 0 <= mask < 1:
        raise ValueError(f"noise must be ≥ 0 and mask in [0, 1); got noise={noise}, mask={mask}.")
    if clip is not None and not clip[0] < clip[1]:
        raise ValueError(f"clip must be (low, high) with low < high, or None; got {clip}.")
    out = x
    if noise:
        out = out + noise * torch.randn(x.shape, generator=generator).to(x.device)
    if mask:
        keep = torch.rand(x.shape, generator=generator).to(x.device) >= mask
        out = out * keep
    return out if clip is None else out.clamp(*clip)


def pretrain(
    model: nn.Module,
    x: torch.Tensor,
    val: torch.Tensor | None = None,
    *,
    epochs: int = 50,
    lr: float = 3e-3,
    batch_size: int = 64,
    noise: float = 0.0,
    mask: float = 0.0,
    clip: tuple[float, float] | None = (0.0, 1.0),
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    early_stopping: int | None = None,
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    **fit_kwargs: Any,
) -> nn.Module:
    """Train ``model`` to reconstruct ``x`` (no labels) and return it, trained.

    This is `transferkit.train.fit` on ``(x, x)`` with the ``"mse"`` loss, so it
    has fit's progress bar, early stopping (on ``val``, unlabelled inputs) and
    best-weights restore; like fit, it moves the model to the best device. The
    run's `History` is kept as ``model.history``.

    Denoising: with ``noise`` (Gaussian std), ``mask`` (fraction of pixels zeroed)
    or an ``augment`` function, each training batch's *inputs* are corrupted
    while the target stays the clean ``x``, so the model learns to remove the
    corruption (``clip``: see `corrupt`; None for data not in [0, 1]).

    ``checkpoint``: a path where the trained model is saved. An existing file is
    refused *before* training (pass ``overwrite=True`` to replace it).

    ``seed`` fixes the order of the mini-batches and the noise, through generators
    of their own: torch's global random state is neither read nor reset. The
    initial weights come from that global state when you build the model, so call
    `transferkit.device.seed_everything` before building it for a repeatable run.
    """
    x = _as_inputs(x, "x")
    val_pair = None
    if val is not None:
        val = _as_inputs(val, "val")
        val_pair = (val, val)
    if checkpoint is not None and Path(checkpoint).expanduser().exists() and not overwrite:
        raise FileExistsError(f"{checkpoint} already exists; pretrain will not replace it. "
                              "Choose another name, or pass overwrite=True.")
    transform = None
    if noise or mask or augment is not None:
        generator = torch.Generator().manual_seed(seed)

        def transform(xb: torch.Tensor) -> torch.Tensor:
            if augment is not None:
                xb = augment(xb)
            return corrupt(xb, noise, mask, generator, clip) if (noise or mask) else xb

    history = fit(model, (x, x), val_pair, epochs=epochs, lr=lr, batch_size=batch_size,
                  loss="mse", early_stopping=early_stopping, seed=seed, progress=progress,
                  transform_inputs=transform, **fit_kwargs)
    model.history = history
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, overwrite=overwrite, meta={
            "task": "autoencoder pre-training", "epochs_run": len(history),
            "noise": noise, "mask": mask, "seed": seed, "history": history.to_rows()})
    return model


def _as_inputs(x: Any, name: str) -> torch.Tensor:
    x = getattr(x, "x", x)  # a transferkit Data: its labels are not used
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor of inputs (labels are not needed), "
                        f"got {type(x).__name__}.")
    if len(x) == 0:
        raise ValueError(f"{name} is empty.")
    return x


# --- using a trained model ----------------------------------------------------------------
# Training leaves the model on the device fit chose (a GPU when there is one), so these
# functions move their inputs there, run in eval mode without gradients, and return CPU
# tensors: ready for .numpy(), for plots, and for comparison with the data.


def _run(model: nn.Module, step: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
         batch_size: int, what: str) -> torch.Tensor:
    """``step`` applied to ``x`` in batches, on the model's device, in eval mode; on the CPU."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} needs a torch model (an Autoencoder, ConvAutoencoder, PCA or "
                        f"any nn.Module), got {type(model).__name__}. For a plain function f, "
                        "compute f(x) yourself.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    device = _model_device(model)
    with eval_mode(model), torch.no_grad():
        return torch.cat([step(x[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(x), batch_size)])


def reconstruct(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The reconstructions x̂ = g(f(x)) of a trained model, as a CPU tensor.

    The model must give back something of the input's shape (an `Autoencoder`, a
    `PCA`, …); an encoder alone gives codes, so it is refused with a message.
    """
    x = _as_inputs(x, "x")
    out = _run(model, model, x, batch_size, "reconstruct")
    if out.shape != x.shape:
        raise ValueError(f"the model's output {tuple(out.shape)} does not have the "
                         f"input's shape {tuple(x.shape)}; is it an autoencoder? (For the "
                         "codes of an encoder, use codes(model, x).)")
    return out


def codes(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The codes z = f(x): of a model with an ``encode`` method, or of an `Encoder`."""
    encode = getattr(model, "encode", model if isinstance(model, Encoder) else None)
    if encode is None:
        raise TypeError(f"codes needs an autoencoder (with an encode method) or an Encoder, "
                        f"got {type(model).__name__}.")
    return _run(model, encode, _as_inputs(x, "x"), batch_size, "codes")


def interpolate(model: nn.Module, a: torch.Tensor, b: torch.Tensor,
                steps: int = 8) -> torch.Tensor:
    """Decode ``steps`` codes on the straight line from f(a) to f(b): (steps, *a.shape)."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two ends), got {steps}.")
    za, zb = codes(model, torch.stack([a, b]))
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return _run(model, model.decode, za + t * (zb - za), steps, "interpolate")


class ReconstructionError(NamedTuple):
    """Per-example reconstruction errors and their mean."""

    per_example: torch.Tensor
    mean: float


def reconstruction_error(model: nn.Module, x: torch.Tensor,
                         batch_size: int = 1024) -> ReconstructionError:
    """Mean squared error per example, e_i = ‖x_i − x̂_i‖² / D, and the mean over examples.

    The mean equals the ``"mse"`` loss `pretrain` minimises. Works for any torch
    model that maps inputs to reconstructions of the same shape (an
    `Autoencoder`, a `PCA`, …), measured with `reconstruct`.
    """
    x = _as_inputs(x, "x")
    out = reconstruct(model, x, batch_size)
    per_example = (out - x.cpu()).pow(2).flatten(1).mean(dim=1)
    return ReconstructionError(per_example, float(per_example.mean()))


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
                                "Run lesson 03 to pre-train and save one.")
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

    The file is a `transferkit.checkpoint` (atomic write, safe to load) whose
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
    size is refused with a message saying what it holds. The returned module is
    in eval mode; its ``meta`` attribute holds the notes saved with it.
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if meta.get("format") != ENCODER_FORMAT or "architecture" not in meta:
        raise EncoderFileError(
            f"{path} is a checkpoint but not a saved encoder (it has no architecture "
            "description). Save encoders with transferkit.autoencoder.save_encoder(model, path); "
            "load other checkpoints with transferkit.checkpoint.load_checkpoint(path, model)."
        )
    try:
        encoder = Encoder(meta["architecture"])
    except (KeyError, TypeError, ValueError) as err:
        raise EncoderFileError(f"{path} describes an encoder this version of transferkit "
                               f"cannot build ({err}).") from None
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
    "ARTICLE_WIDTHS", "Autoencoder", "ConvAutoencoder", "Encoder", "EncoderFileError", "PCA",
    "ReconstructionError", "article_dims", "codes", "corrupt", "encoder_versions",
    "interpolate", "latest_encoder", "load_encoder", "pretrain", "reconstruct",
    "reconstruction_error", "save_encoder",
]
