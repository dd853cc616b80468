"""CachedBottomClassifier: partial fine-tuning with the frozen bottom computed once per
text. Its scores equal the wrapped TextClassifier's, training moves only the top blocks
and the head (shared with the classifier), the bottom runs once per text and weights,
and the cache is bounded. Tiny random BERTs built here; the real MiniLM once."""

import copy

import pytest
import torch
import transformers  # a dependency: missing, the tests fail

from transferkit.surgery import cached_bottom
from transferkit.surgery.cached_bottom import (
    CachedBottomClassifier,
    bottom_cache_info,
    clear_bottom_cache,
)
from transferkit.surgery.freezing import trainable_report, unfreeze
from transferkit.surgery.heads import TextClassifier
from transferkit.training.loop import fit, predict


@pytest.fixture(autouse=True)
def fresh_cache(request):
    """An empty cache per test; tiny models on one thread (faster on a busy machine)."""
    clear_bottom_cache()
    threads = torch.get_num_threads()
    if "minilm" not in request.fixturenames:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    clear_bottom_cache()


def tiny_encoder(attn="sdpa", seed=0, **overrides):
    settings = dict(vocab_size=200, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    attn_implementation=attn)
    torch.manual_seed(seed)
    return transformers.BertModel(transformers.BertConfig(**{**settings, **overrides}))


def padded_batch(lengths=(3, 9, 14, 2, 6), extra=5, seed=1):
    """Token ids of different lengths, padded with 0 on the right (and `extra` more
    columns of padding than the longest row needs)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 200, (len(lengths), max(lengths) + extra), generator=g)
    ids[torch.arange(ids.shape[1]) >= torch.tensor(lengths)[:, None]] = 0
    return ids


def toy_task(n=32, seed=0):
    ids = padded_batch(tuple(int(v) for v in torch.randint(3, 12, (n,),
                       generator=torch.Generator().manual_seed(seed))), extra=2, seed=seed)
    y = torch.arange(n) % 2
    ids[y == 1, 1] = 7
    return ids, y


class Calls:
    """Counts the bottom's runs (a forward hook on the embeddings) and their batch sizes."""

    def __init__(self, model):
        self.sizes = []
        model.encoder.embeddings.register_forward_hook(
            lambda m, args, kwargs, out: self.sizes.append(out.shape[0]), with_kwargs=True)


# --- (a) the same scores as the TextClassifier -----------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_eval_logits_equal_the_text_classifier(attn, pooling, k):
    clf = TextClassifier(tiny_encoder(attn), 3, pooling=pooling).eval()
    ids = padded_batch()
    model = CachedBottomClassifier(clf, k).eval()
    with torch.no_grad():
        expected = clf(ids)
        # rows cached one at a time (no padding), then read back in a padded batch
        for row in ids[[1, 3]]:
            model(row[None])
        first, second = model(ids), model(ids)
    assert expected[0].ne(expected[1]).any()  # the rows differ: the check has teeth
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, expected, atol=1e-5, rtol=0)
    assert bottom_cache_info()["rows"] == len(ids)


def test_padding_reaches_neither_path():
    """A short row scores the same alone as next to a long one (the mask is right)."""
    model = CachedBottomClassifier(TextClassifier(tiny_encoder("eager"), 2), 2).eval()
    ids = padded_batch((2, 14))
    with torch.no_grad():
        torch.testing.assert_close(model(ids[:1, :2]), model(ids)[:1], atol=1e-5, rtol=0)


# --- (b) training moves the top and the head, never the bottom ---------------------------------


