"""A stand-in accelerator: device mix-ups fail on a CPU-only machine as they would on a GPU.

CI has no GPU, and on one device every tensor is on the same device, so code that mixes
a GPU model with CPU inputs passes there and fails for every learner with a GPU. Inside
``with StandInAccelerator() as acc:`` the device ``meta`` plays the accelerator:

- ``model.to("meta")``, ``x.to("meta")`` and ``torch.zeros(..., device="meta")`` give
  tensors that *say* they are on ``meta`` but hold real numbers (a CPU tensor inside), so
  training, ``.item()`` and ``.cpu()`` work and give the CPU's numbers;
- an operation that mixes such a tensor with an ordinary CPU tensor raises torch's own
  "Expected all tensors to be on the same device" error, as CUDA does (with CUDA's
  exceptions: a 0-dimensional CPU tensor may join, CPU index tensors may index, and
  ``copy_`` / ``.to`` move between the two);
- ``.numpy()`` on it fails as on a GPU ("use Tensor.cpu()");
- ``acc.transfers`` counts copies between the CPU and the stand-in (each way) and
  ``acc.syncs`` the operations that would make the CPU wait for a GPU (``.item()``,
  ``.tolist()``, copies back to the CPU, ``nonzero``-like shapes that depend on values).

`transferkit.foundations.device.pick_device()` (unless given a device, or ``TRANSFERKIT_DEVICE``
is set to something other than ``cpu`` by the test) answers ``meta`` while it is active, so
library code that picks "the fastest device" picks the stand-in, as it would pick CUDA.

Every operation goes through Python here, so it is 10–100× slower than the CPU: for
tests on small models. Two differences from a GPU, neither in what is computed:
``torch.inference_mode()`` acts as ``torch.no_grad()`` while the stand-in is active (a
view of an inference tensor cannot be wrapped), and ``torch.Generator(device=...)`` on the
stand-in is a CPU generator (it draws the CPU's numbers).
"""

from __future__ import annotations

import collections
import contextlib
import sys

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

STANDIN = torch.device("meta")
aten = torch.ops.aten

# Operations CUDA allows across devices: moving data, and indexing with CPU indices.
_MOVES = {aten._to_copy.default, aten.copy_.default}
_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
             aten._index_put_impl_.default}
# Operations whose output size depends on values: on a GPU the CPU waits for them.
_VALUE_SHAPED = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
                 aten.unique_consecutive.default, aten.unique_dim.default}


