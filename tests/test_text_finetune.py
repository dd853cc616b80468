"""Freezing and fine-tuning that understand transformers: layer groups, the head,
freezing, discriminative rates, the trainable report, every fine_tune strategy and
LoRA on a BERT, through the same fit. Tiny random BERTs built here; the real MiniLM
for the group layout and one short fine-tuning run on the reviews."""

import copy

import pytest
import torch
import transformers  # a dependency: missing, the tests fail

from transferkit.foundations.data import few_labels
from transferkit.foundations.metrics import classification_metrics
from transferkit.methods.finetune import extract_features, fine_tune
from transferkit.methods.strategies import STRATEGIES
from transferkit.surgery.freezing import freeze, freeze_to, param_groups, trainable_report
from transferkit.surgery.heads import TextClassifier, find_head, transformer_body, without_head
from transferkit.surgery.layer_groups import layer_groups
from transferkit.surgery.lora import add_lora, lora_parameter_count
from transferkit.text.reviews import majority_accuracy, reviews_splits
from transferkit.training.loop import fit, predict


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models run faster on one thread, above all on a busy machine (README)."""
    if "minilm" in request.fixturenames:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides):
    settings = dict(vocab_size=200, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
                    num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertConfig(**{**settings, **overrides})


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    return transformers.BertModel(tiny_config())


def toy_task(n=48, length=20, seed=0):
    """Token ids padded with 0 on the right; the label is whether token 7 occurs."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 200, (n, length), generator=g)
    lengths = torch.randint(4, length // 2, (n,), generator=g)
    ids[torch.arange(length) >= lengths[:, None]] = 0
    y = torch.arange(n) % 2
    ids[y == 1, 1] = 7
    return ids, y


EXPECTED = ["encoder.embeddings", "encoder.encoder.layer.0", "encoder.encoder.layer.1",
            "encoder.encoder.layer.2", "head"]


def test_layer_groups_of_bert_family_models():
    assert [g.name for g in layer_groups(TextClassifier(tiny_encoder(), 2))] == EXPECTED
    bert = transformers.BertModel(tiny_config())
    assert [g.name for g in layer_groups(bert)] == [
        "embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2", "pooler"]
    clf = transformers.BertForSequenceClassification(tiny_config())
    groups = layer_groups(clf)
    assert [g.name for g in groups] == ["bert.embeddings", *(f"bert.encoder.layer.{i}"
                                                            for i in range(3)), "classifier"]
    assert groups[-1].layer_names() == "BertPooler, Linear"  # the pooler trains with the head


def test_find_head_never_returns_the_pooler():
    assert find_head(transformers.BertForSequenceClassification(tiny_config())) == "classifier"
    assert find_head(TextClassifier(tiny_encoder(), 3)) == "head"
    with pytest.raises(ValueError, match="without a head .*TextClassifier"):
        find_head(transformers.BertModel(tiny_config()))
    assert transformer_body(torch.nn.Linear(2, 2)) is None


def test_the_classifier_drops_the_unused_pooler_and_trims_padding():
    encoder = tiny_encoder()
    model = TextClassifier(encoder, 2).eval()
    assert model.encoder.pooler is None
    assert not any("pooler" in name for name, _ in model.named_parameters())
    ids, _ = toy_task(n=4)
    lengths = []
    hook = model.encoder.register_forward_pre_hook(
        lambda m, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True)
    padded_more = torch.cat([ids, torch.zeros(4, 30, dtype=torch.long)], 1)
    with torch.no_grad():
        assert torch.allclose(model(ids), model(padded_more), atol=1e-6)
    hook.remove()
    longest = int((ids != 0).sum(1).max())
    assert lengths == [longest, longest]  # 50 columns in, the longest snippet's length run
    with pytest.raises(ValueError, match="LongTensor"):
        model(ids.float())
    with pytest.raises(TypeError, match="BERT-family"):
        TextClassifier(torch.nn.Linear(3, 3), 2)


def test_the_classifier_leaves_the_encoder_it_was_given_whole():
    """Naive: ``encoder.pooler = None`` on the caller's model, whose pooler is then gone."""
    encoder = tiny_encoder()
    names = list(encoder.state_dict())
    model = TextClassifier(encoder, 2)
    assert isinstance(encoder.pooler, torch.nn.Module) and list(encoder.state_dict()) == names
    ids, _ = toy_task(n=4)
    assert encoder(input_ids=ids).pooler_output is not None
    shared = model.encoder.encoder.layer[0].output.dense.weight
    assert shared is encoder.encoder.layer[0].output.dense.weight  # its blocks, not a copy
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in encoder.parameters()) - sum(
        p.numel() for p in encoder.pooler.parameters()) + 16 * 2 + 2


