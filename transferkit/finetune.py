"""Fine-tuning: reusing a pre-trained network for a new task, with freezing done right.

The recipe of the source articles is: take a network trained on something else
(the *backbone*: lesson 03's encoder, or a torchvision ResNet), put a new output
layer (the *head*) on it for your classes, freeze what you want to keep, and
train the rest on your few labels. Everything here works on any `nn.Module`,
not only on models this library built.

1. **A head on a backbone.** `Classifier(encoder, num_classes)` measures the
   encoder's output size with a dry run; `find_head` / `replace_head` find and
   swap the output layer of torchvision-style models (``fc``, ``classifier[-1]``,
   ``heads.head``, ``head``) and of your own.
2. **Layer groups.** `layer_groups(model)` splits a model into ordered groups,
   from the input to the head; freezing, learning rates and reports work per group.
3. **Freezing.** `freeze`, `unfreeze`, `freeze_to(model, n)` (groups before
   ``n`` frozen, as in fastai). A frozen parameter has ``requires_grad=False``
   *and* no ``.grad``, so neither momentum nor weight decay can move it. The
   BatchNorm policy says what happens to BatchNorm layers in frozen groups:
   ``bn="train"`` keeps training their scale and shift (fastai's default), and
   ``bn="freeze"`` freezes them *and* their running statistics, which then
   survive ``model.train()``.
4. **Learning rates.** `param_groups(model, lr, decay=2.6)` gives each group its
   own learning rate (ULMFiT's discriminative rates) and no weight decay on
   biases and normalisation layers. It includes frozen parameters, so a group
   you unfreeze later is trained, not silently skipped.
5. **Looking at it.** `trainable_report(model, optimizer)`: per group, its
   parameters, how many train, BatchNorm mode and learning rate.
6. **Features.** `extract_features(backbone, x)` runs a frozen backbone once and
   caches the result, so a linear probe trains its head on stored features.
7. **Strategies.** `fine_tune(model, train, val, strategy=...)` runs ``scratch``,
   ``linear_probe``, ``full``, ``partial``, ``gradual``, ``discriminative`` or
   ``lp_ft`` and returns the history of every stage.

The pitfalls this module rules out (each has a test):

* ``requires_grad=False`` does not stop BatchNorm's running statistics from
  moving in training mode, and a later ``model.train()`` undoes ``bn.eval()``;
* a parameter frozen mid-training keeps moving through momentum and weight decay
  if it still has a gradient tensor;
* an optimizer built only from the trainable parameters never trains a layer
  unfrozen later;
* weight decay on norm and bias parameters.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import html
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .device import pick_device, seeded
from .train import (
    _OPTIMIZERS,
    History,
    _as_xy,
    _model_device,
    eval_mode,
    fit,
    untrained_parameters,
)

ULMFIT_DECAY = 2.6  # Howard & Ruder 2018: each group down from the head gets lr / 2.6
STRATEGIES = ("scratch", "linear_probe", "full", "partial", "gradual", "discriminative",
              "lp_ft")
BN_POLICIES = ("train", "freeze")

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_BATCHNORMS = nn.modules.batchnorm._BatchNorm


# --- 1. a head on a backbone -----------------------------------------------------------


def _guess_input_shape(encoder: nn.Module) -> tuple[int, ...]:
    shape = getattr(encoder, "in_shape", None)  # transferkit's Encoder says it
    if shape is not None:
        return tuple(int(s) for s in shape)
    first = next((m for m in encoder.modules() if any(True for _ in m.parameters(False))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError(
        f"cannot tell what input the encoder takes (its first layer is "
        f"{type(first).__name__ if first is not None else 'missing'}). Pass the shape of one "
        "example, e.g. input_shape=(3, 32, 32) for small colour images."
    )


def feature_size(encoder: nn.Module, input_shape: Sequence[int] | None = None) -> int:
    """How many numbers ``encoder`` outputs per example, found by running it once.

    ``input_shape`` is the shape of one example (without the batch); by default it
    is read from the encoder (``in_shape``, or the first layer if it is a Linear).
    The dry run uses a batch of two zero inputs, in eval mode and without
    gradients, so the encoder's weights, BatchNorm statistics and modes are untouched.

    >>> feature_size(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)))
    8
    """
    shape = tuple(input_shape) if input_shape is not None else _guess_input_shape(encoder)
    dummy = torch.zeros(2, *shape, device=_model_device(encoder))
    with eval_mode(encoder), torch.no_grad():
        try:
            out = encoder(dummy)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"the encoder could not process inputs of shape {shape}: {err}\n"
                             "Pass the shape of one example as input_shape=(...).") from None
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise ValueError(f"the encoder must return a tensor (batch, features...), got "
                         f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}.")
    return int(out[0].numel())


class Classifier(nn.Module):
    """A new classification head on a (pre-trained) encoder: ``head(encoder(x))``.

    The source article writes ``nn.Linear(encoder.out_features, num_classes)``,
    which fails for an ``nn.Sequential`` encoder (it has no ``out_features``).
    Here the size is measured with a dry run (`feature_size`); a feature map
    (batch, C, H, W) is flattened before the head.

    Layer groups (`layer_groups`): the encoder's layers, then the head.

    >>> enc = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    >>> Classifier(enc, 10).head
    Linear(in_features=8, out_features=10, bias=True)
    """

    def __init__(self, encoder: nn.Module, num_classes: int, *,
                 input_shape: Sequence[int] | None = None):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}.")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}.")
        self.encoder = encoder
        self.features = feature_size(encoder, input_shape)
        self.head = nn.Linear(self.features, num_classes).to(_model_device(encoder))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).flatten(1))

    def layer_groups(self) -> list[LayerGroup]:
        return [*_default_groups(self.encoder, "encoder", has_head=False),
                LayerGroup("head", [("head", self.head)])]


_HEAD_NAMES = ("head", "fc", "heads.head", "heads", "classifier")


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def find_head(model: nn.Module) -> str:
    """The dotted name of ``model``'s output layer (a Linear).

    Looks for torchvision's names first: ``head`` (Swin, this module's
    `Classifier`), ``fc`` (ResNet), ``heads.head`` (ViT), ``classifier[-1]``
    (MobileNet, EfficientNet, ConvNeXt); otherwise the last Linear registered
    in the model.

    >>> find_head(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    '2'
    """
    for name in _HEAD_NAMES:
        module = _submodule(model, name)
        if isinstance(module, nn.Linear):
            return name
        if isinstance(module, nn.Sequential):
            linears = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
            if linears:
                return f"{name}.{linears[-1]}"
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer, so it has no head to "
                         "find. Name it: replace_head(model, n, name='...').")
    return linears[-1]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def replace_head(model: nn.Module, num_classes: int, *, name: str | None = None) -> nn.Linear:
    """Put a new, untrained ``Linear(in_features, num_classes)`` where the head was.

    ``name`` is the head's dotted name (default: `find_head`). The new layer
    lives on the old one's device and is trainable; returns it.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1000))
    >>> replace_head(net, 10)
    Linear(in_features=8, out_features=10, bias=True)
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    name = find_head(model) if name is None else name
    old = _submodule(model, name)
    if not isinstance(old, nn.Linear):
        found = "nothing" if old is None else f"a {type(old).__name__}"
        raise ValueError(f"{name!r} in {type(model).__name__} is {found}, not a Linear layer; "
                         "give the head's name with name='...' or replace it by hand.")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    _set_submodule(model, name, new)
    return new


@contextlib.contextmanager
def without_head(model: nn.Module, name: str | None = None) -> Iterator[nn.Module]:
    """``with without_head(model):`` the model's head is an ``nn.Identity``, so the
    model outputs the features the head would see. The head is put back after."""
    name = find_head(model) if name is None else name
    head = model.get_submodule(name)
    _set_submodule(model, name, nn.Identity())
    try:
        yield model
    finally:
        _set_submodule(model, name, head)


# --- 2. layer groups -------------------------------------------------------------------


@dataclass
class LayerGroup:
    """Consecutive layers that are frozen, unfrozen and given a learning rate together."""

    name: str
    modules: list[tuple[str, nn.Module]]  # (dotted name in the model, module)

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(_join(prefix, name), p) for prefix, module in self.modules
                for name, p in module.named_parameters()]

    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters()]

    def batchnorms(self) -> list[nn.Module]:
        return [m for _, module in self.modules for m in module.modules()
                if isinstance(m, _BATCHNORMS)]

    def layer_names(self) -> str:
        return ", ".join(type(m).__name__ for _, m in self.modules)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _chain(prefix: str, children: Iterable[tuple[str, nn.Module]]) -> list[LayerGroup]:
    """Children in order; a layer without parameters, or a normalisation layer,
    joins the group before it (a ReLU or BatchNorm belongs to its Linear/Conv)."""
    groups: list[LayerGroup] = []
    pending: list[tuple[str, nn.Module]] = []
    for name, child in children:
        full = _join(prefix, name)
        starts_group = _has_parameters(child) and not (groups and isinstance(child, _NORMS))
        if starts_group:
            groups.append(LayerGroup(full, [*pending, (full, child)]))
            pending = []
        elif groups:
            groups[-1].modules.append((full, child))
        else:
            pending.append((full, child))
    return groups


