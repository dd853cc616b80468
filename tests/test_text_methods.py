"""Lesson 07's text methods: stratified subsamples, the table of frozen vectors, the
methods a label-budget study runs (prompting, TF-IDF, probe, fine-tuning the
transformer three ways) and the length-sorted prediction. Tiny random BERTs with a
tiny vocabulary built here; the real MiniLM for the transformer strategies, on eight
snippets and one optimizer step each."""

import copy

import numpy as np
import pytest
import torch
import transformers  # a dependency: missing, the tests fail

from transferkit.foundations.data import Data
from transferkit.methods.label_budget import label_budget_study
from transferkit.methods.strategies import TABLE
from transferkit.surgery.heads import TextClassifier
from transferkit.surgery.lora import lora_layers, lora_parameter_count
from transferkit.text import finetune as text_finetune
from transferkit.text import methods as text_methods
from transferkit.text.finetune import (
    TRANSFORMER_STRATEGIES,
    predict_texts,
    text_classifier,
    transformer_method,
)
from transferkit.text.methods import (
    EmbeddingTable,
    TextPredictor,
    probe_method,
    prompting_method,
    subsample,
    tfidf_method,
    train_probe,
)
from transferkit.text.model import TextModel, encode
from transferkit.text.reviews import Texts


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch, tmp_path):
    """No user's embedding cache; one thread (tiny models, a busy machine: README)."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- tiny models and toy texts ---------------------------------------------------------------

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "great", "awful",
         "film", "plot", "acting", "the", "a", "was", "and", "very", "movie", "story", "cast"]


def tiny_text_model(seed=0, dropout=0.0):
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)})
    config = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    return TextModel(transformers.BertModel(config).eval(), tokenizer, "tiny")


def toy_reviews(n=24, seed=0):
    """Texts whose label is whether they say "good" (1) or "bad" (0), the rest filler."""
    g = torch.Generator().manual_seed(seed)
    filler = ["the film", "a plot", "the acting", "a very story", "the cast and movie",
              "the story was", "a movie"]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = filler[int(torch.randint(len(filler), (1,), generator=g))]
        texts.append(f"{words} was {'good' if label else 'bad'}" if i % 3 else
                     f"{'good' if label else 'bad'} {words}")
        labels.append(label)
    return Data(Texts(texts), torch.tensor(labels), ("bad", "good"))


# --- subsample --------------------------------------------------------------------------------


def uneven(sizes=(50, 30, 20), seed=0):
    """x = each example's position, so a draw can be traced back; classes shuffled."""
    y = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    return Data(torch.arange(len(y)), y)


@pytest.mark.parametrize("n", [1, 7, 13, 33, 99, 100])
def test_subsample_keeps_class_shares_and_draws_distinct_examples(n):
    data = uneven()
    sub = subsample(data, n, seed=3)
    assert len(sub) == n
    assert len(set(sub.x.tolist())) == n  # no example twice
    assert torch.equal(data.y[sub.x], sub.y)  # each label stays with its example
    counts = torch.bincount(sub.y, minlength=3).double()
    shares = torch.bincount(data.y).double() / len(data)
    assert (counts - n * shares).abs().max() < 1  # every class within one example