def test_fit_trains_the_top_and_the_head_of_the_wrapped_classifier_only():
    clf = TextClassifier(tiny_encoder(), 2)
    model = CachedBottomClassifier(clf, 2)
    assert model.classifier is clf  # wrapped, not copied: the very same parameters
    assert [id(p) for p in model.parameters()] == [id(p) for p in clf.parameters()]
    bottom = {n: p.detach().clone() for n, p in clf.named_parameters()
              if n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0."))}
    top = {n: p.detach().clone() for n, p in clf.named_parameters() if n not in bottom}
    assert len(bottom) == 5 + 16 and len(top) == 2 * 16 + 2
    report = trainable_report(model)
    assert [row["group"] for row in report.rows if row["trainable"]] == [
        "classifier.encoder.encoder.layer.1", "classifier.encoder.encoder.layer.2",
        "classifier.head"]
    ids, y = toy_task()
    fit(model, (ids, y), epochs=1, batch_size=8, lr=1e-2, progress=False, device="cpu")
    after = dict(clf.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in bottom.items())  # bit-identical
    assert all(after[n].grad is None for n in bottom)
    assert all(not torch.equal(after[n], p) for n, p in top.items()), [
        n for n, p in top.items() if torch.equal(after[n], p)]
    # the wrapped classifier is the fine-tuned model: the same scores, no copy
    with torch.no_grad():
        torch.testing.assert_close(clf.eval()(ids), model.eval()(ids), atol=1e-5, rtol=0)
    assert predict(clf, ids).shape == (32,)


def test_the_bottom_runs_without_dropout_even_in_training_mode():
    """The one difference from plain partial fine-tuning: what is cached in training mode
    is the bottom's eval-mode output, so eval scores still equal the classifier's."""
    clf = TextClassifier(tiny_encoder(hidden_dropout_prob=0.5), 2)
    model = CachedBottomClassifier(clf, 1).train()
    ids = padded_batch()
    model(ids)  # fills the cache in training mode
    assert clf.encoder.embeddings.dropout.training  # the mode of the bottom is given back
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), clf.eval()(ids), atol=1e-5, rtol=0)


def test_an_unfrozen_bottom_is_refused_while_training():
    model = CachedBottomClassifier(TextClassifier(tiny_encoder(), 2), 1)
    unfreeze(model)
    with pytest.raises(RuntimeError, match="cannot train"):
        model(padded_batch())
    with torch.no_grad():
        model(padded_batch())  # no gradients: nothing would be lost


# --- (c) the bottom runs once per text ---------------------------------------------------------


def test_a_second_forward_does_not_run_the_bottom():
    clf = TextClassifier(tiny_encoder(), 2)
    calls = Calls(clf)
    model = CachedBottomClassifier(clf, 2).eval()
    ids = padded_batch()
    with torch.no_grad():
        model(ids)
        assert calls.sizes == [5]  # every row missed: one batch
        model(ids)
        model(ids[[4, 0]])
        assert calls.sizes == [5]  # all found
        new = padded_batch(seed=7)[:2]
        model(torch.cat([ids[:3], new, new[:1]]))  # two new texts, one of them twice
        assert calls.sizes == [5, 2]  # only the new ones, once each, in one batch
    info = bottom_cache_info()
    assert (info["rows"], info["hits"], info["misses"]) == (7, 5 + 2 + 3, 5 + 2)
    # a copy of the same pre-trained encoder (another seed's model) reuses the rows
    twin = TextClassifier(copy.deepcopy(clf.encoder), 2)
    twin_calls = Calls(twin)
    with torch.no_grad():
        CachedBottomClassifier(twin, 2)(ids)
    assert twin_calls.sizes == []


# --- (d) a changed bottom does not read old rows ----------------------------------------------


def test_a_changed_bottom_does_not_reuse_entries():
    clf = TextClassifier(tiny_encoder(), 2).eval()
    model = CachedBottomClassifier(clf, 2).eval()
    ids = padded_batch()

    def bottom_runs_and_matches():
        expected = clf(ids)  # the reference, before the bottom's runs are counted
        calls = Calls(clf)
        torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)
        return calls.sizes

    with torch.no_grad():
        assert bottom_runs_and_matches() == [5]
        clf.encoder.encoder.layer[2].output.dense.weight.mul_(1.5)  # a top block: rows stay
        assert bottom_runs_and_matches() == []
        clf.encoder.encoder.layer[0].output.dense.weight.mul_(1.5)  # in place, in the bottom
        assert bottom_runs_and_matches() == [5]
        other = TextClassifier(tiny_encoder(seed=1), 2)  # another encoder's weights, loaded
        clf.encoder.load_state_dict(other.encoder.state_dict())
        assert bottom_runs_and_matches() == [5]
        calls = Calls(clf)
        CachedBottomClassifier(clf, 1)(ids)  # another k: another bottom
        assert calls.sizes == [5]
    assert CachedBottomClassifier(clf, 1).bottom_fingerprint() != model.bottom_fingerprint()


