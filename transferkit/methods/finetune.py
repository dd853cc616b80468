"""Fine-tuning: reusing a pre-trained network for a new task, with freezing done right.

The recipe of the source articles is: take a network trained on something else
(the *backbone*: lesson 03's encoder, or a torchvision ResNet), put a new output
layer (the *head*) on it for your classes, freeze what you want to keep, and
train the rest on your few labels. Everything here works on any `nn.Module`,
not only on models this library built. The pieces live one layer down, each in
its own module (import them from there):

* `transferkit.surgery.heads`: `Classifier`, `find_head`, `replace_head` (a head on a backbone);
* `transferkit.surgery.layer_groups`: `layer_groups` (a model cut into ordered groups);
* `transferkit.surgery.freezing`: `freeze` / `unfreeze` / `freeze_to`, the BatchNorm
  policy, `param_groups` (discriminative rates), `trainable_report`;
* `transferkit.methods.strategies`: the strategies as data, what each trains stage by stage
  (`strategy_stages`, `set_trainable`).

This module adds what is built on them:

1. **Features.** `extract_features(backbone, x)` runs a frozen backbone once and
   caches the result, so a linear probe trains its head on stored features.
2. **Running a strategy.** `fine_tune(model, train, val, strategy=...)` runs
   ``scratch``, ``linear_probe``, ``full``, ``partial``, ``gradual``,
   ``discriminative``, ``lp_ft`` or ``lora`` through `transferkit.training.loop.fit` and
   returns the history of every stage; `finetune_method` plugs a strategy into a
   label-budget study.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from transferkit.foundations.data import check_finite_inputs
from transferkit.foundations.device import model_device, pick_device, seeded
from transferkit.foundations.distributed import join
from transferkit.foundations.integrity import TensorCache, module_tensors, tensors_digest
from transferkit.foundations.train_eval import eval_mode
from transferkit.methods.strategies import (
    PROBE,
    TABLE,
    adapt,
    check_strategy,
    reset_parameters,
    set_trainable,
    strategy_stages,
)
from transferkit.surgery.freezing import BN_POLICIES, ULMFIT_DECAY, param_groups
from transferkit.surgery.heads import find_head, without_head
from transferkit.surgery.layer_groups import architecture, layer_groups
from transferkit.training.callbacks import History
from transferkit.training.loop import as_xy, epochs_for_steps, fit
from transferkit.training.optimizers import OPTIMIZERS, fused_optimizer

# --- 6. features of a frozen backbone -------------------------------------------------------

FEATURE_CACHE_BYTES = 512 * 2**20
_FEATURE_CACHE = TensorCache()


def feature_key(backbone: nn.Module, x: torch.Tensor) -> str:
    """The feature cache's key: a digest (`transferkit.foundations.integrity.tensors_digest`) of
    everything that decides what ``backbone(x)`` computes: its architecture
    (`transferkit.surgery.layer_groups.architecture`: every layer's class and settings, so two
    networks with the same weights but another activation or pooling differ), every parameter
    and buffer by name (buffers left out of the ``state_dict`` too), and the bytes of ``x``."""
    return tensors_digest([*module_tensors(backbone), ("(inputs)", x)],
                          salt=architecture(backbone))


def clear_feature_cache() -> None:
    """Forget every cached feature matrix."""
    _FEATURE_CACHE.clear()


def extract_features(backbone: nn.Module, x: torch.Tensor, *, batch_size: int = 512,
                     cache: bool = True) -> torch.Tensor:
    """``backbone(x)`` in eval mode without gradients, one row of features per example.

    Runs a batch at a time on the backbone's device and returns a CPU tensor
    (flattened to ``(n, features)``). With ``cache=True`` the result is kept, keyed
    by the backbone's architecture and the *contents* of its weights and of ``x``
    (`feature_key`): the same frozen backbone on the same inputs is not run again,
    while a backbone whose weights or layers changed is.
    That is what makes a linear probe cheap: its head trains for many epochs on
    features computed once. (The cache keeps at most FEATURE_CACHE_BYTES;
    `clear_feature_cache` empties it.)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor of inputs, got {type(x).__name__}.")
    key = None
    if cache:
        key = feature_key(backbone, x)
        found = _FEATURE_CACHE.get(key)
        if found is not None:
            return found.clone()  # the caller's copy: the cache keeps its own
    device = model_device(backbone)
    with eval_mode(backbone), torch.no_grad():
        parts = [backbone(x[i:i + batch_size].to(device)).flatten(1).float().cpu()
                 for i in range(0, len(x), batch_size)]
    features = torch.cat(parts)
    if key is not None and _FEATURE_CACHE.put(key, features, FEATURE_CACHE_BYTES):
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


# --- 7. running a strategy -------------------------------------------------------------------


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

    def stage_ends(self) -> list[int]:
        """The epoch (numbered as in `to_rows`) at which each stage but the last ends:
        where a figure draws the line between two stages."""
        ends, offset = [], 0
        for stage in self.stages[:-1]:
            offset += len(stage.history)
            ends.append(offset)
        return ends

    def __repr__(self) -> str:
        stages = ", ".join(f"{s.name} ({len(s.history)} epochs)" for s in self.stages)
        drift = "" if self.feature_drift is None else f", feature drift {self.feature_drift:.3f}"
        return f"FineTuneResult({self.strategy}: {stages}{drift})"