def test_subsample_is_reproducible_and_seeds_differ():
    data = uneven()
    a, b, c = subsample(data, 33, seed=1), subsample(data, 33, seed=1), subsample(data, 33, 2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert set(a.x.tolist()) != set(c.x.tolist())
    everything = subsample(data, len(data), seed=0)  # all of it, shuffled
    assert sorted(everything.x.tolist()) == list(range(len(data)))


def test_subsample_keeps_texts_and_class_names():
    data = toy_reviews(12)
    sub = subsample(data, 5, seed=0)
    assert isinstance(sub.x, Texts) and sub.classes == ("bad", "good")
    assert all(("good" in t) == bool(label) for t, label in zip(sub.x, sub.y.tolist(),
                                                                 strict=True))


@pytest.mark.parametrize("n", [0, 101, -1, 2.0])
def test_subsample_refuses_impossible_sizes(n):
    with pytest.raises(ValueError, match="from 1 to 100"):
        subsample(uneven(), n)


# --- EmbeddingTable -----------------------------------------------------------------------------


@pytest.fixture
def counted_encode(monkeypatch):
    """Every call of encode made by EmbeddingTable, as the list of texts it was given."""
    calls = []

    def spy(model, texts, **options):
        calls.append(list(texts))
        return encode(model, texts, **options)

    monkeypatch.setattr(text_methods, "encode", spy)
    return calls


def test_embedding_table_gives_encode_vectors_in_the_asked_order():
    model = tiny_text_model()
    pool = list(toy_reviews(12).x)
    table = EmbeddingTable(model, pool)
    asked = [pool[5], pool[0], pool[5], pool[9]]  # another order, and a text twice
    vectors = table.vectors(asked)
    assert vectors.shape == (4, 16)
    assert torch.allclose(vectors, encode(model, asked, cache=False), atol=1e-5)
    assert torch.equal(vectors[0], vectors[2])
    by_itself = encode(model, [pool[9]], cache=False)[0]  # batch neighbours do not matter
    assert torch.allclose(vectors[3], by_itself, atol=1e-5)


def test_embedding_table_passes_encode_options():
    model = tiny_text_model()
    texts = list(toy_reviews(6).x)
    table = EmbeddingTable(model, texts, pooling="cls")
    assert torch.allclose(table.vectors(texts), encode(model, texts, pooling="cls",
                                                       cache=False), atol=1e-5)
    assert not torch.allclose(table.vectors(texts), encode(model, texts, cache=False))


def test_embedding_table_encodes_each_text_once(counted_encode):
    model = tiny_text_model()
    pool = list(toy_reviews(10).x)
    table = EmbeddingTable(model, pool, pool[:4])  # two pools, overlapping
    assert counted_encode == [list(dict.fromkeys(pool))]
    assert len(table) == len(set(pool))
    first = table.vectors(pool[2:7])
    again = table.vectors(pool[2:7])
    assert len(counted_encode) == 1 and torch.equal(first, again)  # looked up, not encoded
    new = ["a very good movie", "the plot was awful"]
    mixed = table.vectors([pool[0], new[0], new[1], pool[1], new[0]])
    assert counted_encode[1:] == [new]  # only the unseen texts, each once
    assert torch.allclose(mixed[1:3], encode(model, new, cache=False), atol=1e-5)
    assert torch.equal(mixed[1], mixed[4]) and torch.equal(mixed[0], table.vectors(pool[:1])[0])
    table.vectors(new)
    assert len(counted_encode) == 2 and len(table) == len(set(pool)) + 2


# --- what a method returns, and the methods without transformer training ----------------------


def test_text_predictor_returns_numpy_labels():
    predictor = TextPredictor(lambda texts: torch.tensor([len(t) % 2 for t in texts]),
                              model="m", measurements={"trainable_params": 3})
    out = predictor(("ab", "abc", "a"))
    assert isinstance(out, np.ndarray) and out.tolist() == [0, 1, 1]
    listed = TextPredictor(lambda texts: [1] * len(texts))(np.array(["x", "y"]))
    assert isinstance(listed, np.ndarray) and listed.tolist() == [1, 1]
    assert predictor.measurements == {"trainable_params": 3}
    with pytest.raises(TypeError, match="one string"):
        predictor("a single text")


def test_tfidf_learns_a_separable_toy_task():
    train, test = toy_reviews(24, seed=0), toy_reviews(16, seed=5)
    test = Data(Texts([t.replace("film", "movie") for t in test.x]), test.y)
    predictor = tfidf_method()(train, None, 0)
    assert (predictor(test.x) == test.y.numpy()).all()
    vocabulary = predictor.model[0].vocabulary_
    assert "good" in vocabulary and "was good" in vocabulary  # words and word pairs
    assert predictor.measurements["trainable_params"] == len(vocabulary) + 1  # coef + intercept
    three = Data(Texts(["good film", "bad film", "great plot", "good movie", "bad plot",
                        "great movie"]), torch.tensor([0, 1, 2, 0, 1, 2]))
    model = tfidf_method()(three, None, 0)
    assert model.measurements["trainable_params"] == 3 * len(model.model[0].vocabulary_) + 3
    assert model(["great story"]).tolist() == [2]


def blobs(n=60, dims=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = 4 * torch.eye(dims)[:classes]
    return centres[y] + 0.5 * torch.randn(n, dims, generator=g), y


def test_train_probe_separates_blobs_and_is_reproducible():
    x, y = blobs()
    head = train_probe(x, y, 3, steps=100, seed=0)
    assert isinstance(head, torch.nn.Linear) and head.weight.shape == (3, 8)
    x_new, y_new = blobs(seed=1)
    with torch.no_grad():
        assert (head(x).argmax(1) == y).all() and (head(x_new).argmax(1) == y_new).all()
    again, other = train_probe(x, y, 3, steps=100, seed=0), train_probe(x, y, 3, steps=100,
                                                                         seed=1)
    assert torch.equal(head.weight, again.weight) and torch.equal(head.bias, again.bias)
    assert not torch.equal(head.weight, other.weight)


class BlobTable:
    """A stand-in for EmbeddingTable: "good" texts near +e0, "bad" ones near -e0."""

    def __init__(self):
        self.asked = []

    def vectors(self, texts):
        self.asked.append(list(texts))
        g = torch.Generator().manual_seed(len(self.asked))
        sign = torch.tensor([1.0 if "good" in t else -1.0 for t in texts])
        x = 0.3 * torch.randn(len(texts), 4, generator=g)
        x[:, 0] += 3 * sign
        return x


def test_probe_method_fits_separable_vectors_reproducibly():
    train, test = toy_reviews(20, seed=0), toy_reviews(12, seed=3)
    method = probe_method(BlobTable(), steps=50)
    predictor = method(train, None, 0)
    assert (predictor(test.x) == test.y.numpy()).all()
    assert predictor.measurements == {"trainable_params": 4 * 2 + 2}
    again = probe_method(BlobTable(), steps=50)(train, None, 0)
    assert torch.equal(predictor.model.weight, again.model.weight)


def test_label_budget_study_runs_the_text_methods_without_validation():
    model = tiny_text_model()
    data = toy_reviews(40, seed=0)
    train, test = Data(data.x[:28], data.y[:28]), Data(data.x[28:], data.y[28:])
    table = EmbeddingTable(model, train.x, test.x)
    methods = {"prompting": prompting_method(model, {"bad": "bad", "good": ["good", "great"]}),
               "tfidf": tfidf_method(), "probe": probe_method(table, steps=20)}
    rows = label_budget_study(methods, (train, None, test), budgets=(2, None), seeds=(0, 1),
                              progress=False)
    assert len(rows) == 2 * 2 * 3
    for row in rows:
        assert "val_accuracy" not in row
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_macro_f1"] <= 1
        assert row["n_test"] == len(test) and len(row["test_correct"]) == len(test)
        assert isinstance(row["trainable_params"], int)
    params = {r["method"]: r["trainable_params"] for r in rows}
    assert params["prompting"] == 0 and params["probe"] == 16 * 2 + 2
    # the prompt vectors ignore the labels: every draw predicts the same
    assert len({r["test_correct"] for r in rows if r["method"] == "prompting"}) == 1


# --- predict_texts --------------------------------------------------------------------------


def test_predict_texts_keeps_the_rows_order():
    tiny = tiny_text_model(dropout=0.3)
    torch.manual_seed(1)
    net = TextClassifier(tiny.model, 5)
    g = torch.Generator().manual_seed(2)
    lengths = [9, 3, 14, 5, 2, 11, 7, 4, 12, 6, 3, 10]  # not sorted
    ids = torch.randint(5, len(WORDS), (len(lengths), 16), generator=g)
    ids[torch.arange(16) >= torch.tensor(lengths)[:, None]] = 0
    net.train()
    out = predict_texts(net, ids, pad_id=0, batch_size=3)
    assert net.training  # its mode is put back
    net.eval()
    with torch.no_grad():
        expected = torch.cat([net(ids[i:i + 3]).argmax(1) for i in range(0, len(ids), 3)])
    assert len(set(expected.tolist())) > 1  # a scrambled order would show
    assert out.dtype == torch.long and torch.equal(out, expected)


# --- the transformer methods, on the real MiniLM ----------------------------------------------

SNIPPETS = Texts([
    "A gem: funny, warm and beautifully acted.", "Two hours I will never get back.",
    "The best film of the year, by far.", "Dull, slow and badly written.",
    "I loved every minute of it.", "A mess from the first scene to the last.",
    "Smart, moving and wonderfully shot.", "The plot makes no sense and the jokes fall flat.",
])
LABELS = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])


