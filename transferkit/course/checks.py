"""Self-checks for the lessons' exercises.

In a lesson, after your answer, a cell like ::

    check("00.digits_per_class", answer)

says PASS when the answer is right, or NOT YET with a hint that points you the right
way, never with the answer itself. Numeric answers are compared with a
tolerance, so rounding noise does not fail you.

How the answers are kept out of sight: a check either *recomputes* the right
value from the data when you call it, or compares a salted SHA-256 fingerprint
of your answer with the stored fingerprint of the right one. Neither puts the
answer in plain text beside the question.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from transferkit.foundations import gd
from transferkit.foundations.data import (
    few_labels,
    invert,
    load_digits,
    split_classes,
    train_val_test_split,
)
from transferkit.foundations.schedules import one_cycle, slanted_triangular
from transferkit.methods.autoencoder import Autoencoder, article_dims
from transferkit.methods.encoder import Encoder
from transferkit.methods.label_budget import accuracy
from transferkit.surgery.freezing import ULMFIT_DECAY, freeze_to
from transferkit.surgery.heads import Classifier
from transferkit.surgery.layer_groups import layer_groups
from transferkit.training.loop import epoch_batches


@dataclass(frozen=True)
class Result:
    """The outcome of one check: truthy when passed."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'NOT YET'} {self.name}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#1b7f3a" if self.passed else "#b00020"
        return f"<div style='color:{colour}'>{html.escape(str(self))}</div>"


Checker = Callable[[Any], tuple[bool, str]]
_REGISTRY: dict[str, Checker] = {}


def register(name: str) -> Callable[[Checker], Checker]:
    """Decorator: make ``fn(answer) -> (passed, message)`` the check called ``name``."""

    def add(fn: Checker) -> Checker:
        if name in _REGISTRY:
            raise ValueError(f"a check named {name!r} exists already.")
        _REGISTRY[name] = fn
        return fn

    return add


def names() -> list[str]:
    """All registered check names, sorted."""
    return sorted(_REGISTRY)


def check(name: str, answer: Any) -> Result:
    """Check ``answer`` for the exercise ``name``; show PASS, or NOT YET with a hint."""
    if name not in _REGISTRY:
        raise KeyError(f"no check called {name!r}. The checks are: {', '.join(names())}.")
    if answer is None or answer is Ellipsis:
        return Result(name, False, "no answer yet: replace the ... (or None) with yours.")
    try:
        passed, message = _REGISTRY[name](answer)
    except (TypeError, ValueError) as err:
        passed, message = False, f"could not read this answer ({err})."
    return Result(name, passed, message)


# --- building blocks for checks --------------------------------------------------------


def fingerprint(name: str, answer: Any) -> str:
    """Salted SHA-256 of a normalised answer.

    Strings ignore case, spaces and punctuation ("Fine-tuning" = "fine tuning").
    """
    if isinstance(answer, str):
        text = re.sub(r"[^a-z0-9]", "", answer.lower())
    elif isinstance(answer, torch.Size | tuple | list):
        text = repr(tuple(int(v) for v in answer))
    else:
        text = repr(answer)
    return hashlib.sha256(f"transferkit:{name}:{text}".encode()).hexdigest()


def close(answer: Any, expected: float, rel: float = 1e-3, abs_: float = 1e-6) -> bool:
    """Whether a number is within tolerance of the expected value."""
    value = float(answer.item() if isinstance(answer, torch.Tensor) else answer)
    return math.isclose(value, expected, rel_tol=rel, abs_tol=abs_)


# --- lesson 00 ---------------------------------------------------------------------------


@register("00.count_of_threes")
def _count_of_threes(answer: Any) -> tuple[bool, str]:
    _, y = load_digits()
    right = int((y == 3).sum())
    if close(answer, right, rel=0):
        return True, "right: that is how many images show a 3."
    if close(answer, len(y), rel=0):
        return False, "that is the size of the whole dataset; count only the labels equal to 3."
    return False, "compare the labels y with 3 and count the True values: (y == 3).sum()."


@register("00.pixels_per_image")
def _pixels_per_image(answer: Any) -> tuple[bool, str]:
    x, _ = load_digits()
    right = x.shape[1]
    if close(answer, right, rel=0):
        return True, "right: each 8×8 image is a vector of that many pixels."
    if close(answer, 8, rel=0):
        return False, ("that is one side of the image; how many pixels does a square of "
                       "that side hold?")
    return False, "look at x.shape: the second number is the length of one image's vector."


