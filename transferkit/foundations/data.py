"""Datasets for the course, as in-memory tensors.

Everything here works offline. The default dataset is scikit-learn's
handwritten digits (1,797 images of 8×8 pixels, ten classes), which ships
inside scikit-learn itself. MNIST, Fashion-MNIST and CIFAR-10 are read through
torchvision from files on disk; they are downloaded only if you ask for it
with ``download=True``.

A dataset is a `Data`: two tensors ``x`` (inputs, floats in [0, 1]) and ``y``
(integer class labels), plus the class names. It unpacks like a pair::

    x, y = load_digits()

The helpers build the settings the course studies:

* `few_labels` keeps k labelled examples per class (the scarce-label regime
  pre-training is meant to help): a *label budget* of k, which `budget_words`
  writes as "k labels per class" (and None, every label, as "all labels");
* `split_classes` makes a *source* task and a *target* task from disjoint
  classes (pre-train on one, fine-tune on the other);
* `train_val_test_split` holds out a validation set for choices and a test
  set that is looked at once;
* `rotate` and `translate` make a *shifted* test set (the same classes, drawn
  differently: out of distribution), and `random_affine` makes random ones,
  to augment data for pre-training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Data:
    """Inputs ``x`` and integer labels ``y`` of one dataset, with class names.

    ``x, y = data`` unpacks it; ``len(data)`` is the number of examples.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(
                f"x has {len(self.x)} examples but y has {len(self.y)} labels; "
                "they must be the same length."
            )

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.x, self.y))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        """Number of classes (from the class names, else from the labels)."""
        if self.classes:
            return len(self.classes)
        return int(self.y.max()) + 1 if len(self.y) else 0

    def __repr__(self) -> str:
        return (
            f"Data(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)} "
            f"{self.y.dtype}, {self.num_classes} classes)"
        )


@dataclass(frozen=True)
class Splits:
    """A train / validation / test split of one dataset."""

    train: Data
    val: Data
    test: Data

    def __iter__(self) -> Iterator[Data]:
        return iter((self.train, self.val, self.test))


def _labels(y: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1:
        raise ValueError(
            f"y must be a 1-D tensor of integer class labels, got dtype={y.dtype} "
            f"shape={tuple(y.shape)}. Convert with y.long()."
        )
    return y.long()


def load_digits(images: bool = False) -> Data:
    """scikit-learn's 8×8 handwritten digits as float tensors in [0, 1].

    ``images=False`` gives ``x`` of shape (1797, 64) for an MLP;
    ``images=True`` gives (1797, 1, 8, 8) for a CNN. No download, ever.
    """
    from sklearn.datasets import load_digits as _sk_load_digits  # slow to import: on use

    bunch = _sk_load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0  # pixels are 0..16
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.long)
    return Data(x, y, tuple(str(c) for c in bunch.target_names))


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}.")


def few_labels(x: torch.Tensor, y: torch.Tensor, per_class: int, seed: int = 0) -> Data:
    """Keep ``per_class`` randomly chosen examples of every class.

    The choice depends only on ``seed``. Asking for more examples than the
    smallest class has is an error (it would silently unbalance the classes).
    """
    y = _labels(y)
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}.")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)} labels.")
    if len(y) == 0:
        raise ValueError("few_labels got no examples (x and y are empty): there is nothing to "
                         "choose from. Pass the labelled data set itself.")
    classes, counts = torch.unique(y, return_counts=True)
    smallest = int(counts.argmin())
    if per_class > int(counts[smallest]):
        raise ValueError(
            f"few_labels asked for {per_class} examples per class, but class "
            f"{int(classes[smallest])} has only {int(counts[smallest])}. "
            f"Ask for at most {int(counts[smallest])} per class, or pass more data."
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        members = torch.nonzero(y == c).flatten()
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:per_class]])
    index = torch.cat(chosen)
    index = index[torch.randperm(len(index), generator=generator)]
    return Data(x[index], y[index])


# A *label budget* is the ``per_class`` of `few_labels`, or None for every training label.
Budget = int | None


def budget_label(budget: Budget) -> str:
    """A budget as a table cell or slider label: ``"3"``, or ``"all"`` for None."""
    return "all" if budget is None else str(budget)


def budget_words(budget: Budget | str) -> str:
    """A budget in words: ``"1 label per class"``, ``"3 labels per class"``, and
    ``"all labels"`` for None (or ``"all"``, as tables and sliders write it)."""
    if budget is None or budget == "all":
        return "all labels"
    return f"{budget} label{'' if budget == 1 else 's'} per class"


