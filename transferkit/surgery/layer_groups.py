"""Layer groups: a model cut into ordered pieces, from the input to the head.

Fine-tuning decides per *group* of layers: which groups stay frozen, which
train, and at which learning rate (ULMFiT's discriminative rates divide the rate
by 2.6 per group going down). `layer_groups(model)` makes the groups for any
`nn.Module`:

* a model's top-level layers, in order; a layer without parameters (a ReLU, a
  pooling) or a normalisation layer joins the group before it;
* a model that is one big body (MobileNet's ``features``, an encoder's
  ``layers``) is split into that body's layers;
* the group holding the head (`transferkit.surgery.heads.find_head`) comes last, even if
  the model registered it first;
* a `transferkit.surgery.heads.Classifier`: its encoder's layers, then its head;
* a transformer (BERT, MiniLM, RoBERTa …; a Hugging Face ``BertModel``,
  ``BertForSequenceClassification`` or a `transferkit.surgery.heads.TextClassifier`): the
  embeddings, then each block of the encoder, then everything after them (the
  head; in a bare ``BertModel``, its pooler) — ULMFiT's groups for a transformer;
* a model with its own ``layer_groups()`` method chooses its own groups, and
  ``split=`` lets you choose them yourself.

Every parameter belongs to exactly one group; `layer_groups` checks it.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from transferkit.surgery.heads import Classifier, find_head, submodule, transformer_body

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)  # normalisation layers
BATCHNORMS = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d (they keep running statistics)


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
                if isinstance(m, BATCHNORMS)]

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
        starts_group = _has_parameters(child) and not (groups and isinstance(child, NORMS))
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


def _outside(module: nn.Module, taken: set[int], prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The largest submodules none of whose parameters are in ``taken``, in order."""
    found: list[tuple[str, nn.Module]] = []
    own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in taken]
    if own:
        found.append((prefix, _OwnParameters(own)))
    for name, child in module.named_children():
        params = [id(p) for p in child.parameters()]
        if not params:
            continue
        if not any(p in taken for p in params):
            found.append((_join(prefix, name), child))
        elif not all(p in taken for p in params):
            found += _outside(child, taken, _join(prefix, name))
    return found


def _transformer_groups(model: nn.Module, body: tuple[str, str]) -> list[LayerGroup]:
    """Embeddings, each block, then the rest (the head, or BERT's pooler) as one group."""
    embeddings, blocks = body
    groups = [LayerGroup(embeddings, [(embeddings, model.get_submodule(embeddings))])]
    groups += [LayerGroup(_join(blocks, str(i)), [(_join(blocks, str(i)), block)])
               for i, block in enumerate(model.get_submodule(blocks))]
    taken = {id(p) for g in groups for p in g.parameters()}
    rest = _outside(model, taken)
    if rest:
        try:
            name = find_head(model)
        except ValueError:  # a bare encoder: its pooler (or whatever follows the blocks)
            name = rest[0][0]
        groups.append(LayerGroup(name, rest))
    return groups


def _explicit_groups(model: nn.Module, split: Sequence[Any]) -> list[LayerGroup]:
    names = {module: name for name, module in model.named_modules()}
    groups = []
    for entry in split:
        items = [entry] if isinstance(entry, (str, nn.Module)) else list(entry)
        modules = []
        for item in items:
            if isinstance(item, str):
                module = submodule(model, item)
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
      holding the head (`find_head`) comes last. A `Classifier` gives its
      encoder's groups, then the head; a transformer its embeddings, each block,
      then the head; a model with a ``layer_groups()`` method chooses its own.
    * ``split``: your own groups, as a list whose entries are a module name
      (``"layer4"``), a module, or a list of those.

    Every parameter must belong to exactly one group.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    >>> [(g.name, g.layer_names()) for g in layer_groups(net)]
    [('0', 'Linear, BatchNorm1d, ReLU'), ('3', 'Linear')]
    """
    if split is not None:
        groups = _explicit_groups(model, split)
    elif isinstance(model, Classifier):
        groups = [*_default_groups(model.encoder, "encoder", has_head=False),
                  LayerGroup("head", [("head", model.head)])]
    elif callable(getattr(model, "layer_groups", None)):
        groups = model.layer_groups()
    elif (body := transformer_body(model)) is not None:
        groups = _transformer_groups(model, body)
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


# --- the layer tree as text, for whatever must tell two networks apart ---------------------


def _setting(value: Any) -> Any:
    """A module attribute as a plain value: numbers, strings and their tuples, lists and
    dicts as they are; a function as its name; anything else as its type's name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_setting(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _setting(v) for k, v in value.items()}
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return type(value).__name__


def architecture(model: nn.Module) -> str:
    """The model's layer tree as text: one line per module with its dotted name, its
    class and its settings (the values it keeps besides its tensors: sizes, strides,
    ``eps``, a pooling's output size, an activation's options, a function it calls).

    Two networks with the same weights but a different activation or pooling (layers
    that have no weights) compute different things; their weights cannot tell them
    apart, their architecture can. So caches of what a network computes
    (`transferkit.methods.finetune.extract_features`, `transferkit.text.model.encode`) key on it as
    well as on the weights. Not part of it: the train/eval mode (``training``, and the
    ``train`` that `transferkit.surgery.freezing.freeze_bn_stats` puts on a BatchNorm), private
    attributes (a leading ``_``; hooks live there), and methods patched onto a module;
    an object that is not a plain value appears as its type's name only.

    >>> print(architecture(nn.Sequential(nn.Linear(2, 3), nn.ReLU())))
    : torch.nn.modules.container.Sequential {}
    0: torch.nn.modules.linear.Linear {'in_features': 2, 'out_features': 3}
    1: torch.nn.modules.activation.ReLU {'inplace': False}
    """
    lines = []
    for name, module in model.named_modules(remove_duplicate=False):
        settings = {key: _setting(value) for key, value in sorted(vars(module).items())
                    if not key.startswith("_") and key not in ("training", "train")
                    and not isinstance(value, types.MethodType)}
        kind = type(module)
        lines.append(f"{name}: {kind.__module__}.{kind.__qualname__} {settings}")
    return "\n".join(lines)


__all__ = ["BATCHNORMS", "LayerGroup", "NORMS", "architecture", "layer_groups"]
