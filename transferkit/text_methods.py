"""Ways to classify text with few labels, as methods for a label-budget study.

Lesson 07 asks one question of a real pre-trained transformer (MiniLM) and real
review snippets: with 0, a few or a few hundred labels, should you prompt the
model, use its frozen features, fine-tune part or all of it, or train a low-rank
adapter? Each answer is a *method* in the sense of `transferkit.experiments`:
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
                            ``"full"``: everything; ``"lora"``: low-rank
                            adapters of the attention + the head
==========================  ===================================================  ==========

**What makes it fit a laptop.** The frozen model's vector of every text is
computed once and looked up afterwards (`EmbeddingTable`, backed by
`transferkit.text.encode`'s disk cache); a batch is only as long as its longest
snippet (`TextClassifier`), so training groups snippets of similar length into a
batch (`length_grouped`) and prediction sorts them by length first
(`predict_texts`); partial fine-tuning runs the frozen lower layers once per text
(`transferkit.cached_bottom`).

**How the transformer is fine-tuned** is a `Recipe`: the rates, the schedule (BERT's
linear warm-up and decay), weight decay off LayerNorm and biases, how many epochs, and
how the head starts. `RECIPES` holds the ones chosen on the validation split by
``tools/choose_text_recipe.py`` for each strategy. Two lessons of that search
(Mosbach et al. 2021, Zhang et al. 2021 saw the same on BERT): fine-tuning needs
enough steps (several epochs; a few steps measure the budget, not the method), and
how it starts matters. From the linear probe's head (LP-FT, Kumar et al. 2022: a
second, full fine-tuning stage after the probe, meant to keep the pre-trained
features in place, e.g. for robustness under a shift) the head already fits, the
gradients that reach the encoder are small and its features barely move; from a
fresh head the encoder adapts to the task. MiniLM was trained for similarity, not
sentiment, so here adapting is what pays.

**Rates.** A transformer's pre-trained weights take small steps (1e-5 to 1e-4
with Adam); the new head, and LoRA's new matrices, larger ones (1e-3). A
CNN-sized rate for the whole transformer destroys what pre-training learned:
lesson 07 measures it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .cached_bottom import CachedBottomClassifier
from .callbacks import StepCurve
from .data import Data
from .device import model_device, pick_device, seeded
from .finetune import feature_drift
from .freezing import no_weight_decay
from .heads import TextClassifier
from .lora import add_lora
from .modes import eval_mode
from .schedules import linear
from .text import TextModel, encode, token_ids, zero_shot_scores
from .text_data import check_texts
from .train import epoch_batches, epochs_for_steps, fit, fused_optimizer, predict

TRANSFORMER_STRATEGIES = ("partial", "full", "lora")

Method = Callable[[Data, Data, int], "TextPredictor"]


class TextPredictor:
    """What a text method returns: ``predictor(texts)`` gives one label per text.

    ``model`` is what was trained (a scikit-learn pipeline, a head, a
    `TextClassifier` …) and ``measurements`` holds numbers `label_budget_study`
    copies into its rows, e.g. ``trainable_params``.
    """

    def __init__(self, predict: Callable[[list[str]], Any], model: Any = None,
                 measurements: Mapping[str, float] | None = None):
        self._predict, self.model = predict, model
        self.measurements = dict(measurements or {})

    def __call__(self, texts: Any) -> np.ndarray:
        out = self._predict(check_texts(texts))
        return out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    def __repr__(self) -> str:
        return f"TextPredictor({type(self.model).__name__}, {self.measurements})"


def subsample(data: Data, n: int, seed: int = 0) -> Data:
    """``n`` examples of ``data`` drawn at random, keeping each class's share (stratified).

    For a test set that keeps the natural class balance but is small enough to
    evaluate many times: unlike `transferkit.data.few_labels`, which draws the same
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
    `transferkit.text.encode` also keeps on disk; ``table.vectors(texts)`` then
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
    """Zero-shot prompting (`transferkit.text.zero_shot`): no label is used.

    It ignores the labelled draw, so every seed gives the same predictions; in a
    study it is the line a method that uses labels must rise above.
    """
    def method(train: Data, val: Data, seed: int) -> TextPredictor:
        def predict(texts: list[str]) -> torch.Tensor:
            return zero_shot_scores(text_model, texts, label_prompts).argmax(1)
        return TextPredictor(predict, dict(label_prompts), {"trainable_params": 0})

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
            p.numel() for p in head.parameters())})

    method.__name__ = "frozen + probe"
    return method


