"""The device rule (transferkit.foundations.device), checked on a CPU-only machine, and on a GPU.

On one device nothing can be on the wrong one, so these tests run the library on the
stand-in accelerator of `tests/standin_device.py`: `pick_device()` answers it as it
answers CUDA on a GPU machine, and mixing it with CPU tensors raises torch's own error.
Each bug that broke lessons 04, 05 and 07 on a real GPU fails here: a probe trained by
`fit` (moved to the accelerator) then fed CPU vectors, a rotation grid built on the CPU
for images on the accelerator, an optimizer built before its model moved, a checkpoint
that only loads where it was saved. On a machine with a CUDA GPU the same tests run
there too (the ``cuda`` cases).
"""

from __future__ import annotations

import copy

import pytest
import torch
from standin_device import STANDIN, OnStandIn, StandInAccelerator
from torch import nn

from transferkit.foundations import data
from transferkit.foundations.data import Data
from transferkit.methods import autoencoder, finetune, strategies
from transferkit.methods.label_budget import fit_method, label_budget_study, logistic_regression
from transferkit.surgery import lora
from transferkit.surgery.cached_bottom import CachedBottomClassifier
from transferkit.surgery.heads import Classifier, TextClassifier, replace_head
from transferkit.text import finetune as text_finetune
from transferkit.text import methods as text_methods
from transferkit.text import model as text
from transferkit.training import loop as train

ACCELERATORS = ["stand-in", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


@pytest.fixture(params=ACCELERATORS)
def accelerator(request, monkeypatch):
    """The accelerator `pick_device()` answers: the stand-in, or a real CUDA GPU."""
    if request.param == "cuda":
        monkeypatch.setenv("TRANSFERKIT_DEVICE", "cuda")
        yield CUDA()
        return
    monkeypatch.delenv("TRANSFERKIT_DEVICE", raising=False)
    with StandInAccelerator() as acc:
        acc.device = STANDIN
        yield acc


class CUDA:
    """The real thing: no counts, and nothing to leave or re-enter."""

    device = torch.device("cuda")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def needs_counts(accelerator):
    if not isinstance(accelerator, StandInAccelerator):
        pytest.skip("transfers and syncs are counted on the stand-in")


def on_accelerator(t: torch.Tensor) -> bool:
    return t.device.type in ("cuda", STANDIN.type)


def all_on_accelerator(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(on_accelerator(t) for t in tensors)


def on_cpu(t: torch.Tensor) -> bool:
    return not isinstance(t, OnStandIn) and t.device.type == "cpu"


def test_on_the_stand_in_tensors_are_wrapped():
    with StandInAccelerator():
        t = torch.zeros(2).to(STANDIN)
        assert isinstance(t, OnStandIn) and on_accelerator(t) and not on_cpu(t)


@pytest.fixture(scope="module")
def digits():
    x, y = data.load_digits()
    return Data(x[:240], y[:240]), Data(x[240:360], y[240:360])


def mlp():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# --- the stand-in itself: it must catch what CUDA catches ------------------------------------


def test_the_stand_in_refuses_what_a_gpu_refuses(accelerator):
    needs_counts(accelerator)
    model = mlp().to(STANDIN)
    with pytest.raises(RuntimeError, match="same device"):
        model(torch.zeros(3, 64))
    out = model(torch.zeros(3, 64).to(STANDIN))
    assert on_accelerator(out) and on_cpu(out.cpu())
    with pytest.raises(TypeError, match="Tensor.cpu"):
        out.numpy()
    assert accelerator.transfers["to stand-in"] >= 1 and accelerator.syncs["copy to cpu"] == 1


# --- rule 1: training picks the device and the model stays there ------------------------------


def test_fit_trains_on_the_picked_device_and_evaluate_predict_take_cpu_inputs(accelerator,
                                                                             digits):
    train_set, val_set = digits
    model = mlp()
    history = train.fit(model, train_set, val_set, epochs=2, progress=False)
    assert all_on_accelerator(model) and len(history.rows) == 2
    predicted = train.predict(model, val_set.x)  # CPU inputs: moved by predict
    assert on_cpu(predicted) and predicted.shape == (len(val_set),)
    assert set(train.evaluate(model, val_set)) == {"loss", "accuracy"}


@pytest.mark.parametrize("with_val", [False, True])
def test_fit_waits_for_the_device_once_per_epoch(accelerator, digits, with_val):
    """On a GPU a copy or an ``.item()`` stalls the pipeline, and with a few labels an
    epoch is one step: fit keeps the data on the device, draws the order there, and reads
    an epoch's numbers (loss, accuracy, validation) back in one go."""
    needs_counts(accelerator)
    train_set, val_set = digits
    counts = []
    for epochs in (1, 3):
        accelerator.reset_counts()
        train.fit(mlp(), train_set, val_set if with_val else None, epochs=epochs,
                  batch_size=16, progress=False)
        counts.append((sum(accelerator.transfers.values()), sum(accelerator.syncs.values())))
    (transfers_1, syncs_1), (transfers_3, syncs_3) = counts
    assert transfers_3 == transfers_1  # nothing per epoch or step: the order is drawn there
    assert syncs_3 - syncs_1 == 2  # one wait per epoch: its numbers read back at once


@pytest.mark.parametrize("corruption", [dict(noise=0.2), dict(mask=0.3),
                                        dict(augment=data.random_affine)])
def test_denoising_and_augmenting_draw_their_noise_on_the_device(accelerator, digits,
                                                                  corruption):
    """Lesson 03 on a GPU: noise drawn on the CPU was copied over in every step (a pageable
    copy makes the CPU wait for the GPU)."""
    needs_counts(accelerator)
    counts = []
    for epochs in (1, 3):
        accelerator.reset_counts()
        autoencoder.pretrain(autoencoder.Autoencoder((64, 16, 2)), digits[0].x, epochs=epochs,
                             batch_size=16, progress=False, **corruption)
        counts.append(sum(accelerator.transfers.values()))
    assert counts[1] - counts[0] <= 2 < len(digits[0]) // 16  # per epoch, not per step


@pytest.mark.parametrize("strategy", strategies.STRATEGIES)
def test_every_fine_tuning_strategy_leaves_the_whole_model_on_one_device(accelerator, digits,
                                                                        strategy):
    train_set, val_set = digits
    model = Classifier(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16),
                                     nn.ReLU()), 10)
    finetune.fine_tune(model, train_set, val_set, strategy=strategy, epochs=1, progress=False)
    assert all_on_accelerator(model)
    assert on_cpu(train.predict(model, val_set.x))


