"""Labelled text, offline: film-review snippets, and the checks every text input passes.

The course's text data set is 12,749 one-sentence Rotten Tomatoes review snippets,
each labelled ``fresh`` (the critic liked the film) or ``rotten``. It ships inside
transferkit (``assets/reviews.tsv.xz``, 456 KB; its data card is
``assets/reviews.md``), so it loads with no network and no extra package::

    texts, labels = load_reviews()
    load_reviews().classes            # ('rotten', 'fresh'): label 0 and label 1

A text data set is an ordinary `transferkit.foundations.data.Data` whose ``x`` is `Texts`, a
read-only list of strings that a tensor of positions indexes exactly as it would
index a tensor (``texts[idx]`` is the `Texts` at those positions). So the helpers
of `transferkit.foundations.data` work on it unchanged: `few_labels` keeps k snippets per class,
`train_val_test_split` splits it (stratified), and `reviews_splits` gives the
course's fixed split, whose test part is the same on every machine and every run:
look at it once, at the end.

Two facts about the data matter for every experiment:

* **The floor.** 57.8 % of the snippets are fresh, so always answering "fresh"
  scores 0.578 (`majority_accuracy`). A method is only worth something above that.
* **No leaks.** 56 snippets occurred twice in the source; the file here is
  de-duplicated, and `load_reviews` also keeps one snippet of each of three pairs that
  differ only in case or punctuation ("Abysmally pathetic" / "abysmally pathetic";
  `distinct_texts`), all *before* any split: no text is in two parts of a split, even
  with case and punctuation folded (`normalized`).

Every load checks the SHA-256 of the text against `REVIEWS_SHA256`: a damaged or
altered file is refused (`transferkit.foundations.integrity.IntegrityError`), never silently
used. `check_texts` is the gate every text function passes: it turns empty,
non-string and mismatched inputs into one clear error instead of a traceback from
deep inside a tokenizer.
"""

from __future__ import annotations

import lzma
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.foundations.data import Data, Splits, train_val_test_split
from transferkit.foundations.integrity import IntegrityError, verify_sha256

