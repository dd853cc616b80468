"""Freezing: which parameters train, at which learning rate, and what BatchNorm does.

1. **Freezing.** `freeze`, `unfreeze`, `freeze_to(model, n)` (groups before
   ``n`` frozen, as in fastai), by layer group (`transferkit.surgery.layer_groups`), module
   name or parameter pattern. A frozen parameter has ``requires_grad=False``
   *and* no ``.grad``, so neither momentum nor weight decay can move it. The
   BatchNorm policy says what happens to BatchNorm layers in frozen groups:
   ``bn="train"`` keeps training their scale and shift (fastai's default), and
   ``bn="freeze"`` freezes them *and* their running statistics, which then
   survive ``model.train()`` (`freeze_bn_stats`).
2. **Learning rates.** `param_groups(model, lr, decay=2.6)` gives each group its
   own learning rate (ULMFiT's discriminative rates) and no weight decay on
   biases and normalisation layers. It includes frozen parameters, so a group
   you unfreeze later is trained, not silently skipped.
3. **Looking at it.** `trainable_report(model, optimizer)`: per group, its
   parameters, how many train, BatchNorm mode and learning rate.

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

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferkit.foundations.tables import html_table
from transferkit.surgery.layer_groups import BATCHNORMS, NORMS, LayerGroup, layer_groups

ULMFIT_DECAY = 2.6  # Howard & Ruder 2018: each group down from the head gets lr / 2.6
BN_POLICIES = ("train", "freeze")


class _StayInEval:
    """Stands in for ``bn.train`` on a BatchNorm whose statistics are frozen:
    ``model.train()`` reaches this layer, and it stays in eval mode.

    A small class rather than a method bound to ``bn``, because pickle can store
    an instance of it: ``torch.save(model)`` of the whole model works, and the
    loaded model's statistics are still frozen."""

    def __init__(self, bn: nn.Module):
        self.bn = bn

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.bn, False)


def freeze_bn_stats(bn: nn.Module) -> None:
    """Keep ``bn`` in eval mode (running statistics used, never updated), even
    through a later ``model.train()``. `unfreeze_bn_stats` undoes it."""
    bn.train = _StayInEval(bn)
    bn.training = False


def unfreeze_bn_stats(bn: nn.Module, training: bool = True) -> None:
    """Let ``bn`` follow ``model.train()`` / ``model.eval()`` again."""
    vars(bn).pop("train", None)
    bn.training = training


def bn_stats_frozen(bn: nn.Module) -> bool:
    """Whether `freeze_bn_stats` holds ``bn`` in eval mode."""
    return isinstance(vars(bn).get("train"), _StayInEval)


def _freeze_parameter(p: nn.Parameter) -> None:
    p.requires_grad_(False)
    p.grad = None  # no gradient: SGD's momentum and weight decay skip the parameter


def _selection(model: nn.Module, which: Any) -> tuple[list[nn.Parameter], list[nn.Module]]:
    """The parameters and the BatchNorm layers that ``which`` names."""
    if which is None:
        return list(model.parameters()), [m for m in model.modules()
                                          if isinstance(m, BATCHNORMS)]
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
    top = [name for name, _ in model.named_children()]
    for pattern in patterns:
        found = [p for name, p in model.named_parameters() if _matches(name, pattern)]
        found_bn = [m for name, m in model.named_modules() if isinstance(m, BATCHNORMS)
                    and (_matches(name, pattern) or (any(True for _ in m.parameters()) and all(
                        _matches(f"{name}.{n}", pattern) for n, _ in m.named_parameters())))]
        if not found and not found_bn:
            raise ValueError(
                f"no parameter of {type(model).__name__} matches {pattern!r}. Its layer groups "
                f"are {[g.name for g in layer_groups(model)]} and its top-level modules "
                f"{top}; use a module name ('encoder'), a pattern ('*.bias', "
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
    return isinstance(module, NORMS) or name.endswith("bias") or p.ndim <= 1


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
        return html_table(self._COLUMNS, self._cells(), css_class="transferkit-report",
                          bold_last_row=True)


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




__all__ = [
    "BN_POLICIES", "TrainableReport", "ULMFIT_DECAY", "bn_stats_frozen", "freeze",
    "freeze_bn_stats", "freeze_to", "group_learning_rates", "no_weight_decay", "param_groups",
    "trainable_parameters", "trainable_report", "unfreeze", "unfreeze_bn_stats",
]
