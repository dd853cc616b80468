"""Fine-tuning strategies as data: what each one trains, stage by stage.

Every way of fine-tuning a pre-trained network answers the same question: *which
parameters train, and in how many stages?* Here each strategy is a small record in
`TABLE`, and four functions read it; `transferkit.methods.finetune.fine_tune` runs the stages,
the command line (``transferkit finetune``) and lesson 07's transformer methods
(`transferkit.text.finetune`) call the same functions.

==================  ====================================================================
``scratch``         re-initialise every layer (`reset_parameters`), train everything
``linear_probe``    train only the head, on the frozen backbone's features
``full``            train everything from the pre-trained weights
``partial``         train the top ``k`` layer groups (the head counts), freeze the rest
``gradual``         head first, then unfreeze one more group per stage (ULMFiT)
``discriminative``  train everything, the rate divided by ``decay`` per group down
``lp_ft``           a linear probe, then everything from the probed head (Kumar et al.)
``lora``            low-rank adapters and the head; everything pre-trained frozen (Hu et al.)
==================  ====================================================================

A stage is ``(name, first)``: layer group ``first``
(`transferkit.surgery.layer_groups.layer_groups`) and every group above it train, the ones
below are frozen. LP-FT is a linear-probe stage
put before ``full``'s (a record's ``probe_first``).

1. `strategy_stages(strategy, n_groups)`: the stages on a model of ``n_groups`` groups.
2. `adapt(model, strategy)`: the surgery a strategy makes once, before any stage: LoRA
   wraps Linear layers in adapters (`transferkit.surgery.lora.add_lora`); the others leave the
   model as it is.
3. `set_trainable(model, strategy, stage)`: freeze and unfreeze as that stage trains and
   return the module to train: ``model`` itself or, with ``cache_bottom``, a
   `transferkit.surgery.cached_bottom.CachedBottomClassifier` that runs a transformer's frozen
   bottom once per text.
4. `reset_parameters(model)`: what ``scratch`` does first.

`STRATEGIES` names the seven that only choose layer groups (they work on any model
`layer_groups` can cut); ``lora`` also needs Linear layers besides the head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from transferkit.surgery.cached_bottom import CachedBottomClassifier
from transferkit.surgery.freezing import ULMFIT_DECAY, freeze, freeze_to, unfreeze
from transferkit.surgery.heads import find_head
from transferkit.surgery.layer_groups import layer_groups
from transferkit.surgery.lora import add_lora, linear_names, lora_layers

PROBE = "linear probe"  # the stage that trains the head alone on frozen features

StagePlan = Callable[[int, int, float], list[tuple[str, int]]]  # (groups, k, decay) -> stages


@dataclass(frozen=True)
class Strategy:
    """One strategy: its stages, and what its runner does besides freezing.

    ``stages(n_groups, k, decay)`` gives the stages after the probe, if any;
    ``probe_first`` puts a linear-probe stage before them; ``reset`` re-initialises the
    model first (``scratch``); ``head_lr_first`` trains the first stage at the head's
    rate (``gradual``: the head alone); ``decay`` divides the rate by ``decay`` per group
    down (``discriminative``); ``adapter`` adds LoRA's adapters before any stage.
    """

    name: str
    stages: StagePlan
    probe_first: bool = False
    reset: bool = False
    head_lr_first: bool = False
    decay: bool = False
    adapter: bool = False


def _everything(name: str) -> StagePlan:
    return lambda n_groups, k, decay: [(name, 0)]


def _nothing_more(n_groups: int, k: int, decay: float) -> list[tuple[str, int]]:
    return []


def _top_k(n_groups: int, k: int, decay: float) -> list[tuple[str, int]]:
    if not (isinstance(k, int) and 1 <= k <= n_groups):
        raise ValueError(f"partial trains the top k groups: k must be 1 … {n_groups}, got {k!r}.")
    return [(f"top {k} groups", n_groups - k)]


def _one_more_group_per_stage(n_groups: int, k: int, decay: float) -> list[tuple[str, int]]:
    return [(f"top {t} of {n_groups} groups", n_groups - t) for t in range(1, n_groups + 1)]


def _rate_per_group(n_groups: int, k: int, decay: float) -> list[tuple[str, int]]:
    return [(f"all groups, lr ÷{decay:g} per group", 0)]


TABLE: dict[str, Strategy] = {s.name: s for s in (
    Strategy("scratch", _everything("from scratch"), reset=True),
    Strategy("linear_probe", _nothing_more, probe_first=True),  # the probe alone
    Strategy("full", _everything("fine-tune all")),
    Strategy("partial", _top_k),
    Strategy("gradual", _one_more_group_per_stage, head_lr_first=True),
    Strategy("discriminative", _rate_per_group, decay=True),
    Strategy("lp_ft", _everything("fine-tune all"), probe_first=True),
    Strategy("lora", _everything("lora"), adapter=True),
)}

STRATEGIES = tuple(name for name, s in TABLE.items() if not s.adapter)  # layer groups only


def check_strategy(strategy: str, choices: Sequence[str] = tuple(TABLE)) -> Strategy:
    """The record of ``strategy``; a name not among ``choices`` (default: all of `TABLE`)
    is refused, listing them."""
    if strategy not in choices or strategy not in TABLE:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(choices)}.")
    return TABLE[strategy]


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
    record = check_strategy(strategy)
    stages = record.stages(n_groups, k, decay)
    return [(PROBE, n_groups - 1), *stages] if record.probe_first else stages


def adapt(model: nn.Module, strategy: str, *, r: int = 8, alpha: float = 16,
          targets: Sequence[str] | None = None) -> nn.Module:
    """The surgery ``strategy`` makes once, before its first stage; returns ``model``.

    ``lora``: wrap the Linear layers named ``targets`` (default: every Linear but the
    head) in rank-``r`` adapters and freeze everything else but the head
    (`transferkit.surgery.lora.add_lora`). Every other strategy leaves ``model`` as it is.
    """
    if not check_strategy(strategy).adapter:
        return model
    if targets is None:
        head = find_head(model).rpartition(".")[2]
        targets = [n for n in linear_names(model) if n != head]
    return add_lora(model, r=r, alpha=alpha, targets=targets)


def _train_head_alone(model: nn.Module) -> None:
    # BatchNorm statistics frozen too: the backbone's features are then fixed, and cacheable
    freeze(model, bn="freeze")
    unfreeze(model, find_head(model))


def set_trainable(model: nn.Module, strategy: str, stage: int = 0, *, k: int = 2,
                  bn: str = "train", cache_bottom: bool = False) -> nn.Module:
    """Freeze and unfreeze ``model`` as stage ``stage`` of ``strategy`` trains it;
    returns the module to train (``model``, unless ``cache_bottom``).

    A linear probe freezes everything but the head, BatchNorm statistics included;
    ``lora``'s stage trains what `adapt` left trainable; the other stages use
    `freeze_to` with the ``bn`` policy. ``cache_bottom`` (for a
    `transferkit.surgery.heads.TextClassifier`): the stage's frozen groups, the embeddings and
    the blocks below, run once per text: a `CachedBottomClassifier` wrapping ``model``
    is returned. `transferkit.surgery.freezing.trainable_report(model)` shows what will train.
    """
    n_groups = len(layer_groups(model))
    stages = strategy_stages(strategy, n_groups, k=k)
    if not -len(stages) <= stage < len(stages):
        raise ValueError(f"{strategy} has {len(stages)} stage(s); stage {stage} does not exist.")
    stage_name, first = stages[stage]
    if stage_name == PROBE:
        _train_head_alone(model)
    elif TABLE[strategy].adapter:
        if not lora_layers(model):
            raise ValueError(f"{strategy} trains the adapters that adapt(model, {strategy!r}) "
                             "adds: call adapt first.")
    elif cache_bottom:
        return CachedBottomClassifier(model, n_groups - 1 - first)  # its top blocks, the head
    else:
        freeze_to(model, first, bn=bn)
    return model


def reset_parameters(model: nn.Module) -> nn.Module:
    """Re-initialise every layer that knows how (``reset_parameters``), including
    BatchNorm's running statistics: the architecture without what it learned."""
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return model


__all__ = ["PROBE", "STRATEGIES", "TABLE", "Strategy", "adapt", "check_strategy",
           "reset_parameters", "set_trainable", "strategy_stages"]