def split_classes(
    x: torch.Tensor,
    y: torch.Tensor,
    source: Sequence[int],
    target: Sequence[int] | None = None,
) -> tuple[Data, Data]:
    """Split one dataset into a source task and a target task by class.

    ``target`` defaults to every class not in ``source``. Labels are renumbered
    0..k-1 within each task (in the order given), so each task is an ordinary
    classification problem; ``Data.classes`` keeps the original labels.

    >>> x, y = load_digits()
    >>> src, tgt = split_classes(x, y, source=[0, 1, 2, 3, 4])
    >>> tgt.classes
    ('5', '6', '7', '8', '9')
    """
    y = _labels(y)
    present = [int(c) for c in torch.unique(y)]
    source = [int(c) for c in source]
    target = [c for c in present if c not in source] if target is None else [int(c) for c in target]
    for name, group in (("source", source), ("target", target)):
        if not group:
            raise ValueError(f"the {name} task has no classes.")
        unknown = sorted(set(group) - set(present))
        if unknown:
            raise ValueError(f"{name} classes {unknown} do not occur in y (classes: {present}).")
        if len(set(group)) != len(group):
            raise ValueError(f"{name} classes {group} contain a repeat.")
    overlap = sorted(set(source) & set(target))
    if overlap:
        raise ValueError(
            f"classes {overlap} are in both the source and the target task; "
            "a transfer experiment needs disjoint tasks."
        )

    def task(group: list[int]) -> Data:
        mask = torch.isin(y, torch.tensor(group))
        relabel = torch.full((max(present) + 1,), -1, dtype=torch.long)
        relabel[torch.tensor(group)] = torch.arange(len(group))
        return Data(x[mask], relabel[y[mask]], tuple(str(c) for c in group))

    return task(source), task(target)


def train_val_test_split(
    x: torch.Tensor,
    y: torch.Tensor,
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
) -> Splits:
    """Split into train / validation / test parts (fractions of the whole).

    With ``stratify=True`` every part keeps the class proportions of ``y``.
    Choose models and settings on ``val``; report ``test`` once, at the end.
    """
    from sklearn.model_selection import train_test_split  # slow to import: on use

    y = _labels(y)
    _check_fraction("val", val)
    _check_fraction("test", test)
    if val + test >= 1:
        raise ValueError(f"val + test must leave some training data, got {val} + {test}.")
    index = np.arange(len(y))
    labels = y.numpy()
    rest, test_idx = train_test_split(
        index, test_size=test, random_state=seed, stratify=labels if stratify else None
    )
    train_idx, val_idx = train_test_split(
        rest,
        test_size=val / (1 - test),
        random_state=seed,
        stratify=labels[rest] if stratify else None,
    )

    def part(idx: np.ndarray) -> Data:
        idx = torch.from_numpy(idx)
        return Data(x[idx], y[idx])

    return Splits(part(train_idx), part(val_idx), part(test_idx))


