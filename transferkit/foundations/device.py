"""Where tensors live, and how to make a run repeatable.

**The device rule.** Every function in transferkit keeps these four rules, so a
notebook written on a laptop runs unchanged on a GPU:

1. *Training picks the device, and the model stays there.* `fit` (and all that
   trains through it: `fine_tune`, `pretrain`, the methods of a study) trains on
   the ``device=`` you give, else on `pick_device()`: an NVIDIA GPU (CUDA), then
   an Apple GPU (MPS), then the CPU. It moves the model and the data there and
   leaves the model there afterwards. `load_text_model` puts the model it loads
   on the same device.
2. *Everything else runs where the model is.* A function that takes a model
   (`evaluate`, `predict`, `extract_features`, `encode`, `zero_shot`,
   `attention_maps`, `predict_top`, `reconstruction_error` …) runs it on
   `model_device(model)` and moves your inputs there itself: your tensors may be
   anywhere.
3. *Results come back on the CPU.* Predictions, features, text vectors, scores and
   measurements are CPU tensors or plain numbers, whatever device computed them,
   ready for NumPy, scikit-learn, plots and caches.
4. *What the library builds joins what it builds on.* Layers it adds to a model (a
   `Classifier`'s head, a replaced head, LoRA's matrices) are created on that
   model's device; functions from tensors to tensors (`rotate`, `translate`,
   `random_affine`, `mean_pool` …) return their result on their input's device.

So you never write ``.to(device)`` yourself, and a model you call directly
(``model(x)``) after `fit` wants ``x`` on `model_device(model)`, as in plain PyTorch.

**Forcing the CPU.** Set the environment variable ``TRANSFERKIT_DEVICE=cpu``
before starting Python or JupyterLab (``TRANSFERKIT_DEVICE=cpu python3 course.py
lab``), or pass ``device="cpu"`` to `fit`, `fine_tune` or `load_text_model`.
``TRANSFERKIT_DEVICE`` also takes ``cuda``, ``cuda:1`` and ``mps``, e.g. to compare
a CPU run of a lesson with a GPU run.

`pick_device()` is that choice; `model_device(model)` says where a model's
weights already are.

`seed_everything(seed)` seeds Python's, NumPy's and PyTorch's random number
generators so that two runs with the same seed give the same numbers."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn

ENV_VAR = "TRANSFERKIT_DEVICE"
_KINDS = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(prefer: str | None = None) -> torch.device:
    """Return the device to train on.

    Order of precedence: the ``prefer`` argument, then ``$TRANSFERKIT_DEVICE``,
    then the best available of CUDA → MPS → CPU.

    >>> pick_device("cpu")
    device(type='cpu')
    """
    choice = prefer if prefer is not None else os.environ.get(ENV_VAR, "").strip()
    if not choice:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")

    source = "pick_device()" if prefer is not None else f"${ENV_VAR}"
    kind, _, index = choice.lower().partition(":")
    if kind not in _KINDS or (index and not index.isdigit()):
        raise ValueError(
            f"{source} is {choice!r}, which is not a device name. "
            f"Use one of 'cpu', 'cuda', 'cuda:N' or 'mps' (or unset {ENV_VAR} to choose "
            "automatically)."
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{source} asks for {choice!r}, but PyTorch sees no CUDA GPU here. "
                f"Use 'cpu', or unset {ENV_VAR} to choose automatically."
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise RuntimeError(
                f"{source} asks for {choice!r}, but only {count} CUDA device(s) exist "
                f"(cuda:0 … cuda:{count - 1})."
            )
    if kind == "mps" and not _mps_available():
        raise RuntimeError(
            f"{source} asks for 'mps', but the Apple GPU backend is not available here. "
            f"Use 'cpu', or unset {ENV_VAR} to choose automatically."
        )
    return torch.device(choice.lower())


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights live: its first parameter's device, or its first buffer's
    (a model made only of buffers, such as a fitted PCA), or the CPU.

    >>> model_device(nn.Linear(2, 1))
    device(type='cpu')
    """
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and PyTorch (all devices) with ``seed``; return it.

    Two runs that call ``seed_everything`` with the same seed before building
    and training a model produce the same weights on the same machine.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


@contextlib.contextmanager
def seeded(seed: int):
    """``with seeded(seed):`` runs the block seeded like `seed_everything`, then puts the
    random state of Python, NumPy and PyTorch back as it was.

    Library code uses it to build and train models reproducibly without resetting the
    notebook's own random numbers behind your back.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            seed_everything(seed)
            yield seed
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