# --- (e) clear errors ------------------------------------------------------------------------


def test_clear_errors():
    clf = TextClassifier(tiny_encoder(), 2)
    for k in (0, 4, -1, True, 1.0, None):
        with pytest.raises(ValueError, match=r"1 … 3 .*got"):
            CachedBottomClassifier(clf, k)
    with pytest.raises(TypeError, match="wraps a transferkit.surgery.heads.TextClassifier"):
        CachedBottomClassifier(tiny_encoder(), 1)
    with pytest.raises(TypeError, match="wraps a transferkit.surgery.heads.TextClassifier"):
        CachedBottomClassifier(torch.nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="LongTensor"):
        CachedBottomClassifier(clf, 1)(padded_batch().float())


# --- (f) the byte bound ----------------------------------------------------------------------


def test_the_byte_bound_evicts_the_least_recently_used(monkeypatch):
    clf = TextClassifier(tiny_encoder(), 2)
    calls = Calls(clf)
    model = CachedBottomClassifier(clf, 1).eval()
    ids = padded_batch((6,) * 6, extra=0)
    row_bytes = 6 * 16 * 4  # six tokens of 16 float32 numbers
    monkeypatch.setattr(cached_bottom, "BOTTOM_CACHE_BYTES", 3 * row_bytes)
    with torch.no_grad():
        model(ids)  # six rows computed, three kept: the last three
        info = bottom_cache_info()
        assert (info["rows"], info["bytes"]) == (3, 3 * row_bytes)
        model(ids[3:])
        assert calls.sizes == [6]
        model(ids[3:4])  # row 3 used last: row 4 is now the least recently used
        model(ids[:1])  # row 0 again (evicted): computed, and row 4 goes
        assert calls.sizes == [6, 1]
        model(ids[[3, 5]])
        assert calls.sizes == [6, 1]
        model(ids[4:5])
        assert calls.sizes == [6, 1, 1]
        monkeypatch.setattr(cached_bottom, "BOTTOM_CACHE_BYTES", row_bytes // 2)
        clear_bottom_cache()
        torch.testing.assert_close(model(ids), clf.eval()(ids), atol=1e-5, rtol=0)
        assert bottom_cache_info()["rows"] == 0  # each row is larger than the whole cache


# --- the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    from transferkit.text.model import load_text_model

    return load_text_model(device="cpu")


def test_minilm_scores_equal_and_the_bottom_runs_once(minilm):
    from transferkit.text.model import token_ids

    texts = ["A gem.", "Two hours I will not get back, and the popcorn was stale too.",
             "Fine.", "The lead is wonderful; the script, less so, but I would see it again.",
             "Not good, not bad."]
    ids = torch.cat([token_ids(minilm.tokenizer, texts), torch.zeros(5, 3, dtype=torch.long)],
                    1)
    torch.manual_seed(0)
    clf = TextClassifier(copy.deepcopy(minilm.model), 2).eval()
    calls = Calls(clf)
    with torch.no_grad():
        expected = clf(ids)
        for k in (1, 2, 6):
            model = CachedBottomClassifier(clf, k).eval()
            torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)
            torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)
    assert calls.sizes == [5, 5, 5, 5]  # the classifier's own run, then one per k
    assert trainable_report(model).totals["trainable"] == sum(
        p.numel() for p in clf.parameters() if p.requires_grad) == (
        sum(p.numel() for p in clf.encoder.encoder.parameters()) + 384 * 2 + 2)