# --- methods that train the transformer -----------------------------------------------------


def predict_texts(net: nn.Module, ids: torch.Tensor, pad_id: int = 0,
                  batch_size: int = 64) -> torch.Tensor:
    """``net``'s class for each row of token ids, in eval mode under ``inference_mode``.

    Rows are sorted by length first, so each batch is about as long as its own
    texts (a `TextClassifier` cuts a batch at its longest text): on short
    snippets this roughly halves the work of random batches.
    """
    order = (ids != pad_id).sum(1).argsort()
    out = torch.empty(len(ids), dtype=torch.long)
    device = model_device(net)
    with eval_mode(net), torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = net(ids[rows].to(device)).argmax(1).cpu()
    return out


def text_classifier(table: EmbeddingTable, train: Data, *, seed: int = 0,
                    probe_first: bool = False, **probe_options: Any) -> TextClassifier:
    """A fresh `TextClassifier` on a copy of the pre-trained encoder.

    Its head is new (random, seeded) unless ``probe_first``: then it starts as the
    linear probe trained on ``train``'s frozen vectors (`train_probe`), the first
    stage of LP-FT.
    """
    n_classes = int(train.y.max()) + 1
    with seeded(seed):
        net = TextClassifier(copy.deepcopy(table.text_model.model), n_classes)
    if probe_first:
        probe = train_probe(table.vectors(train.x), train.y, n_classes, seed=seed,
                            **probe_options)
        net.head.load_state_dict(probe.state_dict())
    return net


def prepare(net: TextClassifier, strategy: str, *, k: int = 2, r: int = 8,
            alpha: float = 16) -> nn.Module:
    """Make ``net`` ready for ``strategy``; returns the module to train.

    ``"full"``: every parameter trains. ``"partial"``: the top ``k`` encoder layers
    and the head train, the rest is frozen and run once per text
    (`CachedBottomClassifier`). ``"lora"``: rank-``r`` adapters on every
    attention query and value projection, and the head, train
    (`transferkit.lora.add_lora`); everything pre-trained is frozen.
    """
    if strategy not in TRANSFORMER_STRATEGIES:
        raise ValueError(f"strategy must be one of {TRANSFORMER_STRATEGIES}, got {strategy!r}.")
    if strategy == "partial":
        return CachedBottomClassifier(net, k)
    if strategy == "lora":  # add_lora freezes everything but the adapters and the head
        add_lora(net, r=r, alpha=alpha, targets=("query", "value"))
    return net


def length_grouped(lengths: torch.Tensor, batch_size: int, group: int = 8
                   ) -> Callable[[torch.Generator], torch.Tensor]:
    """An epoch's order (for `fit`'s ``shuffle``) in which each batch holds texts of
    about the same length: shuffle, cut into groups of ``group`` batches, sort each group
    by length, then shuffle the batches. A `TextClassifier` cuts a batch at its longest
    text, so a batch of similar lengths carries less padding (transformers' Trainer
    calls it ``group_by_length``; on 256 review snippets in batches of 16 it computes
    about 0.6 of the tokens of random batches). Every text is seen once per epoch; which
    texts share a batch changes from epoch to epoch (less so with fewer than ``group``
    batches of texts).
    """
    lengths = torch.as_tensor(lengths)

    def order(generator: torch.Generator) -> torch.Tensor:
        where = generator.device
        n = len(lengths)
        shuffled = torch.randperm(n, generator=generator, device=where)
        size = batch_size * group
        chunks = []
        for start in range(0, n, size):
            chunk = shuffled[start:start + size]
            by_length = torch.argsort(lengths.to(where)[chunk], descending=True, stable=True)
            chunks.append(chunk[by_length])
        grouped = torch.cat(chunks)
        batches = list(grouped.split(batch_size))
        # the batches in a random order (the last, short one stays last: fit may merge it)
        head = torch.randperm(len(batches) - 1, generator=generator, device=where).tolist()
        return torch.cat([batches[i] for i in head] + batches[-1:])

    return order