@pytest.fixture(scope="module")
def minilm():
    from transferkit.text.model import load_text_model

    return load_text_model(device="cpu")


@pytest.fixture(scope="module")
def pristine(minilm):
    """The shared pre-trained weights as loaded: no method may change them."""
    return {k: v.clone() for k, v in minilm.model.state_dict().items()}


@pytest.fixture
def minilm_table(minilm):
    return EmbeddingTable(minilm, SNIPPETS)


def assert_shared_model_untouched(minilm, pristine):
    now = minilm.model.state_dict()
    assert now.keys() == pristine.keys()  # the pooler is still there, nothing wrapped
    assert all(torch.equal(now[k], v) for k, v in pristine.items())
    assert all(p.requires_grad for p in minilm.model.parameters())
    assert not minilm.model.training


def encoder_weights(net):
    """The encoder's pre-trained tensors under their original names (LoRA's base layers)."""
    return {k.replace(".base.", "."): v for k, v in net.encoder.state_dict().items()
            if "lora_" not in k}


def changed(net, pristine, prefix):
    weights = encoder_weights(net)
    names = [k for k in weights if k.startswith(prefix)]
    assert names, prefix
    return {k for k in names if not torch.equal(weights[k], pristine[k])}


def run(table, strategy, **options):
    options = {"epochs": 1, "batch_size": 8, "schedule": "constant", **options}  # one step
    predictor = transformer_method(table, strategy, **options)(Data(SNIPPETS, LABELS), None, 0)
    out = predictor(list(SNIPPETS))
    assert isinstance(out, np.ndarray) and out.shape == (8,) and set(out.tolist()) <= {0, 1}
    assert predictor.measurements["train_seconds"] > 0
    net = predictor.model
    assert isinstance(net, TextClassifier)
    assert predictor.measurements["trainable_params"] == sum(
        p.numel() for p in net.parameters() if p.requires_grad)
    return net, predictor.measurements["trainable_params"]


