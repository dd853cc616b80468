"""A head on a backbone: the output layer that fine-tuning replaces.

The recipe of the source articles is: take a network trained on something else
(the *backbone*: lesson 03's encoder, or a torchvision ResNet), and put a new
output layer (the *head*) on it for your classes. This module does that part,
for any `nn.Module`, not only for models this library built:

* `Classifier(encoder, num_classes)` puts a ``Linear`` head on an encoder whose
  output size it measures with a dry run (`feature_size`);
* `find_head` / `replace_head` find and swap the output layer of torchvision-style
  models (``fc``, ``classifier[-1]``, ``heads.head``, ``head``) and of your own;
* `without_head` lends you the model without its head, to read its features;
* `TextClassifier(encoder, num_classes)` puts a head on a pre-trained transformer
  (a Hugging Face BERT-family model): token ids in, class scores out, the token
  vectors averaged over the real tokens (`mean_pool`) in between. `transformer_body`
  finds such an encoder's embeddings and blocks, so `find_head` never mistakes
  BERT's *pooler* (a pre-trained layer) for a head; `encoder_without_pooler`
  gives the classifier the encoder without that unused layer, leaving yours whole.

What to freeze, and at which learning rate to train the rest, is the business of
`transferkit.surgery.layer_groups` and `transferkit.surgery.freezing`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from transferkit.foundations.device import model_device
from transferkit.foundations.train_eval import eval_mode


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
    dummy = torch.zeros(2, *shape, device=model_device(encoder))
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

    Layer groups (`transferkit.surgery.layer_groups.layer_groups`): the encoder's layers, then
    the head.

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
        self.head = nn.Linear(self.features, num_classes).to(model_device(encoder))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).flatten(1))


# --- a head on a pre-trained transformer ---------------------------------------------------


def transformer_body(model: nn.Module) -> tuple[str, str] | None:
    """The dotted names of a BERT-family encoder's embeddings and its list of blocks
    inside ``model``, or None if it has no such encoder.

    BERT, RoBERTa, ELECTRA and MiniLM keep them as ``embeddings`` and
    ``encoder.layer``, DistilBERT as ``embeddings`` and ``transformer.layer``; the
    encoder may sit anywhere (``bert.`` in ``BertForSequenceClassification``,
    ``encoder.`` in a `TextClassifier`).
    """
    for name, module in model.named_modules():
        embeddings = getattr(module, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            continue
        for stack in ("encoder", "transformer"):
            blocks = getattr(getattr(module, stack, None), "layer", None)
            if isinstance(blocks, nn.ModuleList):
                prefix = f"{name}." if name else ""
                return f"{prefix}embeddings", f"{prefix}{stack}.layer"
    return None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's token vectors over its real tokens (``mask`` = 1):
    ``Σ_t m_t h_t / Σ_t m_t``. Padding does not count.

    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])      # the third token is padding
    >>> mean_pool(h, torch.tensor([[1, 1, 0]]))
    tensor([[2.]])
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


POOLINGS = ("mean", "cls")


def encoder_without_pooler(encoder: nn.Module) -> nn.Module:
    """``encoder`` without its pooler, and ``encoder`` itself left as it is.

    Not a copy of the weights: a second module object whose parts are ``encoder``'s
    (the same embeddings and blocks, the same parameter tensors, so training one
    trains the other), with its own tables of parts, parameters, buffers and hooks,
    in which the pooler is None.
    """
    shell = copy.copy(encoder)  # a new object; its attributes are encoder's
    for name, value in vars(encoder).items():
        if isinstance(value, (dict, set)):  # _modules, _parameters, hooks, …
            vars(shell)[name] = copy.copy(value)
    shell.pooler = None
    return shell


class TextClassifier(nn.Module):
    """A classification head on a pre-trained transformer encoder: token ids in, logits out.

    ``forward(ids)`` takes a LongTensor ``(batch, length)`` of token ids padded on
    the right with the pad id (``transferkit.text.model.token_ids`` makes it), so that
    `fit` can slice it like any other input. Per batch it:

    1. derives the attention mask, m = (ids ≠ pad id);
    2. drops the columns after the batch's longest real text: a batch of short
       snippets costs short-sequence compute, whatever length the data were padded to;
    3. runs the encoder and pools its token vectors into one per text: ``"mean"``
       over the real tokens (`mean_pool`; what sentence encoders such as MiniLM are
       trained for) or ``"cls"`` (the first token's vector, as BERT's own
       classifier does);
    4. applies the new head, ``Linear(hidden size, num_classes)``.

    BERT's pre-trained *pooler* (a dense layer on the first token) is not used, so
    the classifier's encoder has none (``classifier.encoder.pooler is None``):
    otherwise its parameters would count as trainable yet never learn. The encoder
    you pass keeps its pooler; the classifier holds it without one
    (`encoder_without_pooler`), sharing its embeddings and blocks, so training the
    classifier trains them. Layer groups (`transferkit.surgery.layer_groups.layer_groups`): the
    embeddings, each block, the head.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str = "mean", *,
                 pad_id: int | None = None):
        super().__init__()
        config = getattr(encoder, "config", None)
        if config is None or transformer_body(encoder) is None:
            raise TypeError(f"TextClassifier needs a Hugging Face BERT-family encoder (e.g. "
                            f"from transferkit.text.model.load_text_model), got "
                            f"{type(encoder).__name__}.")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}.")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if getattr(encoder, "pooler", None) is not None:
            encoder = encoder_without_pooler(encoder)  # unused: it would never learn
        self.encoder, self.pooling = encoder, pooling
        self.pad_id = int(pad_id if pad_id is not None else config.pad_token_id or 0)
        weight = next(iter(encoder.parameters()))
        self.head = nn.Linear(config.hidden_size, num_classes).to(weight.device, weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            got = "texts" if isinstance(ids, str) or (
                isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], str)) \
                else type(ids).__name__
            raise TypeError(f"TextClassifier takes token ids, a LongTensor (batch, length), not "
                            f"{got}. Make them with transferkit.text.model.token_ids(tokenizer, "
                            "texts).")
        if ids.dtype != torch.long or ids.ndim != 2:
            raise ValueError(f"TextClassifier takes token ids, a LongTensor (batch, length); got "
                             f"{ids.dtype} of shape {tuple(ids.shape)}. Make it with "
                             "transferkit.text.model.token_ids(tokenizer, texts).")
        if ids.numel() == 0:
            raise ValueError(f"TextClassifier got an empty batch (token ids of shape "
                             f"{tuple(ids.shape)}): give it at least one text of at least one "
                             "token.")
        mask = ids != self.pad_id
        real = mask.any(0).nonzero()
        length = int(real.max()) + 1 if len(real) else 1  # last column with a real token
        ids, mask = ids[:, :length], mask[:, :length]
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        pooled = mean_pool(hidden, mask) if self.pooling == "mean" else hidden[:, 0]
        return self.head(pooled)