def test_pretraining_an_autoencoder_then_its_helpers_answer_on_the_cpu(accelerator, digits):
    train_set, _ = digits
    ae = autoencoder.Autoencoder((64, 16, 2))
    autoencoder.pretrain(ae, train_set.x, epochs=1, progress=False, noise=0.1)
    assert all_on_accelerator(ae)
    x = train_set.x[:10]
    for result in (autoencoder.reconstruct(ae, x), autoencoder.codes(ae, x),
                   autoencoder.reconstruction_error(ae, x).per_example):
        assert on_cpu(result)


def test_a_label_budget_study_runs_its_methods_on_the_accelerator(accelerator, digits):
    train_set, val_set = digits
    splits = (train_set, val_set, val_set)
    rows = label_budget_study({"MLP": fit_method(mlp, steps=4),
                               "logistic regression": logistic_regression},
                              splits, budgets=[2], seeds=[0], progress=False)
    assert {row["method"] for row in rows} == {"MLP", "logistic regression"}


# --- rule 2: everything else runs where the model is; rule 3: results on the CPU ------------


def test_extract_features_runs_on_the_backbones_device_and_returns_cpu(accelerator, digits):
    backbone = nn.Sequential(nn.Linear(64, 8), nn.ReLU()).to(accelerator.device)
    features = finetune.extract_features(backbone, digits[0].x, cache=False)
    assert on_cpu(features) and features.shape == (len(digits[0]), 8)


# --- rule 4: what the library builds joins what it builds on --------------------------------


def test_shifted_images_stay_on_their_device(accelerator, digits):
    """Lesson 04 on a GPU: ``grid is on cpu`` from rotate's sampling grid."""
    x = digits[0].x[:6].to(accelerator.device)
    for shifted in (data.rotate(x, 30), data.translate(x, 1, -1),
                    data.random_affine(x, generator=torch.Generator().manual_seed(0))):
        assert on_accelerator(shifted) and shifted.shape == x.shape
    assert torch.allclose(data.rotate(x, 30).cpu(), data.rotate(x.cpu(), 30))