def _optimizer_class(optimizer: Any) -> Callable[..., torch.optim.Optimizer]:
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(OPTIMIZERS)} "
                             "or a torch.optim class.")
        return functools.partial(fused_optimizer, OPTIMIZERS[optimizer.lower()][0])
    if isinstance(optimizer, torch.optim.Optimizer) or not callable(optimizer):
        raise TypeError("fine_tune builds an optimizer per stage: pass a name ('adam') or a "
                        "torch.optim class / functools.partial, not an optimizer instance.")
    return optimizer


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
    r: int = 8,
    alpha: float = 16,
    targets: Sequence[str] | None = None,
    **fit_options: Any,
) -> FineTuneResult:
    """Fine-tune ``model`` (a backbone with a head, e.g. a `transferkit.surgery.heads.Classifier`)
    in place with ``strategy``: ``scratch``, ``linear_probe``, ``full``, ``partial``,
    ``gradual``, ``discriminative``, ``lp_ft`` or ``lora`` (what each trains, stage by
    stage: `transferkit.methods.strategies`). The stages run one after the other, each with a
    fresh optimizer built by `param_groups`, so every unfrozen parameter is in it.

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
        r, alpha, targets: ``lora``'s rank, scale and the Linear layers it adapts
            (`transferkit.methods.strategies.adapt`; default: every Linear but the head).
        fit_options: passed to `transferkit.training.loop.fit` (``early_stopping``,
            ``callbacks``, ``device`` …).

    Under ``torchrun`` every stage trains with `DistributedDataParallel`
    (`transferkit.foundations.distributed`), wrapped afresh with the parameters that stage
    trains; frozen ones are never synchronised, frozen BatchNorm statistics stay
    frozen on every process.

    Returns a `FineTuneResult`; with ``val``, its ``feature_drift`` says how far
    the backbone's features of the validation inputs moved (`feature_drift`).
    """
    if bn not in BN_POLICIES:
        raise ValueError(f"bn must be one of {BN_POLICIES}, got {bn!r}.")
    check_finite_inputs(train, val, model)  # before any stage or cached feature is computed
    # LoRA's adapters go in first, on the device the model came on (where they are drawn)
    adapt(model, strategy, r=r, alpha=alpha, targets=targets)
    groups = layer_groups(model)
    plan = strategy_stages(strategy, len(groups), k=k, decay=decay)
    opt_class = _optimizer_class(optimizer)
    x, y = as_xy(train, "train")
    head_name = find_head(model)
    head_lr = 10 * lr if head_lr is None else head_lr
    probe_epochs = epochs if probe_epochs is None else probe_epochs

    def features(inputs: torch.Tensor, use_cache: bool = cache) -> torch.Tensor:
        with without_head(model, head_name):
            return extract_features(model, inputs, cache=use_cache)

    # Every stage trains on this device (fit's choice); a probe trains the head alone, so
    # the whole model moves first, or the head and the backbone could end up apart.
    device = fit_options.get("device")
    device = pick_device(None if device is None else str(device))
    ranks = join(device)  # under torchrun: every process starts from process 0's weights
    model.to(ranks.device(device))
    ranks.broadcast(model.state_dict().values())
    x_val = as_xy(val, "val")[0] if val is not None else None
    record = TABLE[strategy]
    before = features(x_val) if x_val is not None and not record.reset else None
    if record.reset:  # scratch: the architecture without what it learned
        with seeded(seed) if seed is not None else contextlib.nullcontext():
            reset_parameters(model)

    stages: list[Stage] = []
    for i, (name, first) in enumerate(plan):
        set_trainable(model, strategy, i, k=k, bn=bn)
        probing = name == PROBE
        rate = head_lr if probing or (record.head_lr_first and i == 0) else lr
        # discriminative: the rate is divided by `decay` per group down from the head
        rates = dict(decay=decay) if record.decay else {}
        run_on, train_on, val_on = model, train, val
        if probing and cache:  # the backbone is fixed: train the head on its stored features
            run_on = model.get_submodule(head_name)
            train_on = (features(x), y)
            val_on = (features(x_val), as_xy(val, "val")[1]) if val is not None else None
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
    """A `transferkit.methods.label_budget` study method: build a fresh model, `fine_tune` it.

    ``make_model()`` must return a *new* model each time (e.g. a
    `transferkit.surgery.heads.Classifier` on a
    ``copy.deepcopy`` of the pre-trained encoder), so no trial sees another's
    training. Training lengths are counted in optimizer steps, so a trial with 10
    labels and one with 1,000 get the same number of updates: the epochs follow
    from ``steps`` and the labelled subset's size
    (`transferkit.training.loop.epochs_for_steps`); ``probe_steps`` is the length
    of a linear-probe stage (default ``steps``). ``options`` go to `fine_tune`
    (``lr``, ``head_lr``, ``bn`` …). The model's ``measurements`` hold the feature
    drift (on the validation inputs) and the cost (`FineTuneResult.cost`: trainable
    parameters, seconds per epoch), which `label_budget_study` adds to its rows.

    ``use_val=False`` trains for the set number of steps without looking at the
    validation set (no measurement every epoch, no best epoch kept, no drift):
    much faster with a few labels, and the validation set is left to score the
    finished model, e.g. in a `transferkit.methods.selection.search`.
    """
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
    "FineTuneResult", "Stage", "clear_feature_cache", "extract_features", "feature_drift",
    "feature_key", "fine_tune", "finetune_method",
]
