"""Integrity: is this file, these weights, this result the one we think it is?

A course that loads weights and data from files must know the bytes are the ones it
was checked with, and a cache must never hand back a result that other weights
computed. Both rest on a *digest*: a short number computed from every byte, which
changes when any byte does. This module holds the three things built on one:

1. **Files, verified or refused.** `sha256_file` hashes a file; `verify_sha256`
   compares it with the SHA-256 transferkit records for it and, if it differs (or
   the file is missing), refuses it with `IntegrityError`: the one error every
   check of a file's integrity raises, naming the file, what was expected and what
   was found, and how to fix it. The check comes *before* the file is read into
   anything, so a changed file never runs.
2. **Weights, fingerprinted.** `tensors_digest` hashes named tensors (a model's
   parameters and buffers, `module_tensors`): every name, dtype, shape and byte.
   Change one number and the digest changes.
3. **Results, remembered.** `TensorCache` keeps tensors under such a digest,
   forgets the least recently used once they take more than a byte limit, and
   counts its hits and misses.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from pathlib import Path

import torch
from torch import nn

# --- 1. files, verified or refused -------------------------------------------------------


class IntegrityError(RuntimeError):
    """A file is not what transferkit recorded or needs (a SHA-256 differs; it is missing,
    truncated or malformed; its weights are not finite numbers): it is refused, not used."""


def sha256_file(path: str | Path, chunk: int = 2**20) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time (hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, *, fix: str,
                  content: bytes | None = None) -> str:
    """Refuse ``path`` unless its SHA-256 is ``expected``; return the SHA-256.

    The file's bytes are hashed, or ``content`` when given (e.g. a compressed file's
    unpacked bytes, whose hash does not depend on the compressor). A missing file or
    another hash raises `IntegrityError`, naming the file and both hashes and ending
    with ``fix``, the advice that repairs it.
    """
    path = Path(path)
    if content is None and not path.is_file():
        raise IntegrityError(f"{path} is missing, so it cannot be verified; it is not used. "
                             f"{fix}")
    found = sha256_file(path) if content is None else hashlib.sha256(content).hexdigest()
    if found != expected:
        of = "" if content is None else " (of its unpacked contents)"
        raise IntegrityError(
            f"{path} has SHA-256 {found}{of}, but transferkit records {expected} for it: the "
            f"file was altered, truncated or replaced. Refusing to use it. {fix}")
    return found


# --- 2. weights, fingerprinted ------------------------------------------------------------


def module_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``module``'s parameters, then its buffers (those left out of the ``state_dict``
    too), by name: every tensor that decides what it computes."""
    return [*module.named_parameters(), *module.named_buffers()]


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]], salt: str = "") -> str:
    """A digest (BLAKE2b, 40 hex digits) of ``salt`` and then, for each named tensor,
    its name, dtype, shape and every byte: tensors that differ in any of these get
    another digest. ``salt`` is whatever else decides the result (an architecture, a
    setting).

    >>> a = [("w", torch.zeros(2))]
    >>> tensors_digest(a) == tensors_digest([("w", torch.zeros(2))])
    True
    >>> tensors_digest(a) == tensors_digest([("w", torch.tensor([0.0, 1e-9]))])
    False
    """
    digest = hashlib.blake2b(salt.encode(), digest_size=20)
    for name, t in named:
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# --- 3. results, remembered ---------------------------------------------------------------


class TensorCache:
    """Tensors kept under a key (a digest of what computed them), the least recently
    used forgotten first once they take more than ``max_bytes``.

    ``get(key)`` gives the stored tensor or None (and counts a hit or a miss);
    ``put(key, value, max_bytes)`` stores it; the limit is given on every store, so
    lowering a module's limit takes effect at once. Callers that hand the tensor out
    clone it, so nobody changes what the cache keeps.

    >>> cache = TensorCache()
    >>> cache.put("a", torch.zeros(2), max_bytes=8)
    True
    >>> cache.get("a") is cache.get("a"), cache.get("b"), (cache.hits, cache.misses)
    (True, None, (2, 1))
    """

    def __init__(self) -> None:
        self.entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: Hashable) -> torch.Tensor | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return found

    def put(self, key: Hashable, value: torch.Tensor, max_bytes: int) -> bool:
        """Store ``value`` under ``key``; True if kept (one larger than ``max_bytes`` is not)."""
        size = value.numel() * value.element_size()
        if size > max_bytes:
            return False
        old = self.entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        self.entries[key] = value
        self.nbytes += size
        while self.nbytes > max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.nbytes -= dropped.numel() * dropped.element_size()
        return True

    def clear(self) -> None:
        """Forget every entry, and the hit and miss counts."""
        self.entries.clear()
        self.nbytes = self.hits = self.misses = 0


__all__ = ["IntegrityError", "TensorCache", "module_tensors", "sha256_file", "tensors_digest",
           "verify_sha256"]
