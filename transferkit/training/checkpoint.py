"""Saving and loading model weights without ever losing them.

A checkpoint is a dictionary of tensors and plain values written by
`torch.save`. Three rules make it safe:

1. **Atomic writes.** The file is written to a temporary name in the same
   folder and renamed into place only when complete, so a crash or a full disk
   mid-save never leaves a half-written checkpoint behind.
2. **No silent overwrite.** Saving to an existing path is refused unless you
   pass ``overwrite=True``.
3. **Safe loading.** Files are read with ``torch.load(weights_only=True)``,
   which refuses anything that could run code when unpickled: a checkpoint
   from the internet can hold weights, never a program.

The checkpoint remembers which parameters were frozen (``requires_grad=False``)
and which BatchNorm layers have frozen statistics (`transferkit.surgery.freezing`'s
``bn="freeze"``), and `load_checkpoint` restores both, so a fine-tuning run
resumes as it was. A file that does not fit the model is reported with the
missing, unexpected and wrongly-shaped keys instead of being half-loaded; with
``strict=False`` (e.g. a new head on purpose) the skipped keys are still named,
in a warning.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.foundations.distributed import current
from transferkit.surgery.freezing import bn_stats_frozen, freeze_bn_stats, unfreeze_bn_stats
from transferkit.surgery.layer_groups import BATCHNORMS

FORMAT = "transferkit-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, or is not safe to read."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's weights do not fit the model they are loaded into."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], shapes: dict):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.shapes = shapes


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    meta: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model``'s weights (and optionally the optimizer state) to ``path``.

    ``meta`` holds plain values (numbers, strings, lists, dicts) such as the
    epoch or the settings of the run. Returns the path written.

    Under ``torchrun`` only process 0 writes (every process holds the same
    weights) and the others return at once, so ``if rank == 0: save_checkpoint(…)``
    works too. A process that must read the file should wait for it first
    (``transferkit.foundations.distributed.current().barrier()`` on every process).
    """
    if isinstance(path, nn.Module) or not isinstance(model, nn.Module):
        raise TypeError("save_checkpoint(path, model): give the file's path first, then the "
                        f"model; got {type(path).__name__} and {type(model).__name__}.")
    path = Path(path).expanduser()
    if not current().main:  # one file, written by process 0
        return path
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; save_checkpoint will not replace it. Choose another "
            "name, or pass overwrite=True (the old file stays intact until the new one "
            "is completely written)."
        )
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name such as model.pt.")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": _on_cpu(model.state_dict()),
        "frozen": [name for name, p in model.named_parameters() if not p.requires_grad],
        "frozen_bn_stats": _frozen_bn_stats(model),
        "optimizer": _on_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "meta": dict(meta or {}),
        "torch_version": str(torch.__version__),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it copied to the CPU: a file saved on a GPU loads on a
    laptop, and holds plain tensors (`transferkit.foundations.device`'s rule 3)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        out = type(obj)((k, _on_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state dict's module versions
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def _frozen_bn_stats(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if bn_stats_frozen(m)]


def _restore_bn_stats(model: nn.Module, frozen: list[str]) -> None:
    for name, m in model.named_modules():
        if name in frozen:
            freeze_bn_stats(m)
        elif isinstance(m, BATCHNORMS) and bn_stats_frozen(m):
            unfreeze_bn_stats(m, training=model.training)


def load_error(path: str | Path, err: BaseException, what: str = "checkpoint",
               fix: str = "") -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in one line, and what to do.

    torch's own message for a file that holds pickled Python objects says that loading
    it with ``weights_only=False`` "will likely succeed": on a file you did not make
    yourself that is the one unsafe thing to do, since unpickling runs whatever code the
    file names. So that advice is never passed on: the message names the object that was
    refused, says why, and gives ``fix`` (how to save the file safely) instead.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch colours part of its message
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:  # names a class or function: unpickling it could run code
        return (f"{path} holds a Python object ({refused.group(1)}), not only tensors and "
                "plain values; unpickling it could run code, so it was not loaded (do not "
                f"retry with weights_only=False unless you made the file yourself). {fix}")
    detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
    return (f"{path} is not a readable {what} (corrupt or truncated?): "
            f"{type(err).__name__}: {(detail or [''])[0]}")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely and return its dictionary (nothing is loaded).

    Also accepts a bare ``state_dict`` saved with ``torch.save(model.state_dict())``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError,
            OSError) as err:
        fix = ("Re-save it as a state dict (torch.save(model.state_dict(), path)) or with "
               "save_checkpoint().")
        raise CheckpointError(load_error(path, err, "checkpoint", fix)) from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": FORMAT, "version": 0, "model": obj, "frozen": None,
                "optimizer": None, "meta": {}}
    raise CheckpointError(
        f"{path} is readable but is neither a transferkit checkpoint nor a state dict "
        f"(it holds a {type(obj).__name__})."
    )