ASSETS = Path(__file__).resolve().parents[1] / "assets"  # transferkit/assets
REVIEWS_FILE = ASSETS / "reviews.tsv.xz"
# SHA-256 of the unpacked text (tools/build_reviews.py prints it; the data card has it)
REVIEWS_SHA256 = "4984c82d67c04d29a5be57fc8d49d07fbfbfc22dc97d72ab8c0da0602866c404"
REVIEWS_COUNT = 12_749  # the file holds 12,752; 3 near-duplicates are left out (distinct_texts)
REVIEW_CLASSES = ("rotten", "fresh")  # label 0, label 1
REVIEWS_SPLIT_SEED = 0  # the course's one fixed split: its test part never changes


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """``texts`` as a list of strings, or a clear error.

    Accepts a list, tuple or NumPy array of strings (a single string is refused:
    it is almost always a forgotten ``[...]``). Refuses an empty collection, a
    non-string item and a blank one, naming the first few positions.

    >>> check_texts(("good", "bad"))
    ['good', 'bad']
    >>> check_texts(["fine", 3])
    Traceback (most recent call last):
    ...
    TypeError: texts must all be strings; item 1 is int (3).
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, got one string; wrap it: [{name}].")
    if isinstance(texts, torch.Tensor) or not isinstance(texts, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list (or array) of strings, got "
                        f"{type(texts).__name__}.")
    texts = list(texts.tolist() if isinstance(texts, (np.ndarray, Texts)) else texts)
    if not texts:
        raise ValueError(f"{name} is empty: there is nothing to process.")
    wrong = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if wrong:
        i = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise TypeError(f"{name} must all be strings; item {i} is {type(texts[i]).__name__} "
                        f"({texts[i]!r:.40}){more}.")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise ValueError(f"{name} has {len(blank)} empty or blank item(s), at positions "
                         f"{blank[:5]}{' …' if len(blank) > 5 else ''}; remove them.")
    return texts


class Texts(Sequence[str]):
    """A read-only list of strings that can be indexed like a tensor.

    ``texts[3]`` is a string; ``texts[idx]`` with a tensor, array or list of
    positions, a boolean mask or a slice is a new `Texts`. That is all
    `few_labels` and `train_val_test_split` ask of a data set's ``x``.

    >>> t = Texts(["a", "b", "c"])
    >>> t[torch.tensor([2, 0])], t[1]
    (Texts(['c', 'a']), 'b')
    """

    def __init__(self, texts: Iterable[str]):
        items = list(texts)
        self._items = np.empty(len(items), dtype=object)
        self._items[:] = items

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, (int, np.integer)) or (
                isinstance(index, np.ndarray) and index.ndim == 0):
            return str(self._items[int(index)])
        return Texts(self._items[index])

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items.tolist())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Texts) and self._items.tolist() == other._items.tolist()

    __hash__ = None  # a mutable-looking container: not hashable, like a list

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._items.astype(object if dtype is None else dtype)

    def tolist(self) -> list[str]:
        return self._items.tolist()

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    dtype = "str"  # what Data's repr shows

    def __repr__(self) -> str:
        shown = self._items[:3].tolist()
        more = f" and {len(self) - 3:,} more" if len(self) > 3 else ""
        return f"Texts({shown!r}{more})"


def text_data(texts: Iterable[str], labels: Any, classes: Sequence[str] = ()) -> Data:
    """A `Data` of texts: ``x`` a `Texts`, ``y`` integer labels.

    >>> d = text_data(["good film", "dull"], [1, 0], ("rotten", "fresh"))
    >>> d.x[1], int(d.y[1]), d.num_classes
    ('dull', 0, 2)
    """
    texts = check_texts(list(texts) if not isinstance(texts, (Sequence, np.ndarray))
                        else texts)
    y = torch.as_tensor(labels)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D sequence of integer classes, got dtype "
                         f"{y.dtype} and shape {tuple(y.shape)}.")
    if len(texts) != len(y):
        raise ValueError(f"there are {len(texts)} texts but {len(y)} labels; each text "
                         "needs exactly one label.")
    return Data(Texts(texts), y.long(), tuple(classes))


def normalized(text: str) -> str:
    """``text`` with case, accents, punctuation and spacing folded away: its letters and
    digits only, lower-cased. Two snippets with the same normalized form are the same
    snippet to a model that reads words, so they must not land on both sides of a split.

    >>> normalized("'Abysmally  pathetic!'") == normalized("abysmally pathetic")
    True
    """
    decomposed = unicodedata.normalize("NFKD", text).casefold()  # é → e + an accent mark
    return _NOT_ALPHANUMERIC.sub("", decomposed)


_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")  # punctuation, spaces, accent marks


def distinct_texts(data: Data) -> Data:
    """``data`` with one example per `normalized` text (the first; labels of dropped
    copies must agree with it, or the text is ambiguous and an error says which)."""
    first: dict[str, int] = {}
    for i, text in enumerate(data.x):
        key = normalized(text)
        j = first.setdefault(key, i)
        if j != i and int(data.y[j]) != int(data.y[i]):
            raise ValueError(f"{data.x[j]!r} and {text!r} are the same text with different "
                             "labels; fix one of them.")
    keep = torch.tensor(sorted(first.values()))
    return Data(data.x[keep], data.y[keep], data.classes)


def _read_reviews(path: Path) -> str:
    try:
        raw = lzma.decompress(path.read_bytes())
    except FileNotFoundError:
        raise IntegrityError(
            f"{path} is missing: transferkit was installed without its data files. "
            "Reinstall it (pip install --force-reinstall transferkit, or pip install -e . "
            "from the course folder).") from None
    except lzma.LZMAError as err:
        raise IntegrityError(f"{path} is damaged (not a complete xz file: {err}). "
                             "Reinstall transferkit, or rebuild it with "
                             "tools/build_reviews.py.") from None
    verify_sha256(path, REVIEWS_SHA256, content=raw, fix="Reinstall transferkit, or rebuild "
                  "the file with tools/build_reviews.py.")
    return raw.decode("utf-8")


def load_reviews(path: str | Path | None = None) -> Data:
    """The 12,749 Rotten Tomatoes snippets: ``texts, labels = load_reviews()``.

    ``x`` holds the texts (a `Texts`), ``y`` the labels (0 = rotten,
    1 = fresh), ``classes`` their names. The file's content is checked against
    `REVIEWS_SHA256` first (``path`` is for tests of that check); of its 12,752
    snippets, the three that repeat another but for case or punctuation are left out
    (`distinct_texts`). Takes about 0.1 s; nothing is downloaded.

    >>> reviews = load_reviews()
    >>> len(reviews), reviews.classes
    (12749, ('rotten', 'fresh'))
    >>> reviews.x[0]
    'A three-hour cinema master class.'
    """
    lines = _read_reviews(Path(path) if path is not None else REVIEWS_FILE).splitlines()
    if lines[0] != "label\ttext":
        raise IntegrityError(f"unexpected header {lines[0]!r} in the reviews file.")
    labels, texts = zip(*(line.split("\t", 1) for line in lines[1:]), strict=True)
    index = {name: i for i, name in enumerate(REVIEW_CLASSES)}
    return distinct_texts(text_data(texts, [index[label] for label in labels], REVIEW_CLASSES))


def reviews_splits(val: float = 0.2, test: float = 0.2) -> Splits:
    """The course's fixed, stratified train / validation / test split of `load_reviews`.

    No two parts share a text, even with case and punctuation folded (`load_reviews`
    keeps one snippet per `normalized` form). Seeded with `REVIEWS_SPLIT_SEED`, so
    every lesson and every machine gets the same test snippets (2,550 of them with the
    default fractions). Choose on ``val``; report
    ``test`` once (wrap it in `transferkit.methods.selection.SealedTestSet`). Draw labelled
    subsets from ``train`` with `transferkit.foundations.data.few_labels`.

    >>> train, val, test = reviews_splits()
    >>> len(train), len(val), len(test)
    (7649, 2550, 2550)
    """
    reviews = load_reviews()
    splits = train_val_test_split(reviews.x, reviews.y, val=val, test=test,
                                  seed=REVIEWS_SPLIT_SEED)
    return Splits(*(Data(part.x, part.y, REVIEW_CLASSES) for part in splits))


def majority_accuracy(y: Any) -> float:
    """The accuracy of always answering the most frequent class of ``y``: the floor.

    >>> majority_accuracy([1, 1, 0, 1])
    0.75
    """
    y = torch.as_tensor(y)
    if y.numel() == 0:
        raise ValueError("majority_accuracy needs at least one label.")
    return float(torch.bincount(y.long()).max()) / y.numel()


__all__ = [
    "ASSETS", "REVIEWS_COUNT", "REVIEWS_FILE", "REVIEWS_SHA256", "REVIEWS_SPLIT_SEED",
    "REVIEW_CLASSES", "Texts", "check_texts", "distinct_texts", "load_reviews",
    "majority_accuracy", "normalized", "reviews_splits", "text_data",
]