# --- shifted inputs: the same classes, drawn differently ------------------------------


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images as they are; flat square images (N, H·W) as (N, 1, H, W)."""
    if x.ndim == 4:
        return x
    side = math.isqrt(x.shape[-1]) if x.ndim == 2 else 0
    if x.ndim != 2 or side * side != x.shape[-1]:
        raise ValueError(f"expected images (N, C, H, W) or flat square images (N, H*W), got "
                         f"shape {tuple(x.shape)}.")
    return x.reshape(len(x), 1, side, side)


def _warp(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle`` (radians, counter-clockwise) about its centre and
    move it by ``shift`` (pixels, (dx, dy)); pixels from outside the image are 0."""
    images = _as_images(x).float()
    # the sampling grid is made where the images are (a GPU's images, a GPU's grid)
    angle, shift = angle.to(images.device), shift.to(images.device)
    height, width = images.shape[-2:]
    c, s = torch.cos(angle), torch.sin(angle)
    # affine_grid maps output → input, in [-1, 1] units
    tx, ty = -2 * shift[:, 0] / width, -2 * shift[:, 1] / height
    theta = torch.stack([torch.stack([c, -s, tx], 1), torch.stack([s, c, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False).reshape(x.shape)


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Every image rotated by ``degrees`` about its centre (bilinear; corners filled with 0).

    Works on image tensors (N, C, H, W) and on flat square images such as the
    digits' (N, 64); returns the input's shape.

    >>> x, _ = load_digits()
    >>> rotate(x[:5], 20).shape
    torch.Size([5, 64])
    """
    n = len(x)
    return _warp(x, torch.full((n,), math.radians(degrees), device=x.device),
                 torch.zeros(n, 2, device=x.device))


def invert(x: torch.Tensor) -> torch.Tensor:
    """Every image in negative: dark strokes on a light background (``1 − x``, for
    pixels in [0, 1] as `load_digits` gives them). Same digits, new domain."""
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("invert expects pixels in [0, 1] (load_digits' scale); got values "
                         f"from {x.min().item():.3g} to {x.max().item():.3g}.")
    return 1 - x


def translate(x: torch.Tensor, dx: float = 1, dy: float = 0) -> torch.Tensor:
    """Every image moved ``dx`` pixels right and ``dy`` down (zeros come in)."""
    n = len(x)
    shift = torch.empty(n, 2, device=x.device)
    shift[:, 0], shift[:, 1] = float(dx), float(dy)
    return _warp(x, torch.zeros(n, device=x.device), shift)


def random_affine(x: torch.Tensor, degrees: float = 20.0, shift: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image rotated by a random angle in [−degrees, degrees] and moved by up to
    ``shift`` pixels each way: data augmentation (e.g. for `pretrain`'s ``augment=``)."""
    n = len(x)
    # drawn where the generator is (torch's global one: where x is): no copy per batch
    where = dict(generator=generator, device=generator.device if generator else x.device)
    angle = (torch.rand(n, **where) * 2 - 1) * math.radians(degrees)
    moves = (torch.rand(n, 2, **where) * 2 - 1) * shift
    return _warp(x, angle, moves)


# --- torchvision datasets, read from local files -------------------------------------


class DatasetNotFoundError(FileNotFoundError):
    """A torchvision dataset's files are not on disk (and no download was asked for)."""


_TORCHVISION = {
    # our name: (torchvision class, folder torchvision reads, loader to call)
    "mnist": ("MNIST", "MNIST/raw", "load_mnist"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", "load_fashion_mnist"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "load_cifar10"),
}


def _load_torchvision(name: str, root: str | Path, train: bool, download: bool) -> Data:
    import torchvision.datasets  # heavy, and only these loaders need it

    cls_name, folder, loader = _TORCHVISION[name]
    root = Path(root).expanduser()
    cls = getattr(torchvision.datasets, cls_name)
    top = folder.split("/")[0]
    try:
        dataset = cls(str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:
        if download:  # torchvision reports a failed download as a RuntimeError
            raise DatasetNotFoundError(
                f"Downloading {cls_name} into {root} failed: {err}\nThis machine seems to be "
                f"offline. Download it elsewhere and copy the '{top}' folder into {root}, "
                f"then call {loader}({str(root)!r}) without download=True."
            ) from None
        raise DatasetNotFoundError(
            f"{cls_name} is not in {root} (torchvision looks in {root / folder}): {err}\n"
            f"transferkit never downloads data unless asked. To get it, on a machine with "
            f"internet run transferkit.foundations.data.{loader}({str(root)!r}, download=True), "
            "or copy "
            f"the '{top}' folder from a machine that has it into {root}. "
            "The lessons' default dataset, load_digits(), needs no download."
        ) from None

    data = torch.as_tensor(np.asarray(dataset.data))
    if data.ndim == 3:  # MNIST-style (N, H, W) grey images
        x = data.unsqueeze(1)
    else:  # CIFAR-style (N, H, W, C) colour images
        x = data.permute(0, 3, 1, 2)
    x = x.float().div_(255.0).contiguous()
    y = torch.as_tensor(dataset.targets, dtype=torch.long)
    return Data(x, y, tuple(dataset.classes))


def load_mnist(root: str | Path, train: bool = True, download: bool = False) -> Data:
    """MNIST (60,000 + 10,000 digits, 1×28×28) from ``root`` via torchvision."""
    return _load_torchvision("mnist", root, train, download)


def load_fashion_mnist(root: str | Path, train: bool = True, download: bool = False) -> Data:
    """Fashion-MNIST (60,000 + 10,000 clothing images, 1×28×28) from ``root``."""
    return _load_torchvision("fashion_mnist", root, train, download)


def load_cifar10(root: str | Path, train: bool = True, download: bool = False) -> Data:
    """CIFAR-10 (50,000 + 10,000 colour images, 3×32×32) from ``root``.

    torchvision checks the files' MD5 checksums, so a truncated or altered
    download is reported instead of loaded.
    """
    return _load_torchvision("cifar10", root, train, download)


# --- checks that keep a run from going silently wrong ---------------------------------


def check_finite(name: str, tensor: torch.Tensor, fix: str | None = None) -> torch.Tensor:
    """``tensor`` itself, or a ValueError that names it and counts its NaN and infinite values.

    One NaN in a mini-batch makes the loss NaN, its gradient NaN, and after a single
    optimizer step every weight NaN: the run is lost, and nothing says why. So data
    is checked before training, not after. Integer tensors (labels, token ids) are
    always finite and pass unchecked. ``fix`` replaces the advice at the end of the
    message (by default: how to drop the rows that hold them).

    >>> check_finite("x", torch.tensor([[0.5, 1.0], [float("nan"), 2.0]]))
    Traceback (most recent call last):
    ...
    ValueError: x holds 1 NaN (in 1 of its 2 rows, the first at row 1). Fix or drop those ...
    """
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        return tensor
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return tensor
    nans = int(torch.isnan(tensor).sum())
    infs = int(bad.sum()) - nans
    counts = " and ".join(f"{n:,} {word}{'s' if n > 1 else ''}"
                          for n, word in ((nans, "NaN"), (infs, "infinite value")) if n)
    if tensor.ndim == 0:
        raise ValueError(f"{name} is {tensor.item()}, not a finite number.")
    rows = bad.reshape(len(tensor), -1).any(1)
    fix = fix or ("Fix or drop those rows before training, e.g. keep = "
                  "torch.isfinite(x).flatten(1).all(1); x, y = x[keep], y[keep].")
    raise ValueError(f"{name} holds {counts} (in {int(rows.sum()):,} of its {len(tensor):,} "
                     f"rows, the first at row {int(rows.nonzero()[0])}). {fix}")


def check_finite_inputs(train: Any, val: Any = None, model: nn.Module | None = None) -> None:
    """Refuse NaN and infinite numbers before training starts: in the inputs and targets of
    ``train`` and ``val`` (each an ``(x, y)`` pair, a `Data` or a TensorDataset) and in
    ``model``'s parameters. The error names the tensor and counts them (`check_finite`);
    `transferkit.training.loop.fit` and `transferkit.methods.finetune.fine_tune` call it first
    of all."""
    for part, data in (("train", train), ("val", val)):
        pair = getattr(data, "tensors", data)  # a TensorDataset keeps its tensors there
        if isinstance(pair, (tuple, list, Data)):  # anything else: fit's own error follows
            for role, t in zip(("x (the inputs)", "y (the targets)"), pair, strict=False):
                check_finite(f"{part} {role}", t)
    for name, p in model.named_parameters() if model is not None else ():
        check_finite(f"the model's parameter {name}", p.detach(),
                     fix="Training cannot repair it: rebuild or reload the model.")


def check_labels(y: torch.Tensor | np.ndarray | Sequence[int], name: str = "y") -> int:
    """The number of classes C of the labels ``y``, once they are checked to be the
    classes 0 … C−1, each with at least one example; otherwise a ValueError naming the gaps.

    A classifier gets one output per class, so a stray label of 100,000 would build a
    100,001-way head that trains without a word; a label of 10**9 would ask for
    gigabytes. Labels with gaps are refused instead, and the fix is named.

    >>> check_labels(torch.tensor([0, 2, 1, 2]))
    3
    >>> check_labels(torch.tensor([0, 1, 7]))
    Traceback (most recent call last):
    ...
    ValueError: y runs from 0 to 7, but 5 of those 8 classes have no example (2 … 6). ...
    """
    y = _labels(y)
    if len(y) == 0:
        raise ValueError(f"{name} is empty: there are no labels.")
    present = torch.unique(y).tolist()  # sorted; at most one per example
    if present[0] < 0:
        raise ValueError(f"{name} holds the negative label {present[0]}; class labels are "
                         "0, 1, 2, …. Number the classes from 0.")
    classes = present[-1] + 1
    if len(present) == classes:
        return classes
    gaps = [(a + 1, b - 1) for a, b in zip([-1, *present], present, strict=False)
            if b > a + 1]
    shown = ", ".join(str(a) if a == b else f"{a} … {b}" for a, b in gaps[:3])
    missing = classes - len(present)
    raise ValueError(
        f"{name} runs from 0 to {classes - 1}, but {missing:,} of those {classes:,} classes "
        f"{'has' if missing == 1 else 'have'} no example ({shown}"
        f"{', …' if len(gaps) > 3 else ''}). "
        f"Number the classes 0 … {len(present) - 1} (e.g. y = torch.unique(y, "
        "return_inverse=True)[1]).")