def _default_groups(model: nn.Module, prefix: str = "", has_head: bool = True
                    ) -> list[LayerGroup]:
    groups = _chain(prefix, model.named_children())
    # One big body (MobileNet's `features`, an encoder's `layers`): split it into its layers.
    # The last group of a model with a head is left whole: it holds the head.
    while len(groups) < 3:
        bodies = [i for i, g in enumerate(groups[:-1] if has_head else groups)
                  if isinstance(g.modules[0][1], (nn.Sequential, nn.ModuleList))
                  and not any(_has_parameters(m) for _, m in g.modules[1:])
                  and len(_chain("", g.modules[0][1].named_children())) > 1]
        if not bodies:
            break
        i = max(bodies, key=lambda j: len(groups[j].parameters()))
        (name, body), *rest = groups[i].modules
        parts = _chain(name, body.named_children())
        parts[-1].modules += rest  # e.g. the pooling after MobileNet's features
        groups[i:i + 1] = parts
    own = list(model.named_parameters(recurse=False))
    if own:  # e.g. ViT's class token: parameters of the model itself, not of a layer
        groups.insert(0, LayerGroup(prefix or "(own)", [(prefix, _OwnParameters(own))]))
    return groups


class _OwnParameters(nn.Module):
    """Stands for the parameters a model holds directly (not inside a layer)."""

    def __init__(self, params: list[tuple[str, nn.Parameter]]):
        super().__init__()
        self._own = params

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate=True):
        return iter(self._own)

    def parameters(self, recurse: bool = True):
        return iter(p for _, p in self._own)


