import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from transferkit.foundations import data
from transferkit.foundations.data import (
    Data,
    DatasetNotFoundError,
    check_finite,
    check_labels,
    few_labels,
    load_digits,
    split_classes,
    train_val_test_split,
)


def test_load_digits_shapes_range_and_classes():
    d = load_digits()
    x, y = d  # unpacks like a pair
    assert x.shape == (1797, 64) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.long
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
    assert d.classes == tuple(str(i) for i in range(10)) and d.num_classes == 10
    assert load_digits(images=True).x.shape == (1797, 1, 8, 8)


def test_data_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 examples but y has 2"):
        Data(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_few_labels_is_balanced_seeded_and_a_subset():
    x, y = load_digits()
    a = few_labels(x, y, per_class=5, seed=1)
    assert len(a) == 50
    assert torch.bincount(a.y, minlength=10).tolist() == [5] * 10
    assert torch.equal(a.x, few_labels(x, y, 5, seed=1).x)
    assert not torch.equal(a.x, few_labels(x, y, 5, seed=2).x)
    # every chosen row is a real row with its own label
    for row, label in zip(a.x[:10], a.y[:10], strict=True):
        matches = (x == row).all(dim=1).nonzero().flatten()
        assert label in y[matches]


def test_few_labels_asking_for_too_many_names_the_class():
    x, y = load_digits()
    smallest = int(torch.bincount(y).min())
    with pytest.raises(ValueError, match=rf"has only {smallest}.*at most {smallest}"):
        few_labels(x, y, per_class=smallest + 1)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_few_labels_rejects_bad_counts(bad):
    x, y = load_digits()
    with pytest.raises(ValueError, match="positive integer"):
        few_labels(x, y, bad)


def test_few_labels_rejects_float_labels():
    x, y = load_digits()
    with pytest.raises(ValueError, match=r"y.long\(\)"):
        few_labels(x, y.float(), 3)


def test_few_labels_on_empty_data_is_a_clear_error():
    with pytest.raises(ValueError, match="few_labels got no examples"):
        few_labels(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 2)


def test_check_finite_names_the_tensor_and_counts_what_is_wrong():
    x = torch.zeros(5, 3)
    assert check_finite("x", x) is x
    assert check_finite("ids", torch.arange(4)) is not None  # integers are always finite
    x[1, 2], x[3, 0], x[3, 1] = float("nan"), float("inf"), -float("inf")
    with pytest.raises(ValueError, match=r"^train x holds 1 NaN and 2 infinite values \(in 2 of "
                       r"its 5 rows, the first at row 1\)\. Fix or drop"):
        check_finite("train x", x)
    with pytest.raises(ValueError, match="the weights w holds 1 NaN .* Reload it"):
        check_finite("the weights w", x[:2], fix="Reload it.")


@pytest.mark.parametrize("labels, words", [
    ([0, 1, 10**9], r"runs from 0 to 1000000000, but 999,999,998 of those 1,000,000,001 classes "
                    r"have no example \(2 … 999999999\)\. Number the classes 0 … 2"),
    ([0, 2, 4, 6, 8, 10, 12], r"6 of those 13 classes have no example \(1, 3, 5, …\)"),
    ([1, 2], r"1 of those 3 classes has no example \(0\)"),
    ([-1, 0], "negative label -1"),
    ([], "empty"),
])
def test_check_labels_refuses_gaps_naming_them(labels, words):
    with pytest.raises(ValueError, match=words):
        check_labels(torch.tensor(labels, dtype=torch.long))


def test_check_labels_counts_the_classes():
    assert check_labels(torch.tensor([2, 0, 1, 1])) == 3
    assert check_labels(load_digits().y) == 10


def test_split_classes_relabels_and_is_disjoint():
    x, y = load_digits()
    src, tgt = split_classes(x, y, source=[0, 1, 2, 3, 4])
    assert src.classes == ("0", "1", "2", "3", "4") and tgt.classes == ("5", "6", "7", "8", "9")
    assert set(src.y.tolist()) == set(range(5)) == set(tgt.y.tolist())
    assert len(src) + len(tgt) == len(y)
    # relabelled target class 0 is original digit 5
    assert torch.equal(tgt.x[tgt.y == 0], x[y == 5])


def test_split_classes_order_defines_new_labels():
    x, y = load_digits()
    _, tgt = split_classes(x, y, source=[0], target=[9, 3])
    assert torch.equal(tgt.x[tgt.y == 0], x[y == 9])


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [([1, 2], [2, 3], "both the source and the target"), ([11], None, "do not occur"),
     ([], None, "no classes"), ([1, 1], None, "repeat")],
)
def test_split_classes_bad_input(source, target, message):
    x, y = load_digits()
    with pytest.raises(ValueError, match=message):
        split_classes(x, y, source, target)