def probe_head(table):
    return train_probe(table.vectors(SNIPPETS), LABELS, 2, seed=0)


def test_lora_trains_only_adapters_and_head(minilm, pristine, minilm_table):
    net, trainable = run(minilm_table, "lora", r=8)
    weights = encoder_weights(net)
    assert weights.keys() == {k for k in pristine if not k.startswith("pooler.")}
    assert not changed(net, pristine, "")  # every pre-trained weight bit-identical
    layers = lora_layers(net)
    assert len(layers) == 12 and all(name.endswith(("query", "value")) for name in layers)
    assert all(layer.lora_B.abs().sum() > 0 for layer in layers.values())  # B left zero
    assert not torch.equal(net.head.weight, probe_head(minilm_table).weight)
    assert trainable == lora_parameter_count(net) + 384 * 2 + 2 == 2 * 8 * 384 * 2 * 6 + 770
    assert_shared_model_untouched(minilm, pristine)


def test_partial_trains_only_the_top_layers(minilm, pristine, minilm_table):
    net, trainable = run(minilm_table, "partial", k=2)
    assert not changed(net, pristine, "embeddings.")
    for i in range(4):
        assert not changed(net, pristine, f"encoder.layer.{i}.")
    for i in (4, 5):
        assert changed(net, pristine, f"encoder.layer.{i}.")
    top = sum(p.numel() for layer in net.encoder.encoder.layer[4:] for p in layer.parameters())
    assert trainable == top + 384 * 2 + 2
    assert_shared_model_untouched(minilm, pristine)


