"""Ways to classify text with few labels, as methods for a label-budget study.

Lesson 07 asks one question of a real pre-trained transformer (MiniLM) and real
review snippets: with 0, a few or a few hundred labels, should you prompt the
model, use its frozen features, fine-tune part or all of it, or train a low-rank
adapter? Each answer is a *method* in the sense of `transferkit.methods.label_budget`:
``method(train, val, seed) -> model``, here a `TextPredictor` that maps texts to
labels, so `label_budget_study` can run them all on the same labelled draws and
the same test snippets, and `compare_to_baseline` can pair them.

==========================  ===================================================  ==========
method                      what learns                                          labels
==========================  ===================================================  ==========
`prompting_method`          nothing: the label whose prompt is most similar      0
`tfidf_method`              logistic regression on word and word-pair counts     all given
`probe_method`              a dense layer on the frozen model's text vectors     all given
`transformer_method`        ``"partial"``: the top k layers + the head;          all given
(`transferkit.text.finetune`) ``"full"``: everything; ``"lora"``: low-rank
                            adapters of the attention + the head
==========================  ===================================================  ==========

**What makes it fit a laptop.** The frozen model's vector of every text is
computed once and looked up afterwards (`EmbeddingTable`, backed by
`transferkit.text.model.encode`'s disk cache); a batch is only as long as its longest
snippet (`TextClassifier`), so training groups snippets of similar length into a
batch (`length_grouped`) and prediction sorts them by length first
(`predict_texts`); partial fine-tuning runs the frozen lower layers once per text
(`transferkit.surgery.cached_bottom`).

Fine-tuning the transformer itself (partial, full, LoRA, and how: a `Recipe`) is
`transferkit.text.finetune`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.foundations.data import Data
from transferkit.foundations.device import seeded
from transferkit.text.model import TextModel, encode, zero_shot_scores
from transferkit.text.reviews import check_texts
from transferkit.training.loop import epochs_for_steps, fit, predict

Method = Callable[[Data, Data, int], "TextPredictor"]


class TextPredictor:
    """What a text method returns: ``predictor(texts)`` gives one label per text.

    ``model`` is what was trained (a scikit-learn pipeline, a head, a
    `TextClassifier` …) and ``measurements`` holds numbers `label_budget_study`
    copies into its rows, e.g. ``trainable_params``. ``encodes`` is the text model a
    prediction runs on each new text first (prompting and the probe read its vectors),
    or None; `prediction_seconds` counts it.
    """

    def __init__(self, predict: Callable[[list[str]], Any], model: Any = None,
                 measurements: Mapping[str, float] | None = None,
                 encodes: TextModel | None = None):
        self._predict, self.model, self.encodes = predict, model, encodes
        self.measurements = dict(measurements or {})

    def __call__(self, texts: Any) -> np.ndarray:
        out = self._predict(check_texts(texts))
        return out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    def __repr__(self) -> str:
        return f"TextPredictor({type(self.model).__name__}, {self.measurements})"


def prediction_seconds(predictor: TextPredictor, texts: Iterable[str]) -> float:
    """Seconds ``predictor`` takes per 1,000 texts it has never seen: the cost of using it.

    Vectors a predictor looks up (prompting, the probe) are computed afresh here, with no
    cache: for a new text, the transformer runs, whatever was cached for the study.
    """
    texts = check_texts(texts)
    start = time.perf_counter()
    if predictor.encodes is not None:
        encode(predictor.encodes, texts, cache=False, progress=False)
        predictor(texts[:1])  # and the cheap rest (a head, a cosine) for one text
        seconds = (time.perf_counter() - start) * 1000 / len(texts)
        return seconds
    predictor(texts)
    return (time.perf_counter() - start) * 1000 / len(texts)


def subsample(data: Data, n: int, seed: int = 0) -> Data:
    """``n`` examples of ``data`` drawn at random, keeping each class's share (stratified).

    For a test set that keeps the natural class balance but is small enough to
    evaluate many times: unlike `transferkit.foundations.data.few_labels`, which draws the same
    number of every class.
    """
    if not isinstance(n, int) or not 0 < n <= len(data):
        raise ValueError(f"n must be an integer from 1 to {len(data)}, got {n!r}.")
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(data.y, return_counts=True)
    shares = (counts.double() * n / len(data)).floor().long()
    shares[torch.argsort(-(counts.double() * n / len(data) - shares))[:n - int(shares.sum())]] += 1
    chosen = []
    for c, k in zip(classes, shares, strict=True):
        members = torch.nonzero(data.y == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:int(k)]])
    index = torch.cat(chosen)
    index = index[torch.randperm(len(index), generator=g)]
    return Data(data.x[index], data.y[index], data.classes)


@contextlib.contextmanager
def one_thread():
    """``with one_thread():`` runs the block on one CPU thread, then restores the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- the frozen model's vectors, computed once ----------------------------------------------