def test_freezing_partial_and_discriminative_rates_on_bert():
    model = TextClassifier(tiny_encoder(), 2)
    freeze_to(model, -2)
    report = trainable_report(model)
    trainable = [row["group"] for row in report.rows if row["trainable"]]
    assert trainable == ["encoder.encoder.layer.2", "head"]
    groups = param_groups(model, 1e-3, decay=2.6)
    rates = {g["group"]: g["lr"] for g in groups}
    assert rates["head"] == pytest.approx(1e-3)
    assert rates["encoder.embeddings"] == pytest.approx(1e-3 / 2.6 ** 4)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    norm = model.encoder.encoder.layer[0].output.LayerNorm.weight
    assert id(norm) in no_decay  # no weight decay on LayerNorm
    freeze(model)
    assert trainable_report(model).totals["trainable"] == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_a_text_classifier_through_fit(strategy):
    ids, y = toy_task()
    model = TextClassifier(tiny_encoder(), 2)
    embeddings = model.encoder.embeddings.word_embeddings.weight.clone()
    result = fine_tune(model, (ids[:32], y[:32]), (ids[32:], y[32:]), strategy=strategy,
                       epochs=1, lr=1e-3, batch_size=8, progress=False, device="cpu")
    assert result.stages and all(len(s.history) == 1 for s in result.stages)
    moved = not torch.equal(model.encoder.embeddings.word_embeddings.weight, embeddings)
    assert moved == (strategy in ("scratch", "full", "gradual", "discriminative", "lp_ft"))
    if strategy == "gradual":
        assert len(result.stages) == 5  # embeddings, three blocks, the head
    assert predict(model, ids).shape == (48,)


def test_a_cached_linear_probe_equals_the_uncached_one():
    # (without dropout: an uncached probe runs the frozen encoder in training mode, so
    # dropout there would make its features noisy where the cached ones are not)
    ids, y = toy_task()
    runs = []
    for cache in (True, False):
        model = TextClassifier(tiny_encoder(), 2)
        fine_tune(model, (ids, y), strategy="linear_probe", epochs=3, batch_size=8,
                  progress=False, device="cpu", cache=cache)
        runs.append(model.head.weight.detach().clone())
    assert torch.allclose(*runs, atol=1e-5)
    with without_head(model):
        assert extract_features(model, ids).shape == (48, 16)


def test_lora_on_a_text_classifier_trains_through_fit():
    ids, y = toy_task()
    model = add_lora(TextClassifier(tiny_encoder(), 2), r=2, alpha=4)
    report = trainable_report(model)
    per_block = 2 * 2 * (16 + 16)  # query and value: r·(d_in + d_out) each
    assert [row["trainable"] for row in report.rows] == [0, per_block, per_block, per_block,
                                                         16 * 2 + 2]
    assert lora_parameter_count(model) == 3 * per_block
    frozen = model.encoder.encoder.layer[0].attention.self.query.base.weight.clone()
    history = fit(model, (ids, y), epochs=2, batch_size=8, lr=1e-2, progress=False,
                  device="cpu")
    assert len(history) == 2
    assert torch.equal(model.encoder.encoder.layer[0].attention.self.query.base.weight, frozen)
    assert model.encoder.encoder.layer[0].attention.self.query.lora_B.abs().sum() > 0


# --- the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    from transferkit.text.model import load_text_model

    return load_text_model(device="cpu")


def test_minilm_groups_and_report(minilm):
    model = TextClassifier(copy.deepcopy(minilm.model), 2)
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["encoder.embeddings", *(
        f"encoder.encoder.layer.{i}" for i in range(6)), "head"]
    report = trainable_report(model)
    assert report.rows[0]["parameters"] == 11_918_592  # 30,522 × 384 words + positions …
    assert report.totals["parameters"] == 22_713_216 - 384 * 384 - 384 + 384 * 2 + 2
    add_lora(model)
    assert report.totals["parameters"] > trainable_report(model).totals["trainable"] == (
        6 * 2 * 8 * (384 + 384) + 384 * 2 + 2)


def test_minilm_fine_tunes_on_a_few_reviews(minilm):
    """The whole path on the real model: token ids, a TextClassifier, a cached linear
    probe through fine_tune, predictions scored by classification_metrics. It must
    beat the majority class on held-out snippets (lesson 07 measures it properly:
    mean-pooled MiniLM features are not sentiment features, so few labels give
    modest gains; this draw of 64 per class scores 0.68 on these 200 snippets)."""
    from transferkit.text.model import token_ids

    train, val, _ = reviews_splits()
    small = few_labels(train.x, train.y, 64, seed=2)
    x = token_ids(minilm.tokenizer, small.x)
    x_val, y_val = token_ids(minilm.tokenizer, val.x[:200]), val.y[:200]
    torch.manual_seed(0)
    model = TextClassifier(copy.deepcopy(minilm.model), 2)
    result = fine_tune(model, (x, small.y), strategy="linear_probe", epochs=30,
                       head_lr=1e-2, batch_size=16, progress=False, device="cpu")
    assert result.stages[0].params == 384 * 2 + 2
    scores = classification_metrics(y_val, predict(model, x_val), val.classes)
    assert scores["accuracy"] > majority_accuracy(y_val) + 0.03, scores