def _explicit_groups(model: nn.Module, split: Sequence[Any]) -> list[LayerGroup]:
    names = {module: name for name, module in model.named_modules()}
    groups = []
    for entry in split:
        items = [entry] if isinstance(entry, (str, nn.Module)) else list(entry)
        modules = []
        for item in items:
            if isinstance(item, str):
                module = _submodule(model, item)
                if module is None:
                    raise ValueError(f"no module {item!r} in {type(model).__name__}; its "
                                     f"top-level modules are {_top_names(model)}.")
                modules.append((item, module))
            elif isinstance(item, nn.Module) and item in names:
                modules.append((names[item], item))
            else:
                raise ValueError("each group in split must be module names or modules of the "
                                 f"model; got {type(item).__name__}.")
        groups.append(LayerGroup(modules[0][0] or "(model)", modules))
    return groups


def _top_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


def layer_groups(model: nn.Module, split: Sequence[Any] | None = None) -> list[LayerGroup]:
    """The model's layer groups, ordered from the input to the head.

    * Default: the model's top-level layers in order; layers without parameters
      and normalisation layers join the group before them; a model that is one
      big body (a single ``Sequential``) is split into its layers; the group
      holding the head (`find_head`) comes last. A model with a
      ``layer_groups()`` method (like `Classifier`) chooses its own.
    * ``split``: your own groups, as a list whose entries are a module name
      (``"layer4"``), a module, or a list of those.

    Every parameter must belong to exactly one group.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    >>> [(g.name, g.layer_names()) for g in layer_groups(net)]
    [('0', 'Linear, BatchNorm1d, ReLU'), ('3', 'Linear')]
    """
    if split is not None:
        groups = _explicit_groups(model, split)
    elif callable(getattr(model, "layer_groups", None)):
        groups = model.layer_groups()
    else:
        groups = _default_groups(model)
        with contextlib.suppress(ValueError):
            head = model.get_submodule(find_head(model))
            at = [i for i, g in enumerate(groups)
                  if any(m is head for _, mod in g.modules for m in mod.modules())]
            if at and at[0] != len(groups) - 1:  # registered early, but applied last
                groups.append(groups.pop(at[0]))
    _check_cover(model, groups)
    return groups