class EmbeddingTable:
    """The frozen model's vector of every text it has seen, computed once.

    ``EmbeddingTable(text_model, pool)`` encodes ``pool`` (e.g. the training
    snippets that labelled draws come from, and the test set) in one pass, which
    `transferkit.text.model.encode` also keeps on disk; ``table.vectors(texts)`` then
    looks texts up, encoding only the ones it has not seen. Mean-pooled, as
    `TextClassifier` pools, so a head trained on these vectors fits that model.
    """

    def __init__(self, text_model: TextModel, *pools: Iterable[str], **encode_options: Any):
        self.text_model, self.encode_options = text_model, encode_options
        self._vectors: dict[str, torch.Tensor] = {}
        for pool in pools:
            self.add(pool)

    def add(self, texts: Iterable[str]) -> None:
        missing = [t for t in dict.fromkeys(check_texts(texts)) if t not in self._vectors]
        if missing:
            vectors = encode(self.text_model, missing, **self.encode_options)
            self._vectors.update(zip(missing, vectors, strict=True))

    def vectors(self, texts: Iterable[str]) -> torch.Tensor:
        texts = check_texts(texts)
        self.add(texts)
        return torch.stack([self._vectors[t] for t in texts])

    def __len__(self) -> int:
        return len(self._vectors)


# --- methods that do not train the transformer ----------------------------------------------


def prompting_method(text_model: TextModel, label_prompts: Mapping[str, Any]) -> Method:
    """Zero-shot prompting (`transferkit.text.model.zero_shot`): no label is used.

    It ignores the labelled draw, so every seed gives the same predictions; in a
    study it is the line a method that uses labels must rise above.
    """
    def method(train: Data, val: Data, seed: int) -> TextPredictor:
        def predict(texts: list[str]) -> torch.Tensor:
            return zero_shot_scores(text_model, texts, label_prompts).argmax(1)
        return TextPredictor(predict, dict(label_prompts), {"trainable_params": 0},
                             encodes=text_model)

    method.__name__ = "prompting"
    return method


def tfidf_method(*, ngram_range: tuple[int, int] = (1, 2), C: float = 10.0,
                 max_iter: int = 2000) -> Method:
    """The baseline a practitioner tries first: TF-IDF + logistic regression (scikit-learn).

    A text becomes the TF-IDF weights of its words and word pairs (``ngram_range``;
    the vocabulary is learnt from the labelled texts only, so a word never seen
    with a label is invisible to it) and a logistic regression (inverse
    regularisation ``C``) separates the classes. Knows nothing of language beyond
    those words: it is what pre-training must beat. Its rows record how many words
    and word pairs it knows (``vocabulary``).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415 (slow import)
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415

    def method(train: Data, val: Data, seed: int) -> TextPredictor:
        pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=True),
            LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
        pipeline.fit(list(train.x), train.y.numpy())
        n = pipeline[-1].coef_.size + pipeline[-1].intercept_.size
        return TextPredictor(lambda texts: pipeline.predict(texts), pipeline,
                             {"trainable_params": n,
                              "vocabulary": len(pipeline[0].vocabulary_)})

    method.__name__ = "TF-IDF"
    return method


def train_probe(vectors: torch.Tensor, y: torch.Tensor, n_classes: int, *, steps: int = 200,
                lr: float = 1e-2, weight_decay: float = 1e-2, batch_size: int = 64,
                seed: int = 0) -> nn.Linear:
    """A dense layer trained with `fit` on frozen vectors (AdamW, a fixed number of steps).

    It trains on one CPU thread: for a layer this small, a second thread costs more in
    hand-overs than it saves (on a busy 2-core machine, 200 steps took 11 s on two threads
    and 0.3 s on one).
    """
    with seeded(seed), one_thread():
        head = nn.Linear(vectors.shape[1], n_classes)
        fit(head, (vectors, y), epochs=epochs_for_steps(len(y), batch_size, steps), lr=lr,
            optimizer="adamw", weight_decay=weight_decay, batch_size=batch_size, seed=seed,
            progress=False)
    return head


def probe_method(table: EmbeddingTable, **probe_options: Any) -> Method:
    """Frozen features + a linear probe: the transformer is never run in training.

    The texts' vectors come from ``table`` (computed once); a dense layer learns on
    them (`train_probe`), and predicting is a look-up and one matrix product.
    """
    def method(train: Data, val: Data, seed: int) -> TextPredictor:
        n_classes = int(train.y.max()) + 1
        head = train_probe(table.vectors(train.x), train.y, n_classes, seed=seed,
                           **probe_options)

        def predict_labels(texts: list[str]) -> torch.Tensor:
            return predict(head, table.vectors(texts))  # on the head's device, back on the CPU
        return TextPredictor(predict_labels, head, {"trainable_params": sum(
            p.numel() for p in head.parameters())}, encodes=getattr(table, "text_model", None))

    method.__name__ = "frozen + probe"
    return method


__all__ = [
    "EmbeddingTable", "Method", "TextPredictor", "one_thread", "prediction_seconds",
    "probe_method", "prompting_method", "subsample", "tfidf_method", "train_probe",
]