def _compare(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list, list, dict]:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = {
        k: (tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    }
    return missing, unexpected, shapes


def _mismatch_lines(missing: list, unexpected: list, shapes: dict) -> list[str]:
    lines = []
    if missing:
        lines.append(f"  missing from the file ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        lines.append(f"  in the file but not in the model ({len(unexpected)}): "
                     f"{', '.join(unexpected)}")
    for key, (theirs, ours) in shapes.items():
        lines.append(f"  {key}: file has shape {theirs}, model has {ours}")
    return lines


def _mismatch_message(path: Path, missing: list, unexpected: list, shapes: dict) -> str:
    return "\n".join([
        f"{path} does not fit this model:", *_mismatch_lines(missing, unexpected, shapes),
        "Build the model with the same architecture as when it was saved. To load only "
        "the matching part on purpose (e.g. a new head), pass strict=False; the "
        "skipped keys are returned.",
    ])


def check_fits(path: str | Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise `CheckpointMismatchError` (listing the missing, unexpected and wrongly-shaped
    keys) unless the weights ``state`` read from ``path`` fit ``model`` exactly. Only
    shapes are compared, so ``model`` may live on the ``"meta"`` device: a network a
    file describes can be checked against the file's weights before it is really built."""
    missing, unexpected, shapes = _compare(model, state)
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(_mismatch_message(Path(path), missing, unexpected, shapes),
                                      missing, unexpected, shapes)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load the weights in ``path`` into ``model`` (and ``optimizer``); return the checkpoint.

    With ``strict=True`` (the default) any missing, unexpected or wrongly-shaped
    key is an error that lists them, and the model is left untouched. With
    ``strict=False`` the matching keys are loaded and the rest are named in a
    warning and in the returned dictionary under ``"skipped"``. The
    frozen/trainable state of each parameter, and which BatchNorm layers have
    frozen statistics, are restored as they were saved.
    """
    path = Path(path).expanduser()
    ckpt = read_checkpoint(path, map_location=map_location)
    state = ckpt["model"]
    missing, unexpected, shapes = _compare(model, state)
    if strict and (missing or unexpected or shapes):
        raise CheckpointMismatchError(
            _mismatch_message(path, missing, unexpected, shapes), missing, unexpected, shapes
        )
    if missing or unexpected or shapes:
        warnings.warn("\n".join([f"{path} loaded with strict=False; these keys were skipped "
                                 "(their layers keep the model's own weights):",
                                 *_mismatch_lines(missing, unexpected, shapes)]),
                      UserWarning, stacklevel=2)
    usable = {k: v for k, v in state.items() if k not in unexpected and k not in shapes}
    model.load_state_dict(usable, strict=False)
    frozen = ckpt.get("frozen")
    if frozen is not None:
        frozen = set(frozen)
        for name, p in model.named_parameters():
            if name in state:
                p.requires_grad_(name not in frozen)
    if ckpt.get("frozen_bn_stats") is not None:
        _restore_bn_stats(model, ckpt["frozen_bn_stats"])
    if optimizer is not None:
        if ckpt.get("optimizer") is None:
            raise CheckpointError(f"{path} holds no optimizer state; load it without optimizer=.")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"The optimizer state in {path} does not fit this optimizer ({err}). "
                "Build the optimizer over the same parameter groups as when it was saved."
            ) from None
    ckpt["skipped"] = {"missing": missing, "unexpected": unexpected, "shapes": shapes}
    return ckpt
