"""Look inside a transformer: the tokens it reads, and where each token looks.

**What the model is given.** A tokenizer cuts each text into *word pieces* from a
fixed vocabulary ("cinema" is one piece, a rare word becomes several, the second
and later ones marked ``##``), wraps them in ``[CLS]`` … ``[SEP]`` and turns each
piece into its row number in the embedding table, its *id*. Texts of different
lengths are batched by padding the short ones with ``[PAD]``; the *attention mask*
(1 for a real token, 0 for padding) tells the model to ignore the padding.
`token_rows` shows all of that for a few texts side by side::

    print(token_rows(tokenizer, ["A gem.", "Two hours I will not get back."]))

**Where each token looks.** In every layer, every *head* lets each token (a
*query*) collect information from all tokens (the *keys*), weighted by

    A = softmax(Q Kᵀ / √d),        each row of A sums to 1,

so A[i, j] is the share of its attention that token i gives to token j. MiniLM has
6 layers of 12 heads, hence 72 such n × n maps for a text of n tokens.
`attention_maps` returns all of them, computed by the model itself::

    maps = attention_maps(load_text_model(), "A three-hour cinema master class.")
    maps.weights.shape             # (6, 12, 10, 10): layers, heads, queries, keys
    maps.most_attended(0, 0)       # ('[SEP]', 0.36…): where [CLS] looks in layer 1, head 1

The weights are what the model really computes, not a re-implementation: the model
runs once with ``output_attentions=True``. PyTorch's fused attention ("sdpa", the
default) never forms A, so the model is switched to its plain ("eager")
implementation for that one run and switched back afterwards; training mode is
restored too. Attention maps are a *view* of the computation, not an explanation of a
prediction: a large weight says where information was read from, not that it mattered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from transferkit.foundations.device import model_device
from transferkit.foundations.tables import html_table
from transferkit.foundations.train_eval import eval_mode
from transferkit.text.model import TextModel
from transferkit.text.reviews import check_texts

# --- what the model is given ---------------------------------------------------------------


@dataclass
class TokenRows:
    """A few texts as one padded batch: per text, its word pieces, ids and mask.

    ``tokens[k][p]``, ``ids[k][p]`` and ``mask[k][p]`` describe position ``p`` of text
    ``k``. ``rows`` gives one dict per position (what a table shows); ``print`` it for a
    plain-text table, or let a notebook show it as HTML.
    """

    texts: list[str]
    tokens: list[list[str]]
    ids: list[list[int]]
    mask: list[list[int]]

    @property
    def length(self) -> int:
        """The number of positions: the longest text's number of tokens."""
        return len(self.ids[0])

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per position: ``{"position": p, "tokens": [...], "ids": [...],
        "mask": [...]}``, the lists holding one entry per text."""
        return [{"position": p,
                 "tokens": [t[p] for t in self.tokens],
                 "ids": [i[p] for i in self.ids],
                 "mask": [m[p] for m in self.mask]} for p in range(self.length)]

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(self.rows)

    def _header(self) -> list[str]:
        return ["position"] + [f"text {k + 1}: {part}" for k in range(len(self.texts))
                               for part in ("token", "id", "mask")]

    def _cells(self) -> list[list[str]]:
        return [[str(row["position"])] + [str(v) for k in range(len(self.texts))
                                          for v in (row["tokens"][k], row["ids"][k],
                                                    row["mask"][k])]
                for row in self.rows]

    def __str__(self) -> str:
        table = [self._header(), *self._cells()]
        widths = [max(len(line[c]) for line in table) for c in range(len(table[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                 for line in table]
        texts = [f"text {k + 1}: {t!r}" for k, t in enumerate(self.texts)]
        return "\n".join(texts + lines)

    def _repr_html_(self) -> str:
        caption = "; ".join(f"text {k + 1}: {t!r}" for k, t in enumerate(self.texts))
        return html_table(self._header(), self._cells(), caption=caption,
                          css_class="transferkit-tokens", muted=("[PAD]", "0"))

    def __repr__(self) -> str:
        return f"TokenRows({len(self.texts)} texts, {self.length} positions)"


def _tokenizer_of(tokenizer: Any) -> Any:
    if isinstance(tokenizer, TextModel):
        return tokenizer.tokenizer
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise TypeError(f"expected a tokenizer (model, tokenizer = load_text_model()), got "
                        f"{type(tokenizer).__name__}.")
    return tokenizer


def token_rows(tokenizer: Any, texts: Any, max_length: int | None = None) -> TokenRows:
    """Tokenize ``texts`` as one padded batch and show every position (`TokenRows`).

    ``tokenizer``: a Hugging Face tokenizer, or a `TextModel`. ``max_length``: cut
    longer texts to that many tokens (``[SEP]`` stays last); default: no cut.
    Padding goes on the tokenizer's side (the right, for BERT) with its ``[PAD]``
    token, and the mask is 0 there.
    """
    tokenizer = _tokenizer_of(tokenizer)
    texts = check_texts(texts)
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an integer ≥ 2 or None, got {max_length!r}.")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError("this tokenizer has no padding token, so texts of different lengths "
                         "cannot be batched; set one (tokenizer.pad_token = ...) first.")
    batch = tokenizer(texts, padding=True, truncation=max_length is not None,
                      max_length=max_length)
    ids = [list(row) for row in batch["input_ids"]]
    mask = [list(row) for row in batch["attention_mask"]]
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in ids]
    return TokenRows(texts, tokens, ids, mask)


# --- where each token looks -----------------------------------------------------------------


@dataclass
class AttentionMaps:
    """Every attention map of one text: ``weights[layer, head, i, j]`` is the share of
    its attention that token ``i`` (the query) gives to token ``j`` (the key).

    ``weights`` is ``(layers, heads, n, n)``, float32 on the CPU; each row sums to 1.
    ``tokens`` are the n word pieces, ``[CLS]`` first and ``[SEP]`` last. Layers and
    heads are counted from 0 here (the widget's sliders show them from 1).
    """

    tokens: list[str]
    weights: torch.Tensor
    text: str = ""

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    def head(self, layer: int, head: int) -> torch.Tensor:
        """The ``(n, n)`` map of one head (0-based ``layer`` and ``head``)."""
        for name, value, count in (("layer", layer, self.n_layers), ("head", head, self.n_heads)):
            if not isinstance(value, int) or not 0 <= value < count:
                raise IndexError(f"{name} must be an integer from 0 to {count - 1} (counted from "
                                 f"0; the widget's sliders count from 1), got {value!r}.")
        return self.weights[layer, head]

    def most_attended(self, layer: int, head: int, query: int = 0) -> tuple[str, float]:
        """The token that position ``query`` (default 0, ``[CLS]``) gives the largest share
        of its attention in that head, and the share."""
        row = self.head(layer, head)[query]
        j = int(row.argmax())
        return self.tokens[j], float(row[j])

    def __repr__(self) -> str:
        return (f"AttentionMaps({self.n_layers} layers × {self.n_heads} heads over "
                f"{len(self.tokens)} tokens: {' '.join(self.tokens)})")


def _attention_implementation(model: Any) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def attention_maps(text_model: Any, text: str, max_length: int = 128) -> AttentionMaps:
    """All attention maps of ``text`` in ``text_model`` (a `TextModel`, or a
    ``(model, tokenizer)`` pair): the probabilities the model itself computes.

    The model runs once, in eval mode under ``torch.inference_mode``, with its
    "eager" attention (the default "sdpa" does not return the probabilities); its
    attention implementation and training mode are restored afterwards, even on an
    error. Texts longer than ``max_length`` tokens are cut.
    """
    if not isinstance(text, str):
        raise TypeError(f"attention_maps looks at one text (a string), got "
                        f"{type(text).__name__}; for several, call it once per text.")
    check_texts([text], name="text")
    model, tokenizer = text_model
    tokenizer = _tokenizer_of(tokenizer)
    before = _attention_implementation(model)
    if before is None or not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"{type(model).__name__} is not a Hugging Face transformer, so its "
                        "attention probabilities cannot be requested; pass the TextModel from "
                        "load_text_model().")
    batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
    device = model_device(model)
    inputs = {"input_ids": batch["input_ids"].to(device),
              "attention_mask": batch["attention_mask"].to(device)}
    try:
        if before != "eager":
            model.set_attn_implementation("eager")
        with eval_mode(model), torch.inference_mode():
            out = model(**inputs, output_attentions=True)
            found = getattr(out, "attentions", None)
            if not found:
                raise RuntimeError(f"{type(model).__name__} returned no attention "
                                   "probabilities even with eager attention.")
            weights = torch.stack([a[0] for a in found]).float().cpu()
    finally:
        if _attention_implementation(model) != before:
            model.set_attn_implementation(before)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    return AttentionMaps(tokens, weights.clone(), text)


__all__ = ["AttentionMaps", "TokenRows", "attention_maps", "token_rows"]
