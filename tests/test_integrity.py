"""transferkit.foundations.integrity: a file checked against its recorded SHA-256 or refused
with one clear error, weights fingerprinted (the same digest as the embedding cache on disk has
always used), and the byte-bounded tensor cache the feature and bottom caches share."""

import hashlib

import pytest
import torch
from torch import nn

from transferkit.foundations.integrity import (
    IntegrityError,
    TensorCache,
    module_tensors,
    sha256_file,
    tensors_digest,
    verify_sha256,
)

# --- files, verified or refused ------------------------------------------------------------


def test_a_file_with_its_recorded_hash_passes(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01" * 2**20)  # two megabytes: read in more than one block
    recorded = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == recorded
    assert verify_sha256(path, recorded, fix="Reinstall it.") == recorded


def test_a_changed_file_is_refused_naming_file_hashes_and_fix(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"the file transferkit was checked with")
    recorded = sha256_file(path)
    path.write_bytes(b"the file transferkit was checked with!")  # one byte added
    with pytest.raises(IntegrityError) as caught:
        verify_sha256(path, recorded, fix="Reinstall the package.")
    message = str(caught.value)
    assert str(path) in message and recorded in message and sha256_file(path) in message
    assert "Refusing to use it" in message and message.endswith("Reinstall the package.")
    assert isinstance(caught.value, RuntimeError)  # as every old integrity error was


def test_a_missing_file_is_refused_too(tmp_path):
    with pytest.raises(IntegrityError, match=r"absent.bin is missing.*Copy it again"):
        verify_sha256(tmp_path / "absent.bin", "0" * 64, fix="Copy it again.")


def test_unpacked_contents_are_checked_in_place_of_the_file(tmp_path):
    path = tmp_path / "data.xz"
    path.write_bytes(b"packed bytes, not what is hashed")
    text = b"label\ttext\n1\tA gem.\n"
    recorded = hashlib.sha256(text).hexdigest()
    assert verify_sha256(path, recorded, fix="", content=text) == recorded
    with pytest.raises(IntegrityError, match="of its unpacked contents"):
        verify_sha256(path, recorded, fix="", content=text + b"0\tAdded.\n")


# --- weights, fingerprinted ----------------------------------------------------------------


def test_the_digest_format_is_the_one_stored_on_disk():
    """`transferkit.text.model.encode` names its cache files by this digest: changing the
    format would orphan every stored entry, so it is pinned."""
    named = [("w", torch.arange(4, dtype=torch.float32)), ("b", torch.tensor([True, False]))]
    assert tensors_digest(named, salt="Linear(4, 1)") == "f46c63850f217ef53f4a79ea7c75dc4cb79ee5ed"


def test_a_changed_weight_changes_the_digest():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = tensors_digest(module_tensors(net))
    assert tensors_digest(module_tensors(net)) == before  # the same weights: the same digest
    with torch.no_grad():
        net[0].weight[1, 2] += 1e-6
    assert tensors_digest(module_tensors(net)) != before
    with torch.no_grad():
        net[0].weight[1, 2] -= 1e-6
        net[1].running_mean.fill_(0.5)  # a buffer, not a parameter
    assert tensors_digest(module_tensors(net)) != before


def test_names_dtypes_shapes_and_salt_count():
    w = torch.arange(6, dtype=torch.float32)
    base = tensors_digest([("w", w)])
    assert tensors_digest([("v", w)]) != base
    assert tensors_digest([("w", w.double())]) != base
    assert tensors_digest([("w", w.reshape(2, 3))]) != base  # the same bytes, another shape
    assert tensors_digest([("w", w)], salt="ReLU") != base


def test_module_tensors_includes_buffers_left_out_of_the_state_dict():
    net = nn.Linear(2, 2)
    net.register_buffer("shift", torch.ones(2), persistent=False)
    assert [name for name, _ in module_tensors(net)] == ["weight", "bias", "shift"]


# --- results, remembered -------------------------------------------------------------------


def test_a_cache_hit_returns_the_same_object_and_is_counted():
    cache = TensorCache()
    value = torch.ones(3)
    assert cache.get("k") is None
    assert cache.put("k", value, max_bytes=100)
    assert cache.get("k") is value and cache.get("k") is value
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (2, 1, 1, 12)
    cache.clear()
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (0, 0, 0, 0)


def test_the_byte_bound_forgets_the_least_recently_used_first():
    cache = TensorCache()
    for key in "abc":
        cache.put(key, torch.zeros(2), max_bytes=24)  # 8 bytes each: all three fit
    cache.get("a")  # "b" is now the least recently used
    cache.put("d", torch.zeros(2), max_bytes=24)
    assert list(cache.entries) == ["c", "a", "d"] and cache.nbytes == 24
    cache.put("a", torch.zeros(4), max_bytes=24)  # replaced by a larger value: "c" goes
    assert list(cache.entries) == ["d", "a"] and cache.nbytes == 24
    assert not cache.put("e", torch.zeros(7), max_bytes=24)  # larger than the whole cache
    assert "e" not in cache.entries and cache.nbytes == 24