class OnStandIn(torch.Tensor):
    """A tensor on the stand-in accelerator: reports ``meta``, holds a CPU tensor."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=STANDIN,
            requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    def __repr__(self, **kwargs) -> str:  # noqa: D105
        return f"OnStandIn({self.elem!r})"

    def tolist(self):  # a GPU tensor's tolist() works (and waits for the GPU)
        mode = _ACTIVE[-1] if _ACTIVE else None
        if mode is not None:
            mode.syncs["tolist"] += 1
        return self.elem.tolist()

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert meta (stand-in accelerator) device type tensor to "
                        "numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    def __array__(self, *args, **kwargs):
        return self.numpy()

    def data_ptr(self) -> int:
        return self.elem.data_ptr()

    def untyped_storage(self):
        return self.elem.untyped_storage()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func}: a stand-in accelerator tensor used outside "
                           "StandInAccelerator()")


_ACTIVE: list[StandInAccelerator] = []


class _Generator(torch.Generator):
    """``torch.Generator(device=<the stand-in>)``: a CPU generator that says it is there."""

    def __new__(cls, device=None):
        on = _on_standin(device)
        generator = super().__new__(cls, device="cpu" if on else (device or "cpu"))
        generator.on_standin = on
        return generator

    def __init__(self, device=None):
        pass

    @property
    def device(self):
        return STANDIN if self.on_standin else super().device


class _FromData(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` copies on the CPU below the dispatcher's modes:
    make it on the CPU, then move it, so it lands on the stand-in as it lands on a GPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor, torch.asarray) and \
                _on_standin(kwargs.get("device")):
            return func(*args, **dict(kwargs, device="cpu")).to(STANDIN)
        return func(*args, **kwargs)


def _on_standin(device) -> bool:
    return device is not None and torch.device(device).type == STANDIN.type


class StandInAccelerator(TorchDispatchMode):
    """``with StandInAccelerator() as acc:`` — see the module's docstring."""

    def __init__(self, *, patch_pick_device: bool = True):
        super().__init__()
        self.transfers: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self.patch_pick_device = patch_pick_device
        self._patched: list[tuple[object, str, object]] = []

    # --- entering and leaving: pick_device answers the stand-in -------------------------
    def __enter__(self):
        _ACTIVE.append(self)
        # model.to(device) keeps each Parameter object (an optimizer built before the move
        # still holds them), as it does for CUDA: swap the tensors in place.
        self._swap = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        if self.patch_pick_device:
            from transferkit.foundations import device as device_module

            original = device_module.pick_device

            def pick_device(prefer=None):
                if prefer is None and device_module.os.environ.get(
                        device_module.ENV_VAR, "cpu").strip() in ("", "cpu"):
                    return STANDIN
                if prefer is not None and str(prefer) == STANDIN.type:
                    return STANDIN
                return original(prefer)

            for name, module in list(sys.modules.items()):
                if (name == "transferkit" or name.startswith("transferkit.")) and \
                        getattr(module, "pick_device", None) is original:
                    self._patched.append((module, "pick_device", original))
                    module.pick_device = pick_device
        self._inference_mode = torch.inference_mode
        torch.inference_mode = _inference_as_no_grad
        self._generator = torch.Generator
        torch.Generator = _Generator
        self._from_data = _FromData()
        self._from_data.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        self._from_data.__exit__(*exc)
        torch.inference_mode = self._inference_mode
        torch.Generator = self._generator
        for module, name, original in self._patched:
            setattr(module, name, original)
        self._patched.clear()
        torch.__future__.set_swap_module_params_on_conversion(self._swap)
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def reset_counts(self) -> None:
        self.transfers.clear()
        self.syncs.clear()

    # --- every operation --------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        on = [t for t in tensors if isinstance(t, OnStandIn)]
        device_kw = kwargs.get("device")
        to_standin = _on_standin(device_kw)

        if func in _MOVES:
            return self._move(func, args, kwargs, on, to_standin)
        if on:
            self._check_one_device(func, args, on, tensors)
        if func is aten._local_scalar_dense.default and on:
            self.syncs["item"] += 1
        if func in _VALUE_SHAPED and on:
            self.syncs[func.__name__] += 1

        plain_args = tree_map(_unwrap, args)
        plain_kwargs = tree_map(_unwrap, kwargs)
        if to_standin:
            plain_kwargs = dict(plain_kwargs, device=torch.device("cpu"))
        out = func(*plain_args, **plain_kwargs)
        if device_kw is not None:
            wrap = to_standin
        else:
            wrap = bool(on)
        if not wrap:
            return out
        if func._schema.is_mutable and on and _mutates_first(func):
            return args[0]  # an in-place operation returns the tensor it changed
        return tree_map(_wrap, out)

    def _check_one_device(self, func, args, on, tensors) -> None:
        indexing = func in _INDEXING
        for t in tensors:
            if isinstance(t, OnStandIn) or t.dim() == 0:
                continue
            if indexing and t.dtype in (torch.long, torch.int, torch.bool) and \
                    isinstance(args[0], OnStandIn):
                continue  # CPU indices into a GPU tensor are allowed
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two "
                f"devices, meta (the stand-in accelerator) and cpu! (when checking argument "
                f"for {func})")

    def _move(self, func, args, kwargs, on, to_standin):
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            if isinstance(dst, OnStandIn) != isinstance(src, OnStandIn):
                self.transfers["to stand-in" if isinstance(dst, OnStandIn) else "to cpu"] += 1
                if not isinstance(dst, OnStandIn):
                    self.syncs["copy to cpu"] += 1
            _unwrap(dst).copy_(_unwrap(src), *args[2:], **kwargs)
            return dst
        source = args[0]
        device_kw = kwargs.get("device")
        plain = dict(kwargs)
        if device_kw is not None:
            plain["device"] = torch.device("cpu")
        out = func(_unwrap(source), *args[1:], **plain)
        from_standin = isinstance(source, OnStandIn)
        goes_to_standin = to_standin or (from_standin and device_kw is None)
        if from_standin != goes_to_standin:
            self.transfers["to stand-in" if goes_to_standin else "to cpu"] += 1
            if not goes_to_standin:
                self.syncs["copy to cpu"] += 1
        return OnStandIn(out) if goes_to_standin else out


def _inference_as_no_grad(mode: bool = True):
    return torch.no_grad() if mode else contextlib.nullcontext()


def _unwrap(t):
    return t.elem if isinstance(t, OnStandIn) else t


def _wrap(t):
    return OnStandIn(t) if type(t) is torch.Tensor else t


def _mutates_first(func) -> bool:
    arguments = func._schema.arguments
    return bool(arguments) and arguments[0].alias_info is not None and \
        arguments[0].alias_info.is_write
