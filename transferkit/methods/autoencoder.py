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
* `pretrain(model, x)`: train it with `transferkit.training.loop.fit` on ``(x, x)``,
  optionally as a *denoising* autoencoder (corrupted input, clean target).
* `reconstruct`, `codes`, `interpolate`: run a trained model (in eval mode, on
  the model's device, without gradients; results come back on the CPU).
* `reconstruction_error` and `PCA`: measure it, against the linear baseline
  with the same code size.
* `transferkit.methods.encoder.save_encoder` / `load_encoder`: keep the encoder with a
  description of its architecture, so a later lesson rebuilds it without this
  lesson's code (they, and the `Encoder` itself, live in `transferkit.methods.encoder`:
  import them from there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from transferkit.foundations.device import model_device
from transferkit.foundations.train_eval import eval_mode
from transferkit.methods.encoder import (
    Encoder,
    activation_layer,
    check_dims,
    conv_geometry,
    mlp_layers,
)
from transferkit.training.checkpoint import save_checkpoint
from transferkit.training.loop import fit

# The widths of the source article's encoder (784 → 128 → 64 → 32 → 16 → 8 → 4 → 2).
ARTICLE_WIDTHS = (128, 64, 32, 16, 8, 4, 2)


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
        dims = check_dims(dims)
        for name in (activation, out_activation):
            activation_layer(name)  # an unknown name fails here, even if no layer would use it
        self.dims = tuple(dims)
        self.encoder = Encoder({"kind": "mlp", "dims": dims, "activation": activation})
        self.decoder = nn.Sequential(*mlp_layers(dims[::-1], activation, last=out_activation))


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
        activation_layer(out_activation)  # an unknown name fails before anything is built
        self.encoder = Encoder({"kind": "conv", "in_shape": list(in_shape),
                                "channels": list(channels), "code_dim": code_dim,
                                "activation": activation})
        c, h, w = conv_geometry(in_shape, channels)
        layers: list[nn.Module] = [nn.Linear(code_dim, c * h * w), activation_layer(activation),
                                   nn.Unflatten(1, (c, h, w))]
        ups = [*channels[::-1][1:], in_shape[0]]
        for i, (a, b) in enumerate(zip(channels[::-1], ups, strict=True)):
            layers.append(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1))
            if i < len(ups) - 1:
                layers.append(activation_layer(activation))
        if out_activation is not None:
            layers.append(activation_layer(out_activation))
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
    # drawn where the generator is (torch's global one: where x is), so on a GPU the
    # noise is made there, without a copy from the CPU in every training step
    where = dict(generator=generator, device=generator.device if generator else x.device)
    out = x
    if noise:
        out = out + noise * torch.randn(x.shape, **where).to(x.device)
    if mask:
        keep = torch.rand(x.shape, **where).to(x.device) >= mask
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

    This is `transferkit.training.loop.fit` on ``(x, x)`` with the ``"mse"`` loss, so it
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
    `transferkit.foundations.device.seed_everything` before building it for a repeatable run.
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
        generators: dict[torch.device, torch.Generator] = {}

        def transform(xb: torch.Tensor) -> torch.Tensor:
            if augment is not None:
                xb = augment(xb)
            if not (noise or mask):
                return xb
            if xb.device not in generators:  # on the device fit trains on: no copies
                generators[xb.device] = torch.Generator(device=xb.device).manual_seed(seed)
            return corrupt(xb, noise, mask, generators[xb.device], clip)

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
    device = model_device(model)
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


__all__ = [
    "ARTICLE_WIDTHS", "PCA", "Autoencoder", "ConvAutoencoder", "ReconstructionError",
    "article_dims", "codes", "corrupt", "interpolate", "pretrain", "reconstruct",
    "reconstruction_error",
]