# --- the recipe: how a transformer is fine-tuned ------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to fine-tune: the settings `transformer_method` trains with.

    ``lr`` is the rate of the pre-trained layers (for LoRA: of its new matrices) and
    ``head_lr`` the new head's; AdamW with ``weight_decay`` on the weight matrices
    (never on LayerNorm's weights or on biases: `transferkit.freezing.no_weight_decay`);
    ``schedule`` ``"linear"`` warms the rate up over the first ``warmup`` of the run
    and lowers it in a straight line to 0 (BERT's schedule,
    `transferkit.schedules.linear`), ``"constant"`` keeps it. ``head`` ``"fresh"``
    starts from a new random head; ``"probe"`` from the linear probe's (LP-FT, Kumar
    et al. 2022: a second, full stage after the probe, which keeps the pre-trained
    features closer to where they were). A run lasts ``epochs`` passes over the
    labels in batches of ``batch_size``, and at least ``min_steps`` optimizer steps.
    """

    lr: float
    head_lr: float = 1e-3
    head: str = "fresh"
    epochs: int = 4
    min_steps: int = 0
    batch_size: int = 16
    schedule: str = "linear"
    warmup: float = 0.1
    weight_decay: float = 0.01

    def __post_init__(self):
        if self.head not in ("fresh", "probe"):
            raise ValueError(f"head is 'fresh' or 'probe', got {self.head!r}.")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"schedule is 'linear' or 'constant', got {self.schedule!r}.")
        for name in ("lr", "head_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive rate, got {getattr(self, name)!r}.")
        for name in ("epochs", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got "
                                 f"{getattr(self, name)!r}.")

    def epochs_for(self, n_examples: int) -> int:
        """Epochs for ``n_examples`` labels: ``epochs``, or more to make ``min_steps``."""
        if self.min_steps <= 0:
            return self.epochs
        return max(self.epochs, epochs_for_steps(n_examples, self.batch_size, self.min_steps))

    def steps_for(self, n_examples: int) -> int:
        """The optimizer steps a run on ``n_examples`` labels makes."""
        return self.epochs_for(n_examples) * len(epoch_batches(n_examples, self.batch_size))

    def fingerprint(self) -> str:
        """A short digest of every setting: two runs with the same fingerprint trained alike."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# Chosen on the validation split by `python3 tools/choose_text_recipe.py` (its record, with
# every configuration tried: transferkit/assets/text_recipe.json; a test checks that these
# are the ones it chose).
RECIPES: dict[str, Recipe] = {
    "full": Recipe(lr=3e-5),
    "partial": Recipe(lr=1e-4),
    "lora": Recipe(lr=1e-3),
}


def recipe_for(strategy: str, recipe: Recipe | None = None, **changes: Any) -> Recipe:
    """``recipe`` (default: `RECIPES`' for ``strategy``) with ``changes`` applied."""
    if strategy not in TRANSFORMER_STRATEGIES:
        raise ValueError(f"strategy must be one of {TRANSFORMER_STRATEGIES}, got {strategy!r}.")
    base = RECIPES[strategy] if recipe is None else recipe
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Recipe)})
    if unknown:
        raise TypeError(f"unknown recipe setting(s) {unknown}; a Recipe has "
                        f"{[f.name for f in dataclasses.fields(Recipe)]}.")
    return dataclasses.replace(base, **changes)


def optimizer_groups(trained: nn.Module, head: nn.Module, recipe: Recipe) -> list[dict]:
    """AdamW's parameter groups: the trainable pre-trained layers (or adapters) at
    ``recipe.lr``, the head at ``recipe.head_lr``; weight decay on weight matrices
    only (`no_weight_decay`: not on LayerNorm or biases)."""
    owners = {id(p): m for m in trained.modules() for p in m.parameters(recurse=False)}
    in_head = {id(p) for p in head.parameters()}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in trained.named_parameters():
        if not p.requires_grad:
            continue
        rate = recipe.head_lr if id(p) in in_head else recipe.lr
        plain = no_weight_decay(owners.get(id(p), trained), name, p)
        groups.setdefault((rate, 0.0 if plain else recipe.weight_decay), []).append(p)
    return [{"params": params, "lr": rate, "weight_decay": wd}
            for (rate, wd), params in groups.items()]


def encoder_drift(net: TextClassifier, table: EmbeddingTable, texts: Iterable[str]) -> float:
    """How far fine-tuning moved the encoder's text vectors: ‖F_after − F_before‖ /
    ‖F_before‖ over ``texts`` (`transferkit.finetune.feature_drift`, as in lesson 04),
    F the mean-pooled vectors of the pre-trained encoder (``table``) and of ``net``'s."""
    texts = check_texts(texts)
    tuned = TextModel(net.encoder, table.text_model.tokenizer, "fine-tuned")
    return feature_drift(table.vectors(texts), encode(tuned, texts, cache=False,
                                                        progress=False))