def _check_cover(model: nn.Module, groups: list[LayerGroup]) -> None:
    seen: dict[int, str] = {}
    for group in groups:
        for _, p in group.named_parameters():
            if id(p) in seen and seen[id(p)] != group.name:
                raise ValueError(f"a parameter is in two groups, {seen[id(p)]!r} and "
                                 f"{group.name!r}; each parameter must be in one group.")
            seen[id(p)] = group.name
    missing = [name for name, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise ValueError(f"these parameters are in no layer group: {', '.join(missing[:8])}"
                         f"{' …' if len(missing) > 8 else ''}. Add their modules to split.")
    if not groups:
        raise ValueError(f"{type(model).__name__} has no parameters, so no layer groups.")


# --- 3. freezing -------------------------------------------------------------------------


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Stands in for ``train`` on a BatchNorm whose statistics are frozen:
    ``model.train()`` reaches this layer, and it stays in eval mode."""
    return nn.Module.train(self, False)


def freeze_bn_stats(bn: nn.Module) -> None:
    """Keep ``bn`` in eval mode (running statistics used, never updated), even
    through a later ``model.train()``. `unfreeze_bn_stats` undoes it."""
    bn.train = types.MethodType(_stay_in_eval, bn)
    bn.training = False


def unfreeze_bn_stats(bn: nn.Module, training: bool = True) -> None:
    """Let ``bn`` follow ``model.train()`` / ``model.eval()`` again."""
    vars(bn).pop("train", None)
    bn.training = training


def bn_stats_frozen(bn: nn.Module) -> bool:
    """Whether `freeze_bn_stats` holds ``bn`` in eval mode."""
    return "train" in vars(bn)


def _freeze_parameter(p: nn.Parameter) -> None:
    p.requires_grad_(False)
    p.grad = None  # no gradient: SGD's momentum and weight decay skip the parameter


def _selection(model: nn.Module, which: Any) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """The parameters and the BatchNorm layers that ``which`` names."""
    if which is None:
        return list(model.parameters()), [m for m in model.modules()
                                          if isinstance(m, _BATCHNORMS)]
    if isinstance(which, (str, int, slice)):
        which = [which]
    which = list(which)
    if all(isinstance(w, str) for w in which):
        return _by_pattern(model, which)
    groups = layer_groups(model)
    chosen: list[LayerGroup] = []
    for w in which:
        if isinstance(w, slice):
            chosen += groups[w]
        elif isinstance(w, int) and not isinstance(w, bool) and -len(groups) <= w < len(groups):
            chosen.append(groups[w])
        else:
            raise ValueError(f"{w!r} is not a layer group: the model has {len(groups)} groups "
                             f"(0 … {len(groups) - 1}, or -1 for the head): "
                             f"{[g.name for g in groups]}. Names and patterns work too.")
    return ([p for g in chosen for p in g.parameters()],
            [bn for g in chosen for bn in g.batchnorms()])


def _matches(name: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.startswith(pattern + ".")


def _by_pattern(model: nn.Module, patterns: list[str]) -> tuple[list, list]:
    params, bns = [], []
    for pattern in patterns:
        found = [p for name, p in model.named_parameters() if _matches(name, pattern)]
        found_bn = [m for name, m in model.named_modules() if isinstance(m, _BATCHNORMS)
                    and (_matches(name, pattern) or (any(True for _ in m.parameters()) and all(
                        _matches(f"{name}.{n}", pattern) for n, _ in m.named_parameters())))]
        if not found and not found_bn:
            raise ValueError(
                f"no parameter of {type(model).__name__} matches {pattern!r}. Its layer groups "
                f"are {[g.name for g in layer_groups(model)]} and its top-level modules "
                f"{_top_names(model)}; use a module name ('encoder'), a pattern ('*.bias', "
                "'layer4.*') or a group index."
            )
        params += found
        bns += found_bn
    return params, bns


def freeze(model: nn.Module, which: Any = None, *, bn: str = "train") -> nn.Module:
    """Freeze parameters: they get ``requires_grad=False`` and lose their ``.grad``.

    ``which``: None for the whole model (the articles' ``for p in
    model.parameters(): p.requires_grad = False``); a group index, slice or list
    of indices (`layer_groups`); or module names / parameter-name patterns
    (``"encoder"``, ``"layer4.*"``, ``"*.bias"``).

    ``bn``, for the BatchNorm layers selected:

    * ``"train"`` (default, as in fastai): their scale and shift keep training and
      their running statistics keep adapting to the new data;
    * ``"freeze"``: their parameters are frozen too, and their statistics are
      frozen in a way that survives ``model.train()`` (`freeze_bn_stats`).

    Returns the model.
    """
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {BN_POLICIES}, got {bn!r}.")
    params, bns = _selection(model, which)
    bn_params = {id(p) for m in bns for p in m.parameters()}
    for p in params:
        if bn == "train" and id(p) in bn_params:
            p.requires_grad_(True)
        else:
            _freeze_parameter(p)
    for m in bns:
        if bn == "freeze":
            freeze_bn_stats(m)
        elif bn_stats_frozen(m):
            unfreeze_bn_stats(m, training=model.training)
    return model


def unfreeze(model: nn.Module, which: Any = None) -> nn.Module:
    """Make parameters trainable again (``which`` as in `freeze`; None = all),
    and let the BatchNorm layers among them follow ``model.train()`` again."""
    params, bns = _selection(model, which)
    for p in params:
        p.requires_grad_(True)
    for m in bns:
        unfreeze_bn_stats(m, training=model.training)
    return model


def freeze_to(model: nn.Module, n: int, *, bn: str = "train") -> nn.Module:
    """Freeze the groups before group ``n`` and unfreeze group ``n`` onwards (fastai).

    ``n`` may be negative: ``freeze_to(model, -1)`` trains only the head,
    ``freeze_to(model, -2)`` the head and the group below it, ``freeze_to(model, 0)``
    everything.
    """
    groups = layer_groups(model)
    if not isinstance(n, int) or isinstance(n, bool) or not -len(groups) <= n <= len(groups):
        raise ValueError(f"n must be an integer from {-len(groups)} to {len(groups)} "
                         f"(the model has {len(groups)} layer groups), got {n!r}.")
    n = n % len(groups) if n < 0 else n
    if n < len(groups):
        unfreeze(model, list(range(n, len(groups))))
    if n > 0:
        freeze(model, list(range(n)), bn=bn)
    return model


def trainable_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that will train (``requires_grad=True``)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


# --- 4. learning rates and weight decay --------------------------------------------------


def no_weight_decay(module: nn.Module, name: str, p: nn.Parameter) -> bool:
    """Biases, normalisation layers' scale and shift, and other 1-D parameters
    get no weight decay: shrinking them toward 0 does not regularise, it only
    shifts or rescales every activation."""
    return isinstance(module, _NORMS) or name.endswith("bias") or p.ndim <= 1


def group_learning_rates(n_groups: int, lr: float | tuple[float, float],
                         decay: float | None = None) -> list[float]:
    """The learning rate of each of ``n_groups`` groups, input to head.

    ``lr`` a number: the head's rate, divided by ``decay`` once per group going
    down (ULMFIT_DECAY = 2.6); no decay means every group gets ``lr``.
    ``lr=(low, high)``: rates spaced geometrically from ``low`` (first group) to
    ``high`` (head), as fastai's ``slice(low, high)``.

    >>> [round(r, 6) for r in group_learning_rates(3, 1e-3, decay=2.6)]
    [0.000148, 0.000385, 0.001]
    >>> group_learning_rates(3, (1e-5, 1e-3))
    [1e-05, 0.0001, 0.001]
    """
    if isinstance(lr, (tuple, list)):
        if decay is not None:
            raise ValueError("give either lr=(low, high) or decay=, not both.")
        low, high = (float(v) for v in lr)
        if not 0 < low <= high:
            raise ValueError(f"lr=(low, high) needs 0 < low ≤ high, got {tuple(lr)}.")
        if n_groups == 1:
            return [high]
        return [float(f"{low * (high / low) ** (i / (n_groups - 1)):.12g}")
                for i in range(n_groups)]
    if not float(lr) > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    if decay is not None and not float(decay) >= 1:
        raise ValueError(f"decay divides the rate per group, so it must be ≥ 1, got {decay!r}.")
    factor = 1.0 if decay is None else float(decay)
    return [float(lr) / factor ** (n_groups - 1 - i) for i in range(n_groups)]


def param_groups(
    model: nn.Module,
    lr: float | tuple[float, float],
    *,
    decay: float | None = None,
    weight_decay: float = 0.0,
    groups: Sequence[LayerGroup] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: a learning rate per layer group, no decay on norms/biases.

    Pass the result to any `torch.optim` optimizer: ``torch.optim.AdamW(
    param_groups(model, 1e-3, decay=2.6, weight_decay=0.01))``. Each layer group
    gives up to two optimizer groups, one with ``weight_decay`` and one with 0
    (`no_weight_decay`), each labelled with ``"group"``.

    Frozen parameters are included (they have no gradient, so the optimizer
    skips them): when you unfreeze them later, this optimizer trains them.
    """
    groups = list(layer_groups(model) if groups is None else groups)
    rates = group_learning_rates(len(groups), lr, decay)
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    result = []
    for group, rate in zip(groups, rates, strict=True):
        decayed, plain = [], []
        for name, p in group.named_parameters():
            (plain if no_weight_decay(owners.get(id(p), model), name, p) else decayed).append(p)
        for params, wd in ((decayed, weight_decay), (plain, 0.0)):
            if params:
                result.append({"params": params, "lr": rate, "weight_decay": wd,
                               "group": group.name})
    return result


# --- 5. the trainable report ----------------------------------------------------------


def _bn_mode(group: LayerGroup) -> str:
    bns = group.batchnorms()
    if not bns:
        return "—"
    frozen = sum(bn_stats_frozen(m) for m in bns)
    if frozen == len(bns):
        return "frozen stats"
    if frozen == 0:
        return "train"
    return f"{frozen} of {len(bns)} frozen"


def _format_lr(rates: set[float]) -> str:
    return " / ".join(f"{r:.3g}" for r in sorted(rates))


@dataclass
class TrainableReport:
    """What will train, per layer group. Shows as a table in a notebook, as text in print."""

    rows: list[dict[str, Any]]
    totals: dict[str, Any] = field(default_factory=dict)

    _COLUMNS = ("group", "layers", "parameters", "trainable", "batchnorm", "lr")

    def to_rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]

    def _cells(self) -> list[list[str]]:
        lines = [[str(row[c]) if not isinstance(row[c], int) else f"{row[c]:,}"
                  for c in self._COLUMNS] for row in self.rows]
        lines.append(["total", "", f"{self.totals['parameters']:,}",
                      f"{self.totals['trainable']:,}", "", ""])
        return lines

    def __str__(self) -> str:
        cells = [list(self._COLUMNS), *self._cells()]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self._COLUMNS))]
        text = [" | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                for line in cells]
        text.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(text)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in self._COLUMNS)
        body = []
        for i, line in enumerate(self._cells()):
            style = " style='font-weight:bold'" if i == len(self.rows) else ""
            body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(v)}</td>" for v in line)
                        + "</tr>")
        return (f"<table class='transferkit-report'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")