def test_full_trains_everything(minilm, pristine, minilm_table):
    net, trainable = run(minilm_table, "full")
    assert changed(net, pristine, "embeddings.word_embeddings")
    assert changed(net, pristine, "encoder.layer.0.")
    assert trainable == sum(p.numel() for p in net.parameters())
    assert_shared_model_untouched(minilm, pristine)


def test_text_classifier_starts_from_the_probe_when_asked(minilm, pristine, minilm_table):
    train = Data(SNIPPETS, LABELS)
    net = text_classifier(minilm_table, train, seed=0, probe_first=True)
    probe = probe_head(minilm_table)
    assert torch.equal(net.head.weight, probe.weight) and torch.equal(net.head.bias, probe.bias)
    assert net.encoder is not minilm.model and net.encoder.pooler is None
    with torch.no_grad():  # the same classifier as the probe on the frozen vectors
        ids = text_finetune.token_ids(minilm.tokenizer, SNIPPETS)
        assert torch.allclose(net.eval()(ids), probe(minilm_table.vectors(SNIPPETS)),
                              atol=1e-4)
    cold = text_classifier(minilm_table, train, seed=0)  # a fresh head by default
    assert not torch.equal(cold.head.weight, probe.weight)
    assert_shared_model_untouched(minilm, pristine)


# --- the recipe -------------------------------------------------------------------------------


def test_recipe_settings_are_checked_and_fingerprinted():
    from transferkit.text.finetune import RECIPES, Recipe, recipe_for

    assert set(RECIPES) == set(TRANSFORMER_STRATEGIES)
    full = recipe_for("full")
    assert full == RECIPES["full"] and recipe_for("full", lr=1e-3).lr == 1e-3
    assert recipe_for("full", lr=1e-3).fingerprint() != full.fingerprint()
    assert recipe_for("full").fingerprint() == Recipe(**vars(full)).fingerprint()
    with pytest.raises(TypeError, match="unknown recipe setting.*'steps'"):
        recipe_for("full", steps=8)
    for bad, match in [(dict(head="lpft"), "head is 'fresh' or 'probe'"),
                       (dict(schedule="cosine"), "schedule is 'linear' or 'constant'"),
                       (dict(lr=0), "lr must be a positive rate"),
                       (dict(epochs=0), "epochs must be a positive integer")]:
        with pytest.raises(ValueError, match=match):
            recipe_for("full", **bad)
    # epochs, or more of them to make min_steps: 16 labels in batches of 16 is 1 step/epoch
    assert recipe_for("full", epochs=4, min_steps=0).steps_for(16) == 4
    assert recipe_for("full", epochs=4).steps_for(16) == full.min_steps  # the recipe's floor
    assert recipe_for("full", epochs=4, min_steps=10).steps_for(16) == 10
    assert recipe_for("full", epochs=4, min_steps=10).steps_for(160) == 40