def test_train_val_test_split_sizes_disjoint_stratified():
    x, y = load_digits()
    s = train_val_test_split(x, y, val=0.2, test=0.2, seed=0)
    train, val, test = s
    assert len(train) + len(val) + len(test) == len(y)
    assert abs(len(test) - 0.2 * len(y)) <= 1 and abs(len(val) - 0.2 * len(y)) <= 1
    rows = {tuple(r.tolist()) for part in s for r in part.x}
    assert len(rows) >= len(y) - 50  # a few digits images are exact duplicates
    for part in s:  # stratified: every class within 2 examples of its share
        share = torch.bincount(y, minlength=10) * len(part) / len(y)
        assert (torch.bincount(part.y, minlength=10) - share).abs().max() <= 2
    again = train_val_test_split(x, y, seed=0)
    assert torch.equal(again.test.x, test.x)


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (0, 0.2), (0.2, 1.2)])
def test_train_val_test_split_rejects_bad_fractions(val, test):
    x, y = load_digits()
    with pytest.raises(ValueError):
        train_val_test_split(x, y, val=val, test=test)


# --- torchvision datasets from files the test writes in the real on-disk formats ------


def _write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def _fake_mnist(root, folder: str, n_train=12, n_test=5):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images[split] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", images[split])
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    return images


@pytest.mark.parametrize(
    ("loader", "folder"),
    [(data.load_mnist, "MNIST"), (data.load_fashion_mnist, "FashionMNIST")],
)
def test_mnist_style_loaders_read_idx_files(tmp_path, loader, folder):
    images = _fake_mnist(tmp_path, folder)
    train = loader(tmp_path)
    test = loader(tmp_path, train=False)
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert torch.allclose(train.x[3, 0], torch.from_numpy(images["train"][3]).float() / 255)
    assert train.y.tolist() == [i % 10 for i in range(12)]
    assert len(train.classes) == 10


def _fake_cifar(root, monkeypatch, n=6):
    import torchvision.datasets as tvd

    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, size=n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
             "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    # The real checksums identify the real files; ours identify the small ones.
    monkeypatch.setattr(tvd.CIFAR10, "train_list",
                        [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5("batches.meta")})
    return batches


def test_cifar10_loader_reads_pickled_batches(tmp_path, monkeypatch):
    batches = _fake_cifar(tmp_path, monkeypatch)
    train = data.load_cifar10(tmp_path)
    assert train.x.shape == (30, 3, 32, 32) and train.classes[0] == "airplane"
    first = batches["data_batch_1"]["data"][0].reshape(3, 32, 32)
    assert torch.allclose(train.x[0], torch.from_numpy(first).float() / 255)
    test = data.load_cifar10(tmp_path, train=False)
    assert test.y.tolist() == batches["test_batch"]["labels"]


def test_cifar10_altered_file_is_reported(tmp_path, monkeypatch):
    _fake_cifar(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"truncated")
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        data.load_cifar10(tmp_path, train=False)


@pytest.mark.parametrize(
    ("loader", "folder"),
    [(data.load_mnist, "MNIST"), (data.load_fashion_mnist, "FashionMNIST"),
     (data.load_cifar10, "cifar-10-batches-py")],
)
def test_missing_dataset_fails_fast_offline_with_instructions(tmp_path, loader, folder):
    with pytest.raises(DatasetNotFoundError) as info:
        loader(tmp_path / "nowhere")
    message = str(info.value)
    assert folder in message and "download=True" in message and "load_digits()" in message
    assert isinstance(info.value, FileNotFoundError)


def test_failed_download_is_explained(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.mnist as mnist_module

    def offline(*args, **kwargs):  # what urllib raises on a machine without internet
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mnist_module, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="offline"):
        data.load_mnist(tmp_path, download=True)


# --- shifted inputs ------------------------------------------------------------------------


def test_translate_moves_a_pixel_right_and_down():
    from transferkit.foundations.data import translate

    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 2, 3] = 1.0
    assert translate(img, 1, 0)[0, 0].nonzero().tolist() == [[2, 4]]
    assert translate(img, 0, 1)[0, 0].nonzero().tolist() == [[3, 3]]
    assert translate(img.reshape(1, 64), 1, 0).reshape(8, 8).nonzero().tolist() == [[2, 4]]


def test_rotate_keeps_shape_and_changes_images_and_refuses_non_square():
    from transferkit.foundations.data import rotate

    x, _ = load_digits()
    assert torch.allclose(rotate(x[:10], 0), x[:10], atol=1e-6)
    turned = rotate(x[:10], 90)
    assert turned.shape == (10, 64)
    # a quarter turn counter-clockwise: column j of the original becomes row 7 - j
    assert torch.allclose(turned.reshape(10, 8, 8), x[:10].reshape(10, 8, 8).rot90(1, (1, 2)),
                          atol=1e-5)
    assert not torch.allclose(rotate(x[:10], 20), x[:10], atol=0.05)
    with pytest.raises(ValueError, match="flat square images"):
        rotate(torch.zeros(3, 10), 20)


def test_random_affine_is_random_per_image_and_seeded():
    from transferkit.foundations.data import random_affine

    x, _ = load_digits()
    a = random_affine(x[:20], generator=torch.Generator().manual_seed(0))
    b = random_affine(x[:20], generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (20, 64)
    assert not torch.allclose(a, x[:20], atol=0.05)