def transformer_method(table: EmbeddingTable, strategy: str, recipe: Recipe | None = None, *,
                       k: int = 2, r: int = 8, alpha: float = 16, max_length: int = 128,
                       curve: tuple[Data, int] | None = None,
                       drift_on: Iterable[str] | None = None,
                       device: str | torch.device | None = None,
                       **changes: Any) -> Method:
    """Fine-tune the transformer itself: ``strategy`` ``"partial"``, ``"full"`` or ``"lora"``.

    Trains with ``recipe`` (default: `RECIPES[strategy]`, chosen on validation), with
    any of its settings changed by keyword, e.g. ``transformer_method(table, "full",
    lr=1e-3)``. Per trial: a fresh `text_classifier` (a new head, or the probe's when
    ``recipe.head == "probe"``), made ready by `prepare`, moved to ``device`` (default
    `pick_device`), trained by `fit` with AdamW (`optimizer_groups`) and the recipe's
    schedule. Texts longer than ``max_length`` tokens are cut.

    ``curve=(data, every)`` measures accuracy on ``data`` every ``every`` steps (a
    learning curve; `transferkit.callbacks.StepCurve`); ``drift_on=texts`` measures
    how far the encoder's vectors of those texts moved (`encoder_drift`). The rows of
    a study get ``trainable_params``, ``train_seconds`` (training only), ``steps``,
    ``recipe`` (its fingerprint) and, when asked, ``feature_drift`` and ``curve``.
    """
    recipe = recipe_for(strategy, recipe, **changes)
    tokenizer = table.text_model.tokenizer
    pad = int(tokenizer.pad_token_id or 0)
    drift_texts = None if drift_on is None else check_texts(drift_on)

    def method(train: Data, val: Data, seed: int) -> TextPredictor:
        start = time.perf_counter()
        with seeded(seed):  # the same head, batches and dropout for a seed: reproducible
            net = text_classifier(table, train, seed=seed, probe_first=recipe.head == "probe")
            # on the device fit trains on before the optimizer is built over its parameters
            trained = prepare(net, strategy, k=k, r=r, alpha=alpha).to(pick_device(
                None if device is None else str(device)))
            optimizer = fused_optimizer(torch.optim.AdamW,
                                        optimizer_groups(trained, net.head, recipe))
            ids = token_ids(tokenizer, train.x, max_length=max_length)
            callbacks = []
            if curve is not None:
                data, every = curve
                curve_ids = token_ids(tokenizer, data.x, max_length=max_length)
                callbacks.append(StepCurve(lambda m: {"accuracy": float(
                    (predict_texts(m, curve_ids, pad) == data.y).float().mean())}, every))
            fit(trained, (ids, train.y), epochs=recipe.epochs_for(len(train)),
                optimizer=optimizer, batch_size=recipe.batch_size, seed=seed,
                schedule=linear(recipe.warmup) if recipe.schedule == "linear" else None,
                shuffle=length_grouped((ids != pad).sum(1), recipe.batch_size),
                callbacks=callbacks, progress=False, device=device)
            del optimizer  # its moments (twice the trained parameters) go before predicting
        seconds = time.perf_counter() - start

        def predict_labels(texts: list[str]) -> torch.Tensor:
            return predict_texts(trained, token_ids(tokenizer, texts, max_length=max_length),
                                 pad)
        measurements: dict[str, Any] = {
            "trainable_params": sum(p.numel() for p in trained.parameters() if p.requires_grad),
            "train_seconds": seconds, "steps": recipe.steps_for(len(train)),
            "recipe": recipe.fingerprint()}
        if drift_texts is not None:
            measurements["feature_drift"] = encoder_drift(net, table, drift_texts)
        if callbacks:
            measurements["curve"] = callbacks[0].rows
        return TextPredictor(predict_labels, net, measurements)

    method.__name__ = strategy
    method.recipe = recipe
    return method


__all__ = [
    "RECIPES", "EmbeddingTable", "Recipe", "TRANSFORMER_STRATEGIES", "TextPredictor",
    "encoder_drift", "length_grouped", "optimizer_groups", "predict_texts", "prepare",
    "probe_method", "prompting_method", "recipe_for", "subsample", "text_classifier",
    "tfidf_method", "train_probe", "transformer_method",
]