# --- finding and replacing the head ---------------------------------------------------------

_HEAD_NAMES = ("head", "fc", "heads.head", "heads", "classifier")


def submodule(model: nn.Module, name: str) -> nn.Module | None:
    """``model``'s submodule called ``name`` (dotted, e.g. ``"classifier.1"``), or None."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def find_head(model: nn.Module) -> str:
    """The dotted name of ``model``'s output layer (a Linear).

    Looks for torchvision's names first: ``head`` (Swin, this module's
    `Classifier`), ``fc`` (ResNet), ``heads.head`` (ViT), ``classifier[-1]``
    (MobileNet, EfficientNet, ConvNeXt); otherwise the last Linear registered
    in the model. In a transformer (`transformer_body`) the Linear layers of the
    embeddings, of the blocks and of BERT's pre-trained *pooler* are never the head:
    a bare ``BertModel`` has none, and says so.

    >>> find_head(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    '2'
    """
    for name in _HEAD_NAMES:
        module = submodule(model, name)
        if isinstance(module, nn.Linear):
            return name
        if isinstance(module, nn.Sequential):
            linears = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
            if linears:
                return f"{name}.{linears[-1]}"
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name]
    body = transformer_body(model)
    if body is not None:
        inside = (*body, *(n for n, _ in model.named_modules() if n.endswith("pooler")))
        linears = [n for n in linears if not any(n.startswith(f"{b}.") for b in inside)]
        if not linears:
            raise ValueError(f"{type(model).__name__} is a transformer encoder without a head "
                             "(its pooler is pre-trained, not a head). Put one on it: "
                             "TextClassifier(encoder, num_classes).")
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer, so it has no head to "
                         "find. Name it: replace_head(model, n, name='...').")
    return linears[-1]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where ``model``'s submodule called ``name`` (dotted, e.g.
    ``"classifier.1"`` or ``"encoder.layer.0.attention.self.query"``) was: the one way
    the library swaps a layer (a head, a LoRA layer, a stem).

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))
    >>> set_submodule(net, "1.1", nn.Identity())
    >>> net[1]
    Sequential(
      (0): ReLU()
      (1): Identity()
    )
    """
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
    old = submodule(model, name)
    if not isinstance(old, nn.Linear):
        found = "nothing" if old is None else f"a {type(old).__name__}"
        raise ValueError(f"{name!r} in {type(model).__name__} is {found}, not a Linear layer; "
                         "give the head's name with name='...' or replace it by hand.")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    set_submodule(model, name, new)
    return new


@contextlib.contextmanager
def without_head(model: nn.Module, name: str | None = None) -> Iterator[nn.Module]:
    """``with without_head(model):`` the model's head is an ``nn.Identity``, so the
    model outputs the features the head would see. The head is put back after."""
    name = find_head(model) if name is None else name
    head = model.get_submodule(name)
    set_submodule(model, name, nn.Identity())
    try:
        yield model
    finally:
        set_submodule(model, name, head)



__all__ = ["Classifier", "POOLINGS", "TextClassifier", "encoder_without_pooler", "feature_size",
           "find_head", "mean_pool", "replace_head", "set_submodule", "submodule",
           "transformer_body", "without_head"]