def test_optimizer_groups_keep_weight_decay_off_norms_and_biases():
    from transferkit.text.finetune import optimizer_groups, recipe_for

    tiny = tiny_text_model()
    net = TextClassifier(copy.deepcopy(tiny.model), 2)
    recipe = recipe_for("full", lr=2e-5, head_lr=1e-3, weight_decay=0.05)
    groups = optimizer_groups(net, net.head, recipe)
    names = {id(p): n for n, p in net.named_parameters()}
    by_name = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(by_name) == sum(1 for _ in net.parameters())  # every parameter, once
    assert by_name["head.weight"] == (1e-3, 0.05) and by_name["head.bias"] == (1e-3, 0.0)
    assert by_name["encoder.encoder.layer.0.attention.self.query.weight"] == (2e-5, 0.05)
    assert by_name["encoder.encoder.layer.0.attention.output.LayerNorm.weight"] == (2e-5, 0.0)
    assert by_name["encoder.encoder.layer.0.output.dense.bias"] == (2e-5, 0.0)


def test_a_run_follows_its_schedule_and_reports_its_curve_and_drift():
    """BERT's schedule falls in a straight line: the last of 8 steps (1 of warm-up) runs at
    1/7 of each group's rate; the curve is measured before the first step and after the
    last; the drift of a trained encoder is above 0, of an untrained one 0."""
    tiny = tiny_text_model()
    data = toy_reviews(32)
    table = EmbeddingTable(tiny, data.x)
    rates = []
    real_fit = text_finetune.fit

    def spy(model, train, *args, optimizer, **kwargs):
        history = real_fit(model, train, *args, optimizer=optimizer, **kwargs)
        rates.append([g["lr"] for g in optimizer.param_groups])
        return history

    text_finetune.fit = spy
    try:
        method = transformer_method(table, "full", epochs=2, batch_size=8, min_steps=0,
                                    curve=(data, 4), drift_on=data.x[:10])
        predictor = method(data, None, 0)
    finally:
        text_finetune.fit = real_fit
    recipe = method.recipe
    peak = [recipe.lr, recipe.lr, recipe.head_lr, recipe.head_lr]  # body (wd, no wd), head
    assert sorted(rates[0]) == pytest.approx(sorted(r / 7 for r in peak))
    m = predictor.measurements
    assert m["steps"] == 8 and [row["step"] for row in m["curve"]] == [0, 4, 8]
    assert all(0 <= row["accuracy"] <= 1 for row in m["curve"])
    assert m["feature_drift"] > 0 and m["recipe"] == method.recipe.fingerprint()
    # the predictor keeps the trained model, not its gradients (a model's size again)
    assert all(p.grad is None for p in predictor.model.parameters())
    untrained = text_finetune.encoder_drift(
        TextClassifier(copy.deepcopy(tiny.model), 2), table, data.x[:10])
    assert untrained == pytest.approx(0, abs=1e-6)


def test_length_grouped_batches_carry_less_padding_and_see_every_text_once():
    from transferkit.text.finetune import length_grouped

    lengths = torch.randint(4, 60, (250,), generator=torch.Generator().manual_seed(1))

    def padded_tokens(order):  # what a TextClassifier computes: each batch at its longest
        return sum(int(lengths[b].max()) * len(b) for b in order.split(16))

    grouped = length_grouped(lengths, 16)
    first = grouped(torch.Generator().manual_seed(0))
    assert sorted(first.tolist()) == list(range(250))  # a permutation: each text once
    assert torch.equal(first, grouped(torch.Generator().manual_seed(0)))  # seeded
    assert not torch.equal(first, grouped(torch.Generator().manual_seed(1)))
    randomly = [padded_tokens(torch.randperm(250, generator=torch.Generator().manual_seed(s)))
                for s in range(5)]
    assert padded_tokens(first) < 0.75 * min(randomly)
    assert padded_tokens(first) >= int(lengths.sum())


def test_unknown_strategy_names_the_choices():
    tiny = tiny_text_model()
    with pytest.raises(ValueError, match="'partial', 'full', 'lora'.*'qlora'"):
        transformer_method(EmbeddingTable(tiny), "qlora")
    assert TRANSFORMER_STRATEGIES == ("partial", "full", "lora")
    assert set(TRANSFORMER_STRATEGIES) <= set(TABLE)  # run by the one dispatch