def test_new_layers_are_made_on_the_models_device(accelerator):
    encoder = nn.Sequential(nn.Linear(64, 8), nn.ReLU()).to(accelerator.device)
    assert all_on_accelerator(Classifier(encoder, 3))
    net = mlp().to(accelerator.device)
    replace_head(net, 4)
    assert all_on_accelerator(net)


# --- the text methods (lesson 07) on a tiny BERT ---------------------------------------------


@pytest.fixture
def tiny_text(monkeypatch, tmp_path):
    from test_text_methods import tiny_text_model, toy_reviews

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    return tiny_text_model(), toy_reviews(24), toy_reviews(12, seed=1)


def test_the_probe_trained_on_the_accelerator_predicts_from_cpu_vectors(accelerator,
                                                                       tiny_text):
    """Lesson 07 on a GPU: ``mat1 is on cpu`` — fit moved the probe's head, the table's
    vectors stayed on the CPU."""
    model, train_set, test_set = tiny_text
    table = text_methods.EmbeddingTable(model, train_set.x, test_set.x)
    predictor = text_methods.probe_method(table, steps=3)(train_set, test_set, 0)
    predicted = predictor(test_set.x)
    assert predicted.shape == (len(test_set),)


@pytest.mark.parametrize("strategy", text_finetune.TRANSFORMER_STRATEGIES)
def test_each_transformer_strategy_trains_and_predicts_on_the_accelerator(accelerator,
                                                                         tiny_text, strategy):
    model, train_set, test_set = tiny_text
    table = text_methods.EmbeddingTable(model, train_set.x, test_set.x)
    predictor = text_finetune.transformer_method(table, strategy, epochs=1, batch_size=8, k=1)(
        train_set, test_set, 0)
    assert all_on_accelerator(predictor.model)
    assert predictor(test_set.x).shape == (len(test_set),)


def test_text_model_functions_take_a_model_on_the_accelerator(accelerator, tiny_text):
    model, train_set, _ = tiny_text
    on_device = text.TextModel(copy.deepcopy(model.model).to(accelerator.device), model.tokenizer,
                               "tiny on the accelerator")
    vectors = text.encode(on_device, list(train_set.x[:5]), cache=False)
    assert on_cpu(vectors)
    assert torch.allclose(vectors, text.encode(model, list(train_set.x[:5]), cache=False),
                          atol=1e-5)
    scores = text.zero_shot_scores(on_device, list(train_set.x[:5]),
                                   {"bad": ["bad"], "good": ["good"]})
    assert on_cpu(scores)
    net = TextClassifier(copy.deepcopy(model.model).to(accelerator.device), 2)
    assert all_on_accelerator(net)
    ids = text.token_ids(model.tokenizer, list(train_set.x[:5]))
    assert on_cpu(text_finetune.predict_texts(net, ids))
    bottom = CachedBottomClassifier(net, 1)
    assert on_accelerator(bottom(ids.to(accelerator.device)))
    lora.add_lora(net, r=2, targets=("query", "value"))
    assert all_on_accelerator(net)


def test_a_model_saved_on_the_accelerator_loads_on_the_cpu(accelerator, tmp_path, digits):
    """Lesson 03 saves its encoder wherever it trained; lesson 04 (maybe on a laptop) loads it."""
    from transferkit.methods.encoder import load_encoder, save_encoder
    from transferkit.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    ae = autoencoder.Autoencoder((64, 16, 2)).to(accelerator.device)
    path = save_encoder(ae, tmp_path / "encoder.pt")
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters())
    train.fit(model, digits[0], epochs=1, optimizer=optimizer, progress=False)
    saved = save_checkpoint(tmp_path / "mlp.pt", model, optimizer=optimizer)
    accelerator.__exit__(None, None, None)  # back to a machine without the accelerator
    try:
        encoder = load_encoder(path)
        assert all(on_cpu(p) for p in encoder.parameters())
        state = read_checkpoint(saved)
        assert all(on_cpu(t) for t in state["model"].values())
        assert all(on_cpu(t) for s in state["optimizer"]["state"].values() for t in s.values())
        assert all(on_cpu(t) for s in state["optimizer"]["state"].values() for t in s.values()
                   if isinstance(t, torch.Tensor))
        load_checkpoint(saved, mlp())
    finally:
        accelerator.__enter__()