_UNLABELLED_STEP = "2c10c28121c66bb4b45d6c42488b8c5324a0b8465565a677a9fad68988fae159"


@register("00.which_step_needs_labels")
def _which_step(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, str):
        return False, "answer with a string: 'pre-training' or 'fine-tuning'."
    if fingerprint("00.which_step_needs_labels", answer) == _UNLABELLED_STEP:
        return True, "right: the small labelled set is used when adapting to the task."
    if "pre" in answer.lower():
        return False, ("pre-training in this course learns from plentiful data *without* "
                       "labels (an autoencoder rebuilds its input). Which step then adapts "
                       "the model to the task?")
    return False, "answer 'pre-training' or 'fine-tuning'."


# --- lesson 01 ---------------------------------------------------------------------------


@register("01.one_step")
def _one_step(answer: Any) -> tuple[bool, str]:
    f = gd.parabola(L=2.0, center=3.0)
    right = float(gd.descend(f, [0.0], lr=0.1, steps=1).points[1, 0])
    if close(answer, right):
        return True, "right: one step moved x towards the minimum at 3."
    if close(answer, -right):
        return False, ("the sign is flipped: the update *subtracts* α·f'(x), and f'(0) is "
                       "negative here, so x must grow.")
    if close(answer, right / 2):
        return False, "check f'(x): for f(x) = (L/2)(x − 3)² it is L·(x − 3), with L = 2."
    return False, "compute f'(0) = L·(0 − 3) first, then x₁ = x₀ − α·f'(x₀)."


@register("01.largest_stable_lr")
def _largest_stable_lr(answer: Any) -> tuple[bool, str]:
    right = gd.stability_limit(L=25.0)
    if close(answer, right, rel=1e-2):
        return True, "right: past it, the error along the steep direction grows every step."
    if close(answer, gd.stability_limit(L=1.0), rel=1e-2):
        return False, ("that is the limit for the *flat* direction (curvature μ); the steep "
                       "direction, curvature L, blows up first.")
    if close(answer, right / 2, rel=1e-2):
        return False, ("that α reaches the x-minimum in one step, but larger ones still "
                       "converge: find where |1 − αL| reaches 1.")
    return False, "the error along x is multiplied by (1 − αL) each step: when is |1 − αL| < 1?"


@register("01.momentum_limit")
def _momentum_limit(answer: Any) -> tuple[bool, str]:
    right = gd.stability_limit(L=25.0, momentum=0.5)
    if close(answer, right, rel=1e-2):
        return True, "right: momentum lets a larger step stay stable."
    if close(answer, gd.stability_limit(L=25.0), rel=1e-2):
        return False, "that is the limit without momentum; momentum β multiplies it by (1 + β)."
    if close(answer, gd.stability_limit(L=25.0, momentum=0.5, nesterov=True), rel=1e-2):
        return False, "that is Nesterov's limit; the question is about heavy-ball momentum."
    return False, "use the heavy-ball limit from the lesson, 2(1 + β)/L, with L = 25, β = 0.5."


# --- lesson 02 ---------------------------------------------------------------------------

CROSS_ENTROPY_PROBABILITIES = (0.1, 0.6, 0.3)  # the exercise's predicted probabilities
CROSS_ENTROPY_TRUE_CLASS = 2


@register("02.cross_entropy")
def _cross_entropy(answer: Any) -> tuple[bool, str]:
    p = CROSS_ENTROPY_PROBABILITIES
    right = -math.log(p[CROSS_ENTROPY_TRUE_CLASS])
    if close(answer, right, rel=2e-3):
        return True, "right: the loss only looks at the probability given to the true class."
    predicted = max(range(len(p)), key=p.__getitem__)
    if close(answer, -math.log(p[predicted]), rel=2e-3):
        return False, ("that uses the probability of the class the model *predicts*; "
                       "cross-entropy uses the probability of the *true* class.")
    if close(answer, math.log(p[CROSS_ENTROPY_TRUE_CLASS]), rel=2e-3):
        return False, "a loss is never negative here: mind the minus sign in −log p."
    if close(answer, -math.log10(p[CROSS_ENTROPY_TRUE_CLASS]), rel=2e-3):
        return False, "use the natural logarithm (math.log), not log base 10."
    return False, "take −log of the probability the model gives to the true class."


