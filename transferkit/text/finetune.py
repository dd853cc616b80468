"""Fine-tuning a pre-trained transformer on few labelled texts: partial, full or LoRA.

The methods of `transferkit.text.methods` leave the transformer as it is: prompting uses
it, the probe reads its frozen vectors. Here it learns. `transformer_method(table,
strategy)` is a label-budget study method (``method(train, val, seed)`` → a
`TextPredictor`) that trains a fresh `TextClassifier` on a copy of the pre-trained
encoder: ``"partial"`` (the top k layers and the head; the frozen bottom runs once per
text, `transferkit.surgery.cached_bottom`), ``"full"`` (everything) or ``"lora"`` (low-rank
adapters of the attention, and the head: `transferkit.surgery.lora`). What each trains is
decided where every fine-tuning strategy's is, in `transferkit.methods.strategies`.

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

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.foundations.data import Data
from transferkit.foundations.device import model_device, pick_device, seeded
from transferkit.foundations.schedules import linear
from transferkit.foundations.train_eval import eval_mode
from transferkit.foundations.verdicts import compare_per_item
from transferkit.methods.finetune import feature_drift
from transferkit.methods.strategies import adapt, set_trainable
from transferkit.surgery.freezing import no_weight_decay
from transferkit.surgery.heads import TextClassifier
from transferkit.text.methods import EmbeddingTable, Method, TextPredictor, train_probe
from transferkit.text.model import TextModel, encode, token_ids
from transferkit.text.reviews import check_texts
from transferkit.training.callbacks import StepCurve
from transferkit.training.loop import epoch_batches, epochs_for_steps, fit
from transferkit.training.optimizers import fused_optimizer

TRANSFORMER_STRATEGIES = ("partial", "full", "lora")  # of transferkit.methods.strategies.TABLE
RECIPE_FILE = Path(__file__).resolve().parents[1] / "assets" / "text_recipe.json"


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
    stage of LP-FT (``lp_ft`` in `transferkit.methods.strategies`), run on the table's vectors.
    """
    n_classes = int(train.y.max()) + 1
    with seeded(seed):
        net = TextClassifier(copy.deepcopy(table.text_model.model), n_classes)
    if probe_first:
        probe = train_probe(table.vectors(train.x), train.y, n_classes, seed=seed,
                            **probe_options)
        net.head.load_state_dict(probe.state_dict())
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
    (never on LayerNorm's weights or on biases: `transferkit.surgery.freezing.no_weight_decay`);
    ``schedule`` ``"linear"`` warms the rate up over the first ``warmup`` of the run
    and lowers it in a straight line to 0 (BERT's schedule,
    `transferkit.foundations.schedules.linear`), ``"constant"`` keeps it. ``head`` ``"fresh"``
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
    "full": Recipe(lr=1e-4, min_steps=50),
    "partial": Recipe(lr=1e-4, min_steps=50),
    "lora": Recipe(lr=3e-3, min_steps=50),
}


def recipe_search(path: str | Path = RECIPE_FILE) -> dict[str, Any]:
    """The record ``tools/choose_text_recipe.py`` stored: ``provenance`` (command, commit,
    date, versions, device), ``data`` (the validation snippets, budget, seeds), ``chosen``
    (a `Recipe` per strategy) and ``runs`` (every candidate's validation accuracy and
    per-snippet correctness)."""
    record = json.loads(Path(path).read_text())
    record["chosen"] = {name: Recipe(**fields) for name, fields in record["chosen"].items()}
    return record


def search_table(record: dict[str, Any], level: float = 0.95) -> list[dict[str, Any]]:
    """The validation evidence of a stored search, one row per candidate of every stage: its
    strategy, labels per class, settings, mean validation accuracy over the seeds, and its
    gap to the stage's best, paired by seed and snippet
    (`transferkit.foundations.verdicts.compare_per_item`), with the interval. A stage starts
    from the best of the stages before it (for the same strategy and budget), which is listed in
    it again."""
    by_candidate: dict[tuple, list[dict[str, Any]]] = {}
    for run in record["runs"]:
        key = (run["stage"], run["strategy"], run["budget"], run["fingerprint"])
        by_candidate.setdefault(key, []).append(run)
    rows, leader = [], {}  # (strategy, budget) -> the best candidate of the stages so far
    for stage, strategy, budget in dict.fromkeys(key[:3] for key in by_candidate):
        # a stage starts from the best so far (run in an earlier stage: not run again)
        keys = [leader[strategy, budget]] if (strategy, budget) in leader else []
        keys += [key for key in by_candidate if key[:3] == (stage, strategy, budget)]
        scored = {}
        for key in keys:
            runs = sorted(by_candidate[key], key=lambda r: r["seed"])
            scored[key] = (runs, np.array([[c == "1" for c in r["val_correct"]] for r in runs],
                                          dtype=float))
        best = max(scored, key=lambda key: scored[key][1].mean())  # ties: the one met first
        leader[strategy, budget] = best
        for key, (runs, correct) in scored.items():
            recipe = runs[0]["recipe"]
            row = {"stage": stage, "strategy": strategy, "labels per class": budget,
                   "settings": _settings_text(recipe), "seeds": len(runs),
                   "validation accuracy": f"{correct.mean():.3f}"}
            if key == best:
                row["against the stage's best"] = "the stage's best"
            elif len(correct) < 2:  # one seed: no spread to build an interval from
                gap = correct.mean() - scored[best][1].mean()
                row["against the stage's best"] = f"{gap:+.3f} (one seed: no interval)"
            else:
                gap = compare_per_item(correct, scored[best][1], level=level)
                row["against the stage's best"] = (
                    f"{gap['gap']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]")
            rows.append(row)
    return rows


