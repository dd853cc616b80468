"""LoRA: fine-tune a big layer by learning a small correction to it (Hu et al. 2021).

A pre-trained linear layer computes ``y = W x + b`` with a large matrix W (d_out × d_in;
384 × 384 in MiniLM's attention). Full fine-tuning learns a new W. LoRA keeps W
frozen and learns a *low-rank* change instead:

    y = W x + b + (α / r) · B A x          A: r × d_in,   B: d_out × r,   r ≪ d_in

The change ΔW = (α/r)·B A has rank at most r, and costs r·(d_in + d_out) numbers
instead of d_in·d_out: for r = 8 on a 384 × 384 layer, 6,144 instead of 147,456
(4 %). Two details make it work:

* **B starts at zero**, so ΔW = 0 and training starts from exactly the pre-trained
  function; A starts random (as an ``nn.Linear`` would), so B's first gradient,
  ∂L/∂B = (α/r)·(∂L/∂y)(A x)ᵀ, is not zero.
* **α/r scales the update**: with α fixed, changing r does not change how large
  the initial steps are, so the learning rate need not be re-tuned for each r.

`add_lora(model, r=8, alpha=16, targets=("query", "value"))` wraps every Linear
whose name ends in one of ``targets`` (the attention's query and value projections,
as in the paper), freezes everything else but the model's new head, and returns the
model; `trainable_report` then shows the few parameters that train. After training,
`merge_lora` folds ΔW into W (W ← W + (α/r)·B A), so the model runs as fast as
before with the same outputs; `unmerge_lora` takes it out again.

The names follow Hugging Face ``peft`` (``r``, ``lora_alpha`` → ``alpha``,
``target_modules`` → ``targets``, ``lora_A``, ``lora_B``); ``tests/test_lora.py``
checks outputs, gradients and parameter counts against ``peft`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from transferkit.surgery.freezing import freeze, unfreeze
from transferkit.surgery.heads import find_head, set_submodule


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B A x``, with ``base`` (an ``nn.Linear``) frozen.

    >>> layer = LoRALinear(nn.Linear(4, 3), r=2, alpha=4)
    >>> layer.lora_A.shape, layer.lora_B.shape, layer.scaling
    (torch.Size([2, 4]), torch.Size([3, 2]), 2.0)
    >>> x = torch.randn(5, 4)
    >>> torch.equal(layer(x), layer.base(x))         # B = 0: the pre-trained function
    True
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}.")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"the rank r must be a positive integer, got {r!r}.")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}.")
        self.base, self.r, self.alpha = base, r, float(alpha)
        self.scaling = self.alpha / r
        kind = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kind))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kind))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:  # code that reads layer.weight (dtype, device) still works
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α/r)·B A, the change LoRA makes to the weight matrix."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:  # ΔW is already inside W
            return y
        return y + self.scaling * ((self.dropout(x) @ self.lora_A.T) @ self.lora_B.T)

    def merge(self) -> None:
        """W ← W + ΔW: one matrix product per call again, same outputs."""
        if not self.merged:
            with torch.no_grad():
                self.base.weight += self.delta_weight()
            self.merged = True

    def unmerge(self) -> None:
        """W ← W − ΔW: back to W plus a separate, trainable B A."""
        if self.merged:
            with torch.no_grad():
                self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}{', merged' if self.merged else ''}"


def linear_names(model: nn.Module) -> list[str]:
    """The last part of every Linear layer's name (what ``targets`` can name), sorted."""
    return sorted({name.rpartition(".")[2] for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and name})


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every `LoRALinear` in ``model``, by its dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16,
             targets: Sequence[str] = ("query", "value"), *, dropout: float = 0.0,
             train_head: bool = True) -> nn.Module:
    """Wrap the Linear layers named ``targets`` in `LoRALinear`; freeze the rest.

    ``targets`` are matched against the end of each Linear's name (``"query"``
    matches ``encoder.layer.3.attention.self.query``), as peft's ``target_modules``.
    The model's head (`find_head`) is never wrapped and, with ``train_head=True``,
    stays trainable (peft's ``modules_to_save``): a new head must learn from scratch.
    Everything else, the wrapped layers' W and b included, is frozen. Modifies
    ``model`` in place and returns it.
    """
    if isinstance(targets, str):
        targets = (targets,)
    if lora_layers(model):
        raise ValueError("this model already has LoRA layers; add_lora once per model.")
    valid = linear_names(model)
    unknown = sorted(set(targets) - set(valid))
    if unknown or not targets:
        raise ValueError(f"no Linear layer of {type(model).__name__} is called "
                         f"{unknown or 'anything'}; valid targets are: {', '.join(valid)}.")
    try:
        head = find_head(model)
    except ValueError:  # an encoder without a head: nothing to keep trainable
        head = None
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and name and name != head
              and name.rpartition(".")[2] in targets]
    if not chosen:
        raise ValueError(f"the only Linear called {list(targets)} is the head ({head}); "
                         "LoRA adapts the pre-trained layers, not the new head.")
    freeze(model, bn="freeze")
    for name in chosen:
        set_submodule(model, name, LoRALinear(model.get_submodule(name), r=r, alpha=alpha,
                                              dropout=dropout))
    if head is not None and train_head:
        unfreeze(model, head)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight matrix (`LoRALinear.merge`)."""
    for layer in lora_layers(model).values():
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo `merge_lora`: the LoRA updates are separate (and trainable) again."""
    for layer in lora_layers(model).values():
        layer.unmerge()
    return model


def lora_parameter_count(model: nn.Module) -> int:
    """How many numbers the LoRA matrices hold: Σ r·(d_in + d_out) over the layers."""
    return sum(m.lora_A.numel() + m.lora_B.numel() for m in lora_layers(model).values())


__all__ = ["LoRALinear", "add_lora", "linear_names", "lora_layers", "lora_parameter_count",
           "merge_lora", "unmerge_lora"]