def trainable_report(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                     groups: Sequence[LayerGroup] | None = None) -> TrainableReport:
    """Per layer group: its layers, parameters, how many will train, the mode of its
    BatchNorm layers ("train" or "frozen stats") and, given the ``optimizer``,
    its learning rate ("not in optimizer" for trainable parameters the optimizer
    lacks: they would never change)."""
    groups = list(layer_groups(model) if groups is None else groups)
    rates: dict[int, float] = {}
    if optimizer is not None:
        rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    rows = []
    for group in groups:
        params = group.parameters()
        trainable = [p for p in params if p.requires_grad]
        if optimizer is None:
            lr = "—"
        elif any(id(p) not in rates for p in trainable):
            lr = "not in optimizer"
        else:
            lr = _format_lr({rates[id(p)] for p in params if id(p) in rates}) or "—"
        rows.append({"group": group.name, "layers": group.layer_names(),
                     "parameters": sum(p.numel() for p in params),
                     "trainable": sum(p.numel() for p in trainable),
                     "batchnorm": _bn_mode(group), "lr": lr})
    totals = {"parameters": sum(r["parameters"] for r in rows),
              "trainable": sum(r["trainable"] for r in rows)}
    return TrainableReport(rows, totals)


# --- 6. features of a frozen backbone -------------------------------------------------------

FEATURE_CACHE_BYTES = 512 * 2**20
_FEATURE_CACHE: OrderedDict[str, torch.Tensor] = OrderedDict()