@register("02.steps_per_epoch")
def _steps_per_epoch(answer: Any) -> tuple[bool, str]:
    train = train_val_test_split(*load_digits(), seed=0).train
    right = len(epoch_batches(len(train), 32))
    if close(answer, right, rel=0):
        return True, "right: one step per mini-batch, the last (smaller) batch included."
    if close(answer, len(train) // 32, rel=0):
        return False, ("almost: the examples left over after the full batches form one more, "
                       "smaller batch, and it makes a step too.")
    if close(answer, len(train), rel=0):
        return False, "that is one step per example; fit makes one step per mini-batch of 32."
    return False, "divide the number of training examples by the batch size, and round up."


_CHOOSING_SPLITS = {
    "968859077808e6a8f109699f1bb9f45c939666cc67ca8a559f9926432603b229",
    "1c747ce990a3172182c016091a14a08376e0bacb99779690f0f06ad425e514fb",
}


@register("02.split_for_learning_rate")
def _split_for_learning_rate(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, str):
        return False, "answer with the name of a split: 'train', 'validation' or 'test'."
    if fingerprint("02.split_for_learning_rate", answer) in _CHOOSING_SPLITS:
        return True, "right: choices are made on data the model did not train on, but not on test."
    word = answer.lower()
    if "test" in word:
        return False, ("the test set is looked at once, at the end: a learning rate chosen on "
                       "it makes the test score an optimistic, biased estimate.")
    if "train" in word:
        return False, ("the training loss rewards whatever fits the training examples best, "
                       "memorising included; which split measures what was *not* trained on?")
    return False, "answer 'train', 'validation' or 'test'."


# --- lesson 03: autoencoders -----------------------------------------------------------


def _digits_split():
    """The split lesson 03 uses: ``train_val_test_split(x, y, seed=0)`` of the digits."""

    return train_val_test_split(*load_digits(), seed=0)


@register("03.article_parameters")
def _article_parameters(answer: Any) -> tuple[bool, str]:

    model = Autoencoder(article_dims(64))
    right = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    if close(answer, right, rel=0):
        return True, "right: every weight and bias of both halves."
    if close(answer, encoder, rel=0):
        return False, "that is the encoder alone; the decoder mirrors it and has its own weights."
    if close(answer, weights, rel=0):
        return False, ("close: you counted the weights; each Linear layer also has one bias per "
                       "output.")
    return False, ("a Linear(a, b) layer has a·b weights and b biases; add them up for every layer "
                   "of the encoder and the decoder (or sum p.numel() over model.parameters()).")


@register("03.mean_image_error")
def _mean_image_error(answer: Any) -> tuple[bool, str]:
    train, _, test = _digits_split()
    right = float(((test.x - train.x.mean(dim=0)) ** 2).mean())
    if close(answer, right, rel=1e-3):
        return True, ("right: that is the error of a code of size 0 (every image rebuilt as the "
                      "mean).")
    if close(answer, float(((test.x - test.x.mean(dim=0)) ** 2).mean()), rel=1e-3):
        return False, ("you used the mean of the test images; a baseline may only learn from the "
                       "training images (train.x).")
    if close(answer, right * test.x.shape[1], rel=1e-3):
        return False, "that is summed over the pixels; average over pixels and images (.mean())."
    return False, ("rebuild every test image as the mean training image, train.x.mean(dim=0), and "
                   "average the squared differences over pixels and images.")


@register("03.pca_exact_code_size")
def _pca_exact_code_size(answer: Any) -> tuple[bool, str]:
    train = _digits_split().train
    x = train.x.double()
    right = int(torch.linalg.matrix_rank(x - x.mean(dim=0)))
    if close(answer, right, rel=0):
        return True, ("right: the centred training images span a space of exactly that many "
                      "dimensions, so that many principal components rebuild them without error.")
    if close(answer, x.shape[1], rel=0):
        return False, ("64 works, but a smaller code does too: are some pixels blank in every "
                       "training image? Look at (train.x != 0).any(dim=0).")
    return False, ("PCA with k components rebuilds exactly what lies in a k-dimensional space; "
                   "find the dimension (the rank) of the centred training images, or try k until "
                   "the error of PCA(k) on train.x drops to about 0.")


# --- lesson 04: fine-tuning --------------------------------------------------------------


def _article_classifier():
    """Lesson 04's model: a 10-class head on the article's encoder for 64 inputs."""

    return Classifier(Encoder({"kind": "mlp", "dims": list(article_dims(64))}), 10)


@register("04.trainable_after_freeze_to")
def _trainable_after_freeze_to(answer: Any) -> tuple[bool, str]:
    model = freeze_to(_article_classifier(), -2)
    right = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = sum(p.numel() for p in model.head.parameters())
    if close(answer, right, rel=0):
        return True, "right: the head and the encoder's last layer, weights and biases."
    if close(answer, head, rel=0):
        return False, ("that is the head alone, freeze_to(model, -1). With -2 the group below "
                       "the head trains too.")
    if close(answer, sum(p.numel() for p in model.parameters()), rel=0):
        return False, "that is every parameter; freeze_to(model, n) freezes the groups before n."
    return False, ("list layer_groups(model): with n = -2 the last two groups train. Count their "
                   "weights and biases (or sum p.numel() over the parameters that require grad).")


@register("04.discriminative_lr")
def _discriminative_lr(answer: Any) -> tuple[bool, str]:
    n = len(layer_groups(_article_classifier()))
    right = 1e-3 / ULMFIT_DECAY ** (n - 1)
    if close(answer, right, rel=1e-3, abs_=0):
        return True, (f"right: {n} groups, so the first is {n - 1} divisions of 2.6 below the "
                      "head.")
    if close(answer, 1e-3 / ULMFIT_DECAY ** n, rel=1e-3, abs_=0):
        return False, "one division too many: the head itself keeps lr, undivided."
    if close(answer, 1e-3 / ULMFIT_DECAY ** (n - 2), rel=1e-3, abs_=0):
        return False, "one division short: count the groups again, the head included."
    if close(answer, 1e-3 / ULMFIT_DECAY, rel=1e-3, abs_=0):
        return False, "that is the group just below the head; go all the way down to the first."
    return False, ("count the groups with len(layer_groups(model)); each group down from the head "
                   "divides the rate by 2.6 once.")


@register("04.momentum_drift")
def _momentum_drift(answer: Any) -> tuple[bool, str]:
    lr, beta, velocity = 0.1, 0.9, 1.0
    right = lr * beta * velocity  # the new gradient is a zero tensor, not None
    if close(answer, right, rel=1e-6):
        return True, ("right: the momentum buffer still holds 0.9 of the last step, so the "
                      "'frozen' weight moves 0.09, then 0.081, … until the buffer dies out.")
    if close(answer, 0.0, abs_=1e-12):
        return False, ("requires_grad=False stops new gradients, but the old .grad tensor is only "
                       "zeroed, not removed, so SGD still steps this parameter. What is in its "
                       "momentum buffer?")
    if close(answer, lr, rel=1e-6):
        return False, ("that is a step with the old gradient. The new gradient is 0; the buffer "
                       "becomes 0.9·buffer + 0.")
    return False, ("SGD with momentum: buf ← β·buf + g, then w ← w − lr·buf. Here buf was 1, g is "
                   "now 0, β = 0.9 and lr = 0.1.")


# --- lesson 05: CNN transfer ------------------------------------------------------------


@register("05.articles_recipe_trainable")
def _articles_recipe_trainable(answer: Any) -> tuple[bool, str]:
    from torchvision.models.resnet import Bottleneck  # heavy: only this check needs it

    features = 512 * Bottleneck.expansion  # ResNet-50's fc.in_features, without building it
    right = features * 10 + 10  # a new Linear(features, 10): weights and biases
    if close(answer, right, rel=0):
        return True, "right: only the new fc trains, its weights and its biases."
    if close(answer, features * 10, rel=0):
        return False, "almost: the new layer has a bias for each class too."
    if close(answer, features * 1000 + 1000, rel=0):
        return False, "that is ImageNet's head (1000 classes); the new fc has one row per class."
    return False, ("everything but the new fc is frozen. How many inputs does model.fc take "
                   "(model.fc.in_features), and how many classes does CIFAR-10 have?")


@register("05.astronaut_probabilities")
def _astronaut_probabilities(answer: Any) -> tuple[bool, str]:
    if close(answer, 1.0, rel=1e-4):
        return True, ("right: a softmax hands out all of the probability, whatever the photo. "
                      "There is no 'astronaut' class, so the astronaut's probability goes to "
                      "classes the network knows.")
    if float(answer) < 1.0:
        return False, ("that looks like a part of the probabilities: add up all 1,000 of them, "
                       "predict_top(model, photo, k=1000).")
    return False, ("add up the 1,000 probabilities of the astronaut's guesses "
                   "(predict_top(model, photo, k=1000)); they are the outputs of a softmax.")


@register("05.bn_running_mean")
def _bn_running_mean(answer: Any) -> tuple[bool, str]:
    momentum, batches = 0.1, 10
    right = 1 - (1 - momentum) ** batches  # m ← (1 − momentum)·m + momentum·1, from m = 0
    if close(answer, right, rel=1e-3):
        return True, ("right: 1 − 0.9¹⁰. Ten batches in train() mode move a 'frozen' network's "
                      "statistics two thirds of the way to the new data.")
    if close(answer, momentum * batches, rel=1e-3):
        return False, ("each update moves the running mean 10% of the *remaining* distance, not "
                       "10% of the batch mean every time.")
    if close(answer, 0.0, abs_=1e-9):
        return False, ("requires_grad=False does not stop it: in train() mode every forward pass "
                       "updates the running statistics.")
    return False, ("PyTorch updates running_mean ← (1 − momentum)·running_mean + momentum·"
                   "batch_mean. Apply it 10 times, starting from 0, with batch mean 1.")


# --- lesson 06 ---------------------------------------------------------------------------

CAPSTONE_BAR = 0.90  # test accuracy the capstone's model must reach
CAPSTONE_LABELS = 5  # labels per class the capstone gives you


def capstone_task():
    """The capstone's target task: the digits 5–9 in negative
    (`transferkit.foundations.data.invert`),
    classes renumbered 0–4, with ``CAPSTONE_LABELS`` labels per class to train on.

    Returns ``(train, val)``. The test set stays inside `check("06.capstone", model)`:
    you cannot choose on it, so its score is an honest one.
    """
    train, val, _ = _capstone_splits()

    return few_labels(train.x, train.y, CAPSTONE_LABELS, seed=0), val


def _capstone_splits():

    digits = load_digits(images=True)
    _, target = split_classes(digits.x, digits.y, source=[0, 1, 2, 3, 4])
    return train_val_test_split(invert(target.x), target.y, seed=1)


@register("06.capstone")
def _capstone(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, torch.nn.Module):
        return False, "pass the trained model itself (an nn.Module), e.g. check(..., model)."
    *_, test = _capstone_splits()
    try:
        score = accuracy(answer, test)
    except (RuntimeError, ValueError) as err:
        return False, (f"the model could not classify the capstone's images, shaped "
                       f"{tuple(test.x.shape[1:])} with 5 classes ({str(err)[:120]}).")
    if score >= CAPSTONE_BAR:
        return True, (f"passed: test accuracy {score:.3f} (the bar is {CAPSTONE_BAR:.2f}), "
                      "measured once, on images you never saw. Now write down why you chose "
                      "your strategy.")
    return False, (f"test accuracy {score:.3f}, below the bar of {CAPSTONE_BAR:.2f}. Compare "
                   "candidates on the validation set first: does the backbone need to train on "
                   "a new domain, or only the head? Are the steps and the rate enough?")


@register("06.stlr_peak_step")
def _stlr_peak_step(answer: Any) -> tuple[bool, str]:
    values = slanted_triangular(cut_frac=0.1, ratio=32).values(200)
    right = values.index(max(values))
    if close(answer, right, rel=0):
        return True, "right: the rate peaks at step ⌊T · cut_frac⌋ and falls from there."
    if close(answer, right - 1, rel=0) or close(answer, right + 1, rel=0):
        return False, "one step off: count from step 0, and use cut = ⌊T · cut_frac⌋."
    if close(answer, 0.1, rel=1e-6):
        return False, "that is the fraction; the answer is a step number between 0 and 199."
    return False, ("the schedule climbs for the first cut_frac of the run: which step is that for "
                   "a run of 200 steps? (slanted_triangular(0.1).values(200) lets you look.)")


@register("06.one_cycle_first_lr")
def _one_cycle_first_lr(answer: Any) -> tuple[bool, str]:
    peak = 3e-3
    right = peak * one_cycle(pct_start=0.3, div=25).values(100)[0]
    if close(answer, right, rel=1e-3):
        return True, "right: one-cycle starts 25 times below its peak, then climbs."
    if close(answer, peak, rel=1e-3):
        return False, "that is the peak; one-cycle does not start there."
    if close(answer, peak / 25 / 1e4, rel=1e-3):
        return False, "that is where it ends (÷ div ÷ final_div); the start is ÷ div only."
    return False, "the first rate is the peak divided by div (25 by default)."