def _settings_text(recipe: dict[str, Any]) -> str:
    text = (f"{recipe['head']} head, lr {recipe['lr']:g}, {recipe['epochs']} epochs, "
            f"{recipe['schedule']} schedule")
    return text + (f", at least {recipe['min_steps']} steps" if recipe["min_steps"] else "")


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
    ‖F_before‖ over ``texts`` (`transferkit.methods.finetune.feature_drift`, as in lesson 04),
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
    ``recipe.head == "probe"``), made ready by `transferkit.methods.strategies` (``"partial"``:
    the top ``k`` blocks and the head train, the frozen bottom runs once per text, a
    `transferkit.surgery.cached_bottom.CachedBottomClassifier`; ``"lora"``: rank-``r`` adapters
    on every attention query and value projection, and the head), moved to ``device``
    (default `pick_device`), trained by `fit` with AdamW (`optimizer_groups`) and the
    recipe's schedule. Texts longer than ``max_length`` tokens are cut.

    ``curve=(data, every)`` measures accuracy on ``data`` every ``every`` steps in the
    run with seed 0 (a learning curve; `transferkit.training.callbacks.StepCurve`; one per study,
    since each point predicts ``data``); ``drift_on=texts`` measures
    how far the encoder's vectors of those texts moved (`encoder_drift`). The rows of
    a study get ``trainable_params``, ``train_seconds`` (training only),
    ``predict_seconds_per_1000`` (timed on up to 128 of its training texts: a prediction
    runs the whole transformer), ``steps``, ``recipe`` (its fingerprint) and, when asked,
    ``feature_drift`` and ``curve``.
    """
    recipe = recipe_for(strategy, recipe, **changes)
    tokenizer = table.text_model.tokenizer
    pad = int(tokenizer.pad_token_id or 0)
    drift_texts = None if drift_on is None else check_texts(drift_on)

    def method(train: Data, val: Data, seed: int) -> TextPredictor:
        start = time.perf_counter()
        with seeded(seed):  # the same head, batches and dropout for a seed: reproducible
            net = text_classifier(table, train, seed=seed, probe_first=recipe.head == "probe")
            adapt(net, strategy, r=r, alpha=alpha, targets=("query", "value"))  # lora only
            # k blocks and the head are the top k + 1 layer groups
            trained = set_trainable(net, strategy, k=k + 1, cache_bottom=strategy == "partial")
            # on the device fit trains on before the optimizer is built over its parameters
            trained = trained.to(pick_device(None if device is None else str(device)))
            optimizer = fused_optimizer(torch.optim.AdamW,
                                        optimizer_groups(trained, net.head, recipe))
            ids = token_ids(tokenizer, train.x, max_length=max_length)
            callbacks = []
            if curve is not None and seed == 0:  # one curve per study: seed 0's run
                data, every = curve
                curve_ids = token_ids(tokenizer, data.x, max_length=max_length)
                callbacks.append(StepCurve(lambda m: {"accuracy": float(
                    (predict_texts(m, curve_ids, pad) == data.y).float().mean())}, every))
            fit(trained, (ids, train.y), epochs=recipe.epochs_for(len(train)),
                optimizer=optimizer, batch_size=recipe.batch_size, seed=seed,
                schedule=linear(recipe.warmup) if recipe.schedule == "linear" else None,
                shuffle=length_grouped((ids != pad).sum(1), recipe.batch_size),
                callbacks=callbacks, progress=False, device=device)
            optimizer.zero_grad(set_to_none=True)  # the gradients go before predicting,
            del optimizer  # and its moments (twice the trained parameters)
        seconds = time.perf_counter() - start

        def predict_labels(texts: list[str]) -> torch.Tensor:
            return predict_texts(trained, token_ids(tokenizer, texts, max_length=max_length),
                                 pad)
        timed = list(train.x[:128])  # what predicting costs: the trained model on texts
        start = time.perf_counter()
        predict_labels(timed)
        per_1000 = (time.perf_counter() - start) * 1000 / len(timed)
        measurements: dict[str, Any] = {
            "trainable_params": sum(p.numel() for p in trained.parameters() if p.requires_grad),
            "train_seconds": seconds, "predict_seconds_per_1000": per_1000,
            "steps": recipe.steps_for(len(train)),
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
    "RECIPES", "RECIPE_FILE", "Recipe", "TRANSFORMER_STRATEGIES", "encoder_drift",
    "length_grouped", "optimizer_groups", "predict_texts", "recipe_for", "recipe_search",
    "search_table", "text_classifier", "transformer_method",
]