def _fingerprint(tensors: Iterable[torch.Tensor], extra: str = "") -> str:
    digest = hashlib.blake2b(extra.encode(), digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def clear_feature_cache() -> None:
    """Forget every cached feature matrix."""
    _FEATURE_CACHE.clear()


def extract_features(backbone: nn.Module, x: torch.Tensor, *, batch_size: int = 512,
                     cache: bool = True) -> torch.Tensor:
    """``backbone(x)`` in eval mode without gradients, one row of features per example.

    Runs a batch at a time on the backbone's device and returns a CPU tensor
    (flattened to ``(n, features)``). With ``cache=True`` the result is kept, keyed
    by the *contents* of the weights and of ``x``: the same frozen backbone on the
    same inputs is not run again, while a backbone whose weights changed is.
    That is what makes a linear probe cheap: its head trains for many epochs on
    features computed once. (The cache keeps at most FEATURE_CACHE_BYTES;
    `clear_feature_cache` empties it.)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor of inputs, got {type(x).__name__}.")
    key = None
    if cache:
        key = _fingerprint([*backbone.state_dict().values(), x], type(backbone).__name__)
        if key in _FEATURE_CACHE:
            _FEATURE_CACHE.move_to_end(key)
            return _FEATURE_CACHE[key].clone()
    device = _model_device(backbone)
    with eval_mode(backbone), torch.no_grad():
        parts = [backbone(x[i:i + batch_size].to(device)).flatten(1).float().cpu()
                 for i in range(0, len(x), batch_size)]
    features = torch.cat(parts)
    if key is not None and features.numel() * 4 <= FEATURE_CACHE_BYTES:
        _FEATURE_CACHE[key] = features
        while sum(f.numel() * 4 for f in _FEATURE_CACHE.values()) > FEATURE_CACHE_BYTES:
            _FEATURE_CACHE.popitem(last=False)
        return features.clone()
    return features


def feature_drift(before: torch.Tensor, after: torch.Tensor) -> float:
    """How far features moved: ‖F_after − F_before‖ / ‖F_before‖ (Frobenius norms).

    0 means the backbone computes exactly what it did; 1 means the change is as
    large as the features themselves.

    >>> feature_drift(torch.ones(4, 2), torch.ones(4, 2) * 1.5)
    0.5
    """
    if before.shape != after.shape:
        raise ValueError(f"feature matrices differ in shape: {tuple(before.shape)} vs "
                         f"{tuple(after.shape)}.")
    return float((after - before).norm() / before.norm().clamp_min(1e-12))


# --- 7. strategies -------------------------------------------------------------------------


@dataclass
class Stage:
    """One stage of a strategy: what trained, at which rate, and its `History`."""

    name: str
    trainable: list[str]  # layer groups that trained
    lr: float
    history: History
    params: int = 0  # trainable parameters in this stage


@dataclass
class FineTuneResult:
    """What `fine_tune` did: its stages and how far the backbone's features moved."""

    strategy: str
    stages: list[Stage]
    feature_drift: float | None = None

    def to_rows(self) -> list[dict[str, Any]]:
        """Every epoch of every stage, numbered on from stage to stage."""
        rows, offset = [], 0
        for stage in self.stages:
            for row in stage.history.to_rows():
                rows.append({**row, "epoch": offset + row["epoch"], "stage": stage.name})
            offset += len(stage.history)
        return rows

    def last(self) -> dict[str, Any]:
        return self.to_rows()[-1]

    def cost(self) -> dict[str, float]:
        """What the run cost: ``epochs`` (all stages), ``seconds`` (of training;
        a cached probe's feature extraction is not in it), ``seconds_per_epoch``
        (their mean) and ``trainable_params`` (the most any stage trained)."""
        seconds = [s for stage in self.stages for s in stage.history["seconds"]]
        return {"epochs": len(seconds), "seconds": sum(seconds),
                "seconds_per_epoch": sum(seconds) / max(len(seconds), 1),
                "trainable_params": max((stage.params for stage in self.stages), default=0)}

    def to_figure(self, title: str | None = None):
        from .plots import history_figure

        rows = [{k: v for k, v in row.items() if k != "stage"} for row in self.to_rows()]
        fig = history_figure(rows, title=title or f"fine-tuning: {self.strategy}")
        offset = 0
        for stage in self.stages[:-1]:
            offset += len(stage.history)
            fig.add_vline(x=offset + 0.5, line_dash="dot", line_color="#888")
        return fig

    def __repr__(self) -> str:
        stages = ", ".join(f"{s.name} ({len(s.history)} epochs)" for s in self.stages)
        drift = "" if self.feature_drift is None else f", feature drift {self.feature_drift:.3f}"
        return f"FineTuneResult({self.strategy}: {stages}{drift})"


def _optimizer_class(optimizer: Any) -> Callable[..., torch.optim.Optimizer]:
    if isinstance(optimizer, str):
        if optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(_OPTIMIZERS)} "
                             "or a torch.optim class.")
        return _OPTIMIZERS[optimizer.lower()][0]
    if isinstance(optimizer, torch.optim.Optimizer) or not callable(optimizer):
        raise TypeError("fine_tune builds an optimizer per stage: pass a name ('adam') or a "
                        "torch.optim class / functools.partial, not an optimizer instance.")
    return optimizer


