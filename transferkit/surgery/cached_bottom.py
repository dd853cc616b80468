"""Partial fine-tuning of a transformer with the frozen bottom computed once per text.

Partial fine-tuning trains the top ``k`` blocks of a pre-trained encoder (and the
head) and freezes the rest. The frozen *bottom* (the embeddings and the blocks
below the top ``k``) still runs on every training step and every evaluation, and on
a laptop's CPU it is most of the cost: in MiniLM with ``k = 2`` it is four of six
blocks plus the embeddings. Yet a frozen bottom is a fixed function: the vectors it
gives a text never change. So `CachedBottomClassifier` computes them once per text
and keeps them:

1. each row of token ids (its real tokens, the padding cut off) is looked up in a
   cache keyed by those ids, by a fingerprint of the bottom's weights and by ``k``;
2. the rows not found are run through the bottom *together*, in one batch, in eval
   mode under ``torch.inference_mode``, and stored;
3. the rows' token vectors are padded back into a batch, the top ``k`` blocks run on
   it with the attention mask Hugging Face's own model builds (so ``sdpa`` and
   ``eager`` attention both work), and the vectors are pooled and classified as the
   wrapped `transferkit.surgery.heads.TextClassifier` does.

Gradients reach the top blocks and the head, never the bottom, exactly as in
partial fine-tuning. **The one difference:** in training mode, plain partial
fine-tuning runs the frozen bottom with dropout (``model.train()`` reaches it);
here the bottom always runs without dropout, since a cached output must not be one
random draw of it. In eval mode the two give the same scores.

The cache is shared by every `CachedBottomClassifier` in the process (two
classifiers made from copies of the same pre-trained encoder, e.g. one per seed,
reuse each other's rows), holds at most ``BOTTOM_CACHE_BYTES`` and forgets the
least recently used rows first. A bottom whose weights changed gets a new
fingerprint, so it never reads rows of the old one. `clear_bottom_cache` empties
it; `bottom_cache_info` says how full it is and how often it was hit.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from transferkit.foundations.integrity import TensorCache, module_tensors, tensors_digest
from transferkit.foundations.train_eval import eval_mode
from transferkit.surgery.freezing import freeze_to
from transferkit.surgery.heads import TextClassifier, mean_pool, transformer_body

BOTTOM_CACHE_BYTES = 512 * 2**20  # read on every store: lower it to keep less

# Bottom outputs, one ``(length, hidden)`` tensor per row, keyed by (fingerprint, token ids)
_CACHE = TensorCache()


def clear_bottom_cache() -> None:
    """Forget every cached bottom output (and the hit and miss counts)."""
    _CACHE.clear()


def bottom_cache_info() -> dict[str, int]:
    """How full the shared cache is: ``rows``, ``bytes``, ``limit`` (BOTTOM_CACHE_BYTES),
    and how many rows were found (``hits``) or computed (``misses``) since it was cleared."""
    return {"rows": len(_CACHE), "bytes": _CACHE.nbytes, "limit": BOTTOM_CACHE_BYTES,
            "hits": _CACHE.hits, "misses": _CACHE.misses}


def _bidirectional_mask(config, hidden: torch.Tensor, mask: torch.Tensor):
    """The attention mask BERT builds from ``mask`` (1 = real token) for its blocks
    (transformers ≥ 5.0). Positional: its second argument is ``input_embeds`` in 5.0
    and ``inputs_embeds`` later."""
    # function-level: transformers is heavy, and any model wrapped here has loaded it already
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config, hidden, mask)


class CachedBottomClassifier(nn.Module):
    """A `TextClassifier` fine-tuned in its top ``k`` blocks, its frozen bottom cached.

    ``CachedBottomClassifier(classifier, k)`` wraps ``classifier`` (it does not copy
    it: the parameters are the same tensors, so after training ``classifier`` is the
    fine-tuned model too). It freezes the embeddings and the blocks below the top
    ``k`` (``requires_grad=False``) and makes the top ``k`` blocks and the head
    trainable, as ``freeze_to(classifier, -(k + 1))`` does; `transferkit.training.loop.fit`,
    `transferkit.surgery.freezing.trainable_report` and an optimizer over the parameters
    that require gradients all work on it.

    ``forward(ids)`` takes what the classifier takes, token ids ``(batch, length)``
    padded with its pad id, and returns the same logits (see the module docstring
    for how, and for the one difference: no dropout in the frozen bottom).
    Supported encoders: BERT-style ones whose blocks follow the embeddings directly
    (BERT, MiniLM, RoBERTa), not decoders.
    """

    def __init__(self, classifier: TextClassifier, k: int):
        super().__init__()
        if not isinstance(classifier, TextClassifier):
            raise TypeError("CachedBottomClassifier wraps a "
                            "transferkit.surgery.heads.TextClassifier, "
                            f"got {type(classifier).__name__}.")
        encoder = classifier.encoder
        body = transformer_body(encoder)
        extra = sorted({name for name, _ in encoder.named_children()}
                       - {"embeddings", "encoder", "pooler"})
        if body != ("embeddings", "encoder.layer") or extra or encoder.config.is_decoder:
            raise TypeError(f"CachedBottomClassifier needs a BERT-style encoder (embeddings, "
                            f"then encoder.layer, nothing between); {type(encoder).__name__} "
                            f"has {body} and {extra or 'no other parts'}.")
        n_layers = len(encoder.encoder.layer)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_layers:
            raise ValueError(f"k is the number of top blocks to train: 1 … {n_layers} for "
                             f"this encoder of {n_layers} blocks, got {k!r}.")
        self.classifier, self.k, self.n_layers = classifier, k, n_layers
        freeze_to(classifier, -(k + 1))  # the top k blocks and the head train
        self._fingerprint: tuple[tuple, str] | None = None  # (tensor versions, digest)

    # --- the parts -------------------------------------------------------------------------

    def bottom_modules(self) -> list[nn.Module]:
        """The frozen, cached part: the embeddings and the blocks below the top ``k``."""
        encoder = self.classifier.encoder
        return [encoder.embeddings, *encoder.encoder.layer[:self.n_layers - self.k]]

    def top_modules(self) -> list[nn.Module]:
        """The trained blocks, lowest first (the head is ``classifier.head``)."""
        return list(self.classifier.encoder.encoder.layer[self.n_layers - self.k:])

    def _bottom_tensors(self) -> list[tuple[str, torch.Tensor]]:
        return [(f"{i}.{name}", t) for i, module in enumerate(self.bottom_modules())
                for name, t in module_tensors(module)]

    def bottom_fingerprint(self) -> str:
        """A digest of the bottom's weights and buffers and of ``k``: the cache's key.

        Hashing tens of megabytes takes a moment, so the digest is kept and computed
        again only when a bottom tensor was modified in place (its version counter
        moved), replaced or moved. (A change through ``p.data`` bypasses the counter:
        after one, call `clear_bottom_cache`.)
        """
        tensors = self._bottom_tensors()
        versions = tuple((id(t), t.data_ptr(), t._version, t.device) for _, t in tensors)
        if self._fingerprint is None or self._fingerprint[0] != versions:
            digest = tensors_digest(tensors, salt=f"k={self.k}|{self.n_layers}")
            self._fingerprint = (versions, digest)
        return self._fingerprint[1]

    # --- the forward pass ------------------------------------------------------------------

    def _run_bottom(self, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """The bottom's token vectors of each row, computed in one padded batch."""
        pad = self.classifier.pad_id
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), pad, dtype=torch.long, device=rows[0].device)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
        mask = ids != pad
        encoder = self.classifier.encoder
        with contextlib.ExitStack() as stack, torch.inference_mode():
            for module in self.bottom_modules():
                stack.enter_context(eval_mode(module))  # no dropout in the frozen bottom
            hidden = encoder.embeddings(input_ids=ids)
            attention = _bidirectional_mask(encoder.config, hidden, mask.long())
            for block in encoder.encoder.layer[:self.n_layers - self.k]:
                hidden = block(hidden, attention_mask=attention)
            return [hidden[i, :len(row)].clone() for i, row in enumerate(rows)]

    def bottom_outputs(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottom's token vectors for ``ids`` from the cache (computing the rows it
        lacks) as a padded batch ``(batch, length, hidden)``, and the mask of real tokens
        ``(batch, length)``; ``length`` is the batch's longest real text, as in
        `TextClassifier`."""
        mask = ids != self.classifier.pad_id
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        lengths = (mask * positions).amax(1).clamp_min(1).tolist()  # to the last real token
        length = max(lengths)
        ids, mask = ids[:, :length], mask[:, :length]
        fingerprint = self.bottom_fingerprint()
        flat = ids.cpu().numpy()
        keys = [(fingerprint, flat[i, :n].tobytes()) for i, n in enumerate(lengths)]
        found, missing = [], {}  # missing: key -> a row that has it (a text is run once)
        for i, key in enumerate(keys):
            row = None if key in missing else _CACHE.get(key)  # a hit, or one miss per text
            if row is None:
                missing.setdefault(key, i)
            found.append(row)
        if missing:
            computed = self._run_bottom([ids[i, :lengths[i]] for i in missing.values()])
            fresh = dict(zip(missing, computed, strict=True))
            for key, out in fresh.items():
                _CACHE.put(key, out, BOTTOM_CACHE_BYTES)  # one larger than it: used, not kept
            found = [fresh[key] if f is None else f for key, f in zip(keys, found, strict=True)]
        # padding positions get zero vectors: the mask keeps them out of every result
        first = found[0]
        hidden = torch.zeros(len(found), length, first.shape[-1], dtype=first.dtype,
                             device=ids.device)
        for i, out in enumerate(found):
            hidden[i, :len(out)] = out.to(ids.device)
        return hidden, mask

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype != torch.long or ids.ndim != 2:
            raise ValueError(f"CachedBottomClassifier takes token ids, a LongTensor (batch, "
                             f"length); got {ids.dtype} of shape {tuple(ids.shape)}. Make it "
                             "with transferkit.text.model.token_ids(tokenizer, texts).")
        if torch.is_grad_enabled() and any(t.requires_grad for _, t in self._bottom_tensors()):
            raise RuntimeError("the bottom of a CachedBottomClassifier is cached, so it cannot "
                               "train, but some of its parameters require gradients (unfrozen "
                               f"since?). Freeze them again: freeze_to(classifier, "
                               f"-{self.k + 1}), or fine-tune the TextClassifier itself.")
        hidden, mask = self.bottom_outputs(ids)
        attention = _bidirectional_mask(self.classifier.encoder.config, hidden, mask.long())
        for block in self.top_modules():
            hidden = block(hidden, attention_mask=attention)
        pooled = mean_pool(hidden, mask) if self.classifier.pooling == "mean" else hidden[:, 0]
        return self.classifier.head(pooled)

    def extra_repr(self) -> str:
        return f"k={self.k} of {self.n_layers} blocks trained, the bottom cached"


__all__ = ["BOTTOM_CACHE_BYTES", "CachedBottomClassifier", "bottom_cache_info",
           "clear_bottom_cache"]
