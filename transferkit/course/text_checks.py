"""Self-checks for lesson 07's exercises (the transformer lesson).

They register with `transferkit.course.checks` like every other lesson's checks, in a
module of their own because they need the text model; importing this module
makes them available to ``check``::

    import transferkit.course.text_checks  # registers lesson 07's checks
    from transferkit.course.checks import check

    check("07.lora_parameters", answer)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from transferkit.course.checks import close, register
from transferkit.text.methods import subsample
from transferkit.text.model import TextModel, load_text_model, zero_shot
from transferkit.text.reviews import reviews_splits

# MiniLM's shape (transferkit.text.model; config.json of the pinned model package)
HIDDEN, INTERMEDIATE, LAYERS = 384, 1536, 6
DEFAULT_PROMPTS = {"rotten": "a bad movie", "fresh": "a good movie"}
VALIDATION_SNIPPETS = 400  # lesson 07's validation subset: subsample(val, 400, seed=0)


def _layer_parameters() -> int:
    attention = 4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN  # q, k, v, output + LayerNorm
    feed_forward = (HIDDEN * INTERMEDIATE + INTERMEDIATE) + (INTERMEDIATE * HIDDEN + HIDDEN) \
        + 2 * HIDDEN
    return attention + feed_forward


@register("07.lora_parameters")
def _lora_parameters(answer: Any) -> tuple[bool, str]:
    r = 4
    per_projection = r * HIDDEN + HIDDEN * r  # A is r × 384, B is 384 × r
    right = per_projection * 2 * LAYERS  # query and value, in every layer
    if close(answer, right, rel=0):
        return True, ("right: 2·r·384 per adapted projection, two projections per layer, six "
                      "layers; the 384 × 384 weights they adapt stay frozen.")
    if close(answer, right + 2 * HIDDEN + 2, rel=0):
        return False, "that includes the new head; count only LoRA's matrices A and B."
    if close(answer, right // 2, rel=0):  # A or B only, or query only: the same number
        return False, ("that is half: a LoRA layer has two matrices, A (r × in) and B "
                       "(out × r), and both query and value are adapted, in every layer.")
    return False, ("each adapted Linear(384, 384) gets A (r × 384) and B (384 × r); LoRA adapts "
                   "query and value in each of the 6 layers.")


@register("07.top_two_trainable")
def _top_two_trainable(answer: Any) -> tuple[bool, str]:
    head = 2 * HIDDEN + 2
    right = 2 * _layer_parameters() + head
    if close(answer, right, rel=0):
        return True, "right: the top two layers and the head train; everything below is frozen."
    if close(answer, 2 * _layer_parameters(), rel=0):
        return False, "almost: the new head must train too (it starts from nothing)."
    if close(answer, _layer_parameters() + head, rel=0):
        return False, "that is one layer; train the top two (layers 4 and 5 of 0–5)."
    return False, ("freeze the whole encoder, then unfreeze encoder.encoder.layer[4] and [5]; "
                   "count the parameters with requires_grad (or read trainable_report).")


@functools.lru_cache(maxsize=1)
def _validation_and_model() -> tuple[Any, TextModel]:
    return subsample(reviews_splits().val, VALIDATION_SNIPPETS, seed=0), load_text_model()


def prompt_accuracy(prompts: Mapping[str, Any]) -> float:
    """Zero-shot accuracy of ``prompts`` on lesson 07's validation snippets."""
    val, model = _validation_and_model()
    return float((zero_shot(model, val.x, prompts).numpy() == val.y.numpy()).mean())


@register("07.better_prompt")
def _better_prompt(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, Mapping) or list(answer) != list(DEFAULT_PROMPTS):
        return False, ("give a dict with the rotten prompt(s) first, then the fresh ones: "
                       "{'rotten': '…', 'fresh': '…'}.")
    yours, default = prompt_accuracy(answer), prompt_accuracy(DEFAULT_PROMPTS)
    if yours > default:
        return True, (f"right: {yours:.3f} against the default's {default:.3f} on the "
                      f"{VALIDATION_SNIPPETS} validation snippets. Chosen on validation: "
                      "the test set has not seen your search.")
    return False, (f"{yours:.3f}, not above the default's {default:.3f}. Try wordings that "
                   "sound like the snippets themselves, or several prompts per label.")


__all__ = ["DEFAULT_PROMPTS", "prompt_accuracy"]