def reset_parameters(model: nn.Module) -> nn.Module:
    """Re-initialise every layer that knows how (``reset_parameters``), including
    BatchNorm's running statistics: the architecture without what it learned."""
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return model


def check_strategy(strategy: str) -> None:
    """Refuse a strategy name that is not one of `STRATEGIES`, listing them."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")


def strategy_stages(strategy: str, n_groups: int, *, k: int = 2,
                    decay: float = ULMFIT_DECAY) -> list[tuple[str, int]]:
    """The stages of ``strategy`` on a model with ``n_groups`` layer groups, as
    ``(stage name, index of the first trainable group)``: that group and every
    group above it train, the ones below are frozen.

    >>> strategy_stages("lp_ft", 4)
    [('linear probe', 3), ('fine-tune all', 0)]
    >>> strategy_stages("gradual", 3)
    [('top 1 of 3 groups', 2), ('top 2 of 3 groups', 1), ('top 3 of 3 groups', 0)]
    """
    check_strategy(strategy)
    if strategy == "partial" and not (isinstance(k, int) and 1 <= k <= n_groups):
        raise ValueError(f"partial trains the top k groups: k must be 1 … {n_groups}, got {k!r}.")
    probe = ("linear probe", n_groups - 1)
    return {
        "scratch": [("from scratch", 0)],
        "linear_probe": [probe],
        "full": [("fine-tune all", 0)],
        "partial": [(f"top {k} groups", n_groups - k)],
        "gradual": [(f"top {t} of {n_groups} groups", n_groups - t)
                    for t in range(1, n_groups + 1)],
        "discriminative": [(f"all groups, lr ÷{decay:g} per group", 0)],
        "lp_ft": [probe, ("fine-tune all", 0)],
    }[strategy]


def set_trainable(model: nn.Module, strategy: str, stage: int = 0, *, k: int = 2,
                  bn: str = "train") -> nn.Module:
    """Freeze and unfreeze ``model`` as stage ``stage`` of ``strategy`` trains it.

    A linear probe freezes everything but the head, BatchNorm statistics
    included; the other stages use `freeze_to` with the ``bn`` policy.
    `trainable_report(model)` then shows what that stage will train.
    """
    stages = strategy_stages(strategy, len(layer_groups(model)), k=k)
    if not -len(stages) <= stage < len(stages):
        raise ValueError(f"{strategy} has {len(stages)} stage(s); stage {stage} does not exist.")
    name, first = stages[stage]
    if name == "linear probe":
        freeze(model, bn="freeze")
        unfreeze(model, find_head(model))
    else:
        freeze_to(model, first, bn=bn)
    return model


def fine_tune(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    strategy: str = "lp_ft",
    epochs: int = 10,
    lr: float = 1e-3,
    head_lr: float | None = None,
    probe_epochs: int | None = None,
    k: int = 2,
    decay: float = ULMFIT_DECAY,
    optimizer: Any = "adam",
    weight_decay: float = 0.0,
    batch_size: int = 64,
    bn: str = "train",
    cache: bool = True,
    seed: int | None = 0,
    progress: bool = True,
    **fit_options: Any,
) -> FineTuneResult:
    """Fine-tune ``model`` (a backbone with a head, e.g. a `Classifier`) in place.

    Strategies (stages run one after the other, each with a fresh optimizer
    built by `param_groups`, so every unfrozen parameter is in it):

    ==================  ====================================================================
    ``scratch``         re-initialise every layer (`reset_parameters`), train everything
    ``linear_probe``    train only the head on the frozen backbone's features (cached)
    ``full``            train everything from the pre-trained weights
    ``partial``         train the top ``k`` layer groups (the head counts), freeze the rest
    ``gradual``         head first, then unfreeze one more group per stage (ULMFiT)
    ``discriminative``  train everything, the rate divided by ``decay`` per group down
    ``lp_ft``           linear probe, then ``full`` from the probed head (Kumar et al.)
    ==================  ====================================================================

    Args:
        epochs: epochs per stage (``gradual`` has one stage per group).
        lr: the learning rate of stages that train the backbone.
        head_lr: the rate of the linear-probe stage (a lone linear head can take
            a larger step); default ``10 * lr``.
        probe_epochs: epochs of the linear-probe stage (default ``epochs``).
        bn: the BatchNorm policy of frozen groups (see `freeze`). A linear probe
            always freezes the whole backbone, BatchNorm statistics included:
            that is what makes its features fixed, and cacheable.
        cache: train a linear probe on cached features (`extract_features`)
            instead of running the backbone every epoch.
        fit_options: passed to `transferkit.train.fit` (``early_stopping``,
            ``live_plot``, ``device`` …).

    Returns a `FineTuneResult`; with ``val``, its ``feature_drift`` says how far
    the backbone's features of the validation inputs moved (`feature_drift`).
    """
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {BN_POLICIES}, got {bn!r}.")
    groups = layer_groups(model)
    plan = strategy_stages(strategy, len(groups), k=k, decay=decay)
    opt_class = _optimizer_class(optimizer)
    x, y = _as_xy(train, "train")
    head_name = find_head(model)
    head_lr = 10 * lr if head_lr is None else head_lr
    probe_epochs = epochs if probe_epochs is None else probe_epochs

    def features(inputs: torch.Tensor, use_cache: bool = cache) -> torch.Tensor:
        with without_head(model, head_name):
            return extract_features(model, inputs, cache=use_cache)

    # Every stage trains on this device (fit's choice); a probe trains the head alone, so
    # the whole model moves first, or the head and the backbone could end up apart.
    device = fit_options.get("device")
    model.to(pick_device(None if device is None else str(device)))
    x_val = _as_xy(val, "val")[0] if val is not None else None
    before = features(x_val) if x_val is not None and strategy != "scratch" else None
    if strategy == "scratch":
        with seeded(seed) if seed is not None else contextlib.nullcontext():
            reset_parameters(model)

    stages: list[Stage] = []
    for i, (name, first) in enumerate(plan):
        set_trainable(model, strategy, i, k=k, bn=bn)
        probing = name == "linear probe"
        rate = head_lr if probing or (strategy == "gradual" and i == 0) else lr
        # discriminative: the rate is divided by `decay` per group down from the head
        rates = dict(decay=decay) if strategy == "discriminative" else {}
        run_on, train_on, val_on = model, train, val
        if probing and cache:  # the backbone is fixed: train the head on its stored features
            run_on = model.get_submodule(head_name)
            train_on = (features(x), y)
            val_on = (features(x_val), _as_xy(val, "val")[1]) if val is not None else None
        opt = opt_class(param_groups(run_on, rate, weight_decay=weight_decay, **rates))
        history = fit(run_on, train_on, val_on, epochs=probe_epochs if probing else epochs,
                      optimizer=opt, batch_size=batch_size, seed=seed, progress=progress,
                      **fit_options)
        n_params = sum(p.numel() for p in run_on.parameters() if p.requires_grad)
        stages.append(Stage(name, [g.name for g in groups[first:]], rate, history, n_params))

    drift = None
    if before is not None:  # how far the pre-trained features moved
        drift = feature_drift(before, features(x_val, use_cache=False))
    return FineTuneResult(strategy, stages, drift)


def finetune_method(make_model: Callable[[], nn.Module], strategy: str, *, steps: int = 300,
                    probe_steps: int | None = None, batch_size: int = 64, use_val: bool = True,
                    **options: Any) -> Callable[..., nn.Module]:
    """A `transferkit.experiments` study method: build a fresh model, `fine_tune` it.

    ``make_model()`` must return a *new* model each time (e.g. a `Classifier` on a
    ``copy.deepcopy`` of the pre-trained encoder), so no trial sees another's
    training. Training lengths are counted in optimizer steps, so a trial with 10
    labels and one with 1,000 get the same number of updates: the epochs follow
    from ``steps`` and the labelled subset's size
    (`transferkit.experiments.epochs_for_steps`); ``probe_steps`` is the length
    of a linear-probe stage (default ``steps``). ``options`` go to `fine_tune`
    (``lr``, ``head_lr``, ``bn`` …). The model's ``measurements`` hold the feature
    drift (on the validation inputs) and the cost (`FineTuneResult.cost`: trainable
    parameters, seconds per epoch), which `label_budget_study` adds to its rows.

    ``use_val=False`` trains for the set number of steps without looking at the
    validation set (no measurement every epoch, no best epoch kept, no drift):
    much faster with a few labels, and the validation set is left to score the
    finished model, e.g. in a `transferkit.selection.search`.
    """
    from .experiments import epochs_for_steps

    check_strategy(strategy)  # now, not in the first trial
    for taken in ("epochs", "probe_epochs", "seed", "progress"):
        if taken in options:
            raise ValueError(f"finetune_method sets {taken!r} itself; leave it out.")

    def method(train: Any, val: Any, seed: int) -> nn.Module:
        with seeded(seed):  # the same new head for a seed; your RNG is left alone
            model = make_model()
            epochs = epochs_for_steps(len(train), batch_size, steps)
            probe_epochs = epochs_for_steps(len(train), batch_size, probe_steps or steps)
            result = fine_tune(model, train, val if use_val else None, strategy=strategy,
                               epochs=epochs, probe_epochs=probe_epochs, batch_size=batch_size,
                               seed=seed, progress=False, **options)
        cost = result.cost()
        model.measurements = {"feature_drift": result.feature_drift,
                              "trainable_params": cost["trainable_params"],
                              "seconds_per_epoch": cost["seconds_per_epoch"]}
        return model

    method.__name__ = strategy
    return method


__all__ = [
    "BN_POLICIES", "Classifier", "FineTuneResult", "LayerGroup", "STRATEGIES", "Stage",
    "TrainableReport", "ULMFIT_DECAY", "bn_stats_frozen", "check_strategy", "clear_feature_cache",
    "extract_features", "feature_drift", "feature_size", "find_head", "fine_tune",
    "finetune_method", "freeze", "freeze_bn_stats", "freeze_to", "group_learning_rates",
    "layer_groups", "no_weight_decay", "param_groups", "replace_head", "reset_parameters",
    "set_trainable", "strategy_stages", "trainable_parameters", "trainable_report", "unfreeze",
    "unfreeze_bn_stats", "untrained_parameters", "without_head",
]
