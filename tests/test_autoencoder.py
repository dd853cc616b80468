import numpy as np
import pytest
import torch
from torch import nn

from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.methods.autoencoder import (
    PCA,
    Autoencoder,
    ConvAutoencoder,
    article_dims,
    codes,
    corrupt,
    interpolate,
    pretrain,
    reconstruct,
    reconstruction_error,
)
from transferkit.methods.encoder import (
    Encoder,
    EncoderFileError,
    encoder_versions,
    latest_encoder,
    load_encoder,
    save_encoder,
)
from transferkit.training.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits()
    return train_val_test_split(x, y, seed=0)


def linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


# --- architecture ------------------------------------------------------------------------


def test_article_dims_adapt_the_articles_chain():
    assert article_dims(784) == (784, 128, 64, 32, 16, 8, 4, 2)
    assert article_dims(64) == (64, 128, 64, 32, 16, 8, 4, 2)
    assert article_dims(64, code_dim=16) == (64, 128, 64, 32, 16)
    assert article_dims(64, code_dim=10) == (64, 128, 64, 32, 16, 10)


def test_shapes_of_the_articles_autoencoder():
    model = Autoencoder(article_dims(64))
    x = torch.rand(5, 64)
    assert model(x).shape == (5, 64)
    assert model.encode(x).shape == (5, 2) and model.code_dim == 2
    assert model.decode(torch.zeros(3, 2)).shape == (3, 64)
    assert model.encoder.in_features == 64 and model.encoder.out_features == 2
    out = model(x)
    assert 0 <= float(out.detach().min()) and float(out.detach().max()) <= 1  # the sigmoid


def test_decoder_mirrors_the_encoder():
    model = Autoencoder([64, 32, 16, 4], activation="tanh", out_activation=None)
    enc = [(m.in_features, m.out_features) for m in linears(model.encoder)]
    dec = [(m.in_features, m.out_features) for m in linears(model.decoder)]
    assert enc == [(64, 32), (32, 16), (16, 4)]
    assert dec == [(b, a) for a, b in reversed(enc)]
    # activations between layers, a linear code, no output activation when asked
    assert isinstance(model.encoder.layers[-1], nn.Linear)
    assert [type(m) for m in model.decoder] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh,
                                                nn.Linear]
    assert isinstance(Autoencoder([64, 8]).decoder[-1], nn.Sigmoid)


def test_conv_autoencoder_shapes():
    model = ConvAutoencoder((1, 8, 8), channels=(16, 32), code_dim=12)
    x = torch.rand(4, 1, 8, 8)
    assert model(x).shape == x.shape and model.encode(x).shape == (4, 12)
    big = ConvAutoencoder((3, 28, 28), channels=(8, 16), code_dim=5)
    assert big(torch.rand(2, 3, 28, 28)).shape == (2, 3, 28, 28)
    with pytest.raises(ValueError, match="cannot be halved 3 times"):
        ConvAutoencoder((1, 28, 28), channels=(8, 16, 32))


@pytest.mark.parametrize(
    ("make", "x", "message"),
    [
        (lambda: Autoencoder(article_dims(64)), torch.rand(3, 784),
         r"expects inputs of shape \(batch, 64\), i.e. 64 values per example, but got \(3, 784\)"),
        (lambda: Autoencoder([64, 8]), torch.rand(3, 8, 8), r"Flatten the images first"),
        (lambda: ConvAutoencoder((1, 8, 8)), torch.rand(3, 64),
         r"expects inputs of shape \(batch, 1, 8, 8\).*Reshape them first"),
    ],
)
def test_wrong_input_size_names_the_expected_size(make, x, message):
    with pytest.raises(ValueError, match=message):
        make()(x)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="at least two positive sizes"):
        Autoencoder([64])
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Autoencoder([64, 8], activation="swish")
    with pytest.raises(ValueError, match=r"codes of shape \(batch, 8\)"):
        Autoencoder([64, 8]).decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"codes of shape \(batch, 16\)"):
        ConvAutoencoder((1, 8, 8)).decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown activation 'sigmod'"):
        ConvAutoencoder((1, 8, 8), out_activation="sigmod")
    with pytest.raises(TypeError, match="float tensor of inputs"):
        reconstruction_error(Autoencoder([64, 8]), torch.zeros(2, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="does not have the input's shape"):
        reconstruction_error(nn.Linear(64, 10), torch.rand(2, 64))


# --- training ------------------------------------------------------------------------------


def test_reconstruction_error_decreases_with_training(digits):
    torch.manual_seed(0)
    model = Autoencoder([64, 64, 8])
    before = reconstruction_error(model, digits.test.x).mean
    pretrain(model, digits.train.x, epochs=15, progress=False, seed=0)
    after = reconstruction_error(model, digits.test.x).mean
    assert after < 0.5 * before
    history = model.history
    assert len(history) == 15 and history["loss"][-1] < history["loss"][0]
    assert "accuracy" not in history.columns  # no labels anywhere


def test_same_seed_same_autoencoder(digits):
    weights = []
    for _ in range(2):
        torch.manual_seed(3)
        model = pretrain(Autoencoder([64, 16, 4]), digits.train.x, epochs=2, progress=False,
                         noise=0.2, mask=0.1, seed=7)
        weights.append(model.encoder.layers[0].weight.detach().clone())
    assert torch.equal(*weights)


def test_reconstruction_error_per_example_and_mean():
    model = Autoencoder([64, 4])
    x = torch.rand(10, 64)
    result = reconstruction_error(model, x, batch_size=3)  # several batches
    with torch.no_grad():
        by_hand = ((model(x) - x) ** 2).mean(dim=1)
    assert torch.allclose(result.per_example, by_hand)
    with torch.no_grad():
        loss = float(nn.functional.mse_loss(model(x), x))
    assert result.mean == pytest.approx(loss, rel=1e-5)
    assert model.training  # left in the mode it was in


def test_denoising_autoencoder_removes_noise_better(digits):
    noisy_test = corrupt(digits.test.x, noise=0.3, generator=torch.Generator().manual_seed(1))
    errors = {}
    for noise in (0.0, 0.3):
        torch.manual_seed(0)
        model = pretrain(Autoencoder([64, 64, 16]), digits.train.x, epochs=20, progress=False,
                         noise=noise, seed=0)
        with torch.no_grad():
            errors[noise] = float(((model.eval()(noisy_test) - digits.test.x) ** 2).mean())
    assert errors[0.3] < errors[0.0]


def test_corrupt():
    x = torch.full((200, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    masked = corrupt(x, mask=0.25, generator=g)
    assert 0.2 < float((masked == 0).float().mean()) < 0.3
    noisy = corrupt(x, noise=2.0, generator=g)
    assert float(noisy.min()) == 0.0 and float(noisy.max()) == 1.0  # clamped to [0, 1]
    assert torch.equal(corrupt(x, noise=0.1, generator=torch.Generator().manual_seed(5)),
                       corrupt(x, noise=0.1, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="mask in"):
        corrupt(x, mask=1.5)


def test_pretrain_with_validation_early_stopping_and_checkpoint(digits, tmp_path):
    path = tmp_path / "ae.pt"
    model = pretrain(Autoencoder([64, 8]), digits.train, digits.val, epochs=3,
                     early_stopping=2, checkpoint=path, progress=False)
    assert "val_loss" in model.history.columns
    assert path.is_file()


def test_pretrain_refuses_an_existing_checkpoint_before_training(tmp_path, monkeypatch):
    path = tmp_path / "ae.pt"
    path.write_bytes(b"an earlier run")
    trained = []
    monkeypatch.setattr("transferkit.methods.autoencoder.fit", lambda *a, **k: trained.append(1))
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        pretrain(Autoencoder([64, 8]), torch.rand(10, 64), epochs=1, checkpoint=path,
                 progress=False)
    assert not trained and path.read_bytes() == b"an earlier run"
    monkeypatch.undo()
    pretrain(Autoencoder([64, 8]), torch.rand(10, 64), epochs=1, checkpoint=path,
             overwrite=True, progress=False)
    assert path.read_bytes() != b"an earlier run"


def test_interpolation_ends_at_the_two_reconstructions(digits):
    model = Autoencoder([64, 16, 2])
    a, b = digits.test.x[0], digits.test.x[1]
    path = interpolate(model, a, b, steps=5)
    assert path.shape == (5, 64) and model.training  # the model's mode is kept
    with torch.no_grad():
        assert torch.allclose(path[0], model(a[None])[0], atol=1e-6)
        assert torch.allclose(path[-1], model(b[None])[0], atol=1e-6)
    assert codes(model, digits.test.x[:7]).shape == (7, 2)


# --- the PCA baseline ---------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 10])
def test_pca_matches_scikit_learn(digits, k):
    from sklearn.decomposition import PCA as SkPCA

    train, test = digits.train.x, digits.test.x
    ours = PCA(k).fit(train)
    theirs = SkPCA(k, svd_solver="full").fit(train.double().numpy())
    rebuilt = theirs.inverse_transform(theirs.transform(test.double().numpy()))
    with torch.no_grad():
        assert np.allclose(ours(test).numpy(), rebuilt, atol=1e-4)
        z = ours.encode(test).numpy()
    # the same components up to sign
    assert np.allclose(np.abs(ours.components.numpy()), np.abs(theirs.components_), atol=1e-4)
    assert np.allclose(np.abs(z), np.abs(theirs.transform(test.double().numpy())), atol=1e-4)
    sk_error = float(((rebuilt - test.double().numpy()) ** 2).mean())
    assert reconstruction_error(ours, test).mean == pytest.approx(sk_error, rel=1e-3)


def test_pca_with_as_many_components_as_the_rank_is_exact(digits):
    train = digits.train.x
    rank = int(torch.linalg.matrix_rank((train - train.mean(0)).double()))
    assert rank < 64  # some pixels are blank in every image
    assert reconstruction_error(PCA(rank).fit(train), train).mean < 1e-10
    assert reconstruction_error(PCA(rank - 1).fit(train), train).mean > 1e-9


def test_pca_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA(2)(torch.rand(3, 64))
    with pytest.raises(ValueError, match="fitted on 64 features"):
        PCA(2).fit(torch.rand(20, 64))(torch.rand(3, 10))
    with pytest.raises(ValueError, match="at least that many"):
        PCA(30).fit(torch.rand(10, 64))


# --- saving and loading the encoder ----------------------------------------------------


def test_encoder_round_trip_needs_no_other_code(tmp_path, digits):
    model = pretrain(Autoencoder(article_dims(64), activation="elu"), digits.train.x, epochs=1,
                     progress=False)
    path = save_encoder(model, tmp_path / "enc.pt", meta={"epochs": 1})
    encoder = load_encoder(path, in_features=64, code_dim=2)
    assert isinstance(encoder, Encoder) and not encoder.training
    assert encoder.arch == {"kind": "mlp", "dims": list(article_dims(64)), "activation": "elu"}
    assert encoder.meta == {"epochs": 1}
    with torch.no_grad():
        assert torch.equal(encoder(digits.test.x), codes(model, digits.test.x))


def test_conv_encoder_round_trip(tmp_path):
    model = ConvAutoencoder((1, 8, 8), channels=(4, 8), code_dim=6)
    encoder = load_encoder(save_encoder(model, tmp_path / "conv.pt"))
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(encoder(x), model.eval().encode(x))


def test_saving_never_overwrites_and_versions_are_found(tmp_path):
    torch.manual_seed(0)
    first, second = Autoencoder([64, 8]), Autoencoder([64, 8])
    path = tmp_path / "artifacts" / "enc.pt"
    save_encoder(first, path)
    with pytest.raises(FileExistsError, match="will not replace it"):
        save_encoder(second, path)
    # versioned: the same encoder again writes nothing; another one gets the next number
    assert save_encoder(first, path, versioned=True) == path
    v2 = save_encoder(second, path, versioned=True)
    assert v2.name == "enc-v2.pt"
    assert save_encoder(second, path, versioned=True) == v2
    assert save_encoder(first, path, versioned=True).name == "enc-v3.pt"
    assert [p.name for p in encoder_versions(path)] == ["enc.pt", "enc-v2.pt", "enc-v3.pt"]
    assert latest_encoder(path).name == "enc-v3.pt"
    with torch.no_grad():  # the original file is intact
        x = torch.rand(2, 64)
        assert torch.equal(load_encoder(path)(x), first.encoder(x))
    with pytest.raises(FileNotFoundError, match=r"no encoder saved .* save_encoder\(model, path"):
        latest_encoder(tmp_path / "none.pt")


def test_loading_a_file_that_does_not_match(tmp_path):
    path = save_encoder(Autoencoder([64, 32, 8]), tmp_path / "enc.pt")
    with pytest.raises(EncoderFileError, match="in_features=64, but in_features=784 was expected"):
        load_encoder(path, in_features=784)
    with pytest.raises(EncoderFileError, match="code_dim=8, but code_dim=2"):
        load_encoder(path, code_dim=2)
    # a checkpoint of a whole model is not an encoder file
    plain = save_checkpoint(tmp_path / "model.pt", nn.Linear(64, 10))
    with pytest.raises(EncoderFileError, match="not a saved encoder"):
        load_encoder(plain)
    # an architecture whose weights were swapped for others does not half-load
    wrong = Autoencoder([64, 16, 8]).encoder
    save_checkpoint(tmp_path / "swapped.pt", wrong,
                    meta={"format": "transferkit-encoder",
                          "architecture": {"kind": "mlp", "dims": [64, 32, 8],
                                           "activation": "relu"}})
    with pytest.raises(CheckpointMismatchError, match="file has shape"):
        load_encoder(tmp_path / "swapped.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_encoder(broken)
    with pytest.raises(TypeError, match="needs a transferkit Autoencoder"):
        save_encoder(nn.Linear(64, 2), tmp_path / "x.pt")


def test_a_description_that_disagrees_with_its_weights_builds_nothing(tmp_path, monkeypatch):
    """A file whose stored architecture asks for an 8000×8000 layer, beside weights of a
    small encoder, is refused before any layer of that size takes memory."""
    small = Autoencoder([64, 16, 8]).encoder
    path = save_checkpoint(tmp_path / "odd.pt", small, meta={
        "format": "transferkit-encoder",
        "architecture": {"kind": "mlp", "dims": [64, 8000, 8000, 8], "activation": "relu"}})
    built = []
    real_init = nn.Linear.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append((self.weight.shape, self.weight.device.type))

    monkeypatch.setattr(nn.Linear, "__init__", spy)
    with pytest.raises(CheckpointMismatchError, match=r"layers.2.weight: file has shape "
                       r"\(8, 16\), model has \(8000, 8000\)"):
        load_encoder(path)
    assert (torch.Size([8000, 8000]), "cpu") not in built, "allocated before the check"
    assert (torch.Size([8000, 8000]), "meta") in built  # compared on the meta device


def test_save_encoder_arguments_in_the_wrong_order_get_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match=r"save_encoder\(model, path\)"):
        save_encoder(tmp_path / "e.pt", Autoencoder([64, 8]))


def test_versioned_saving_goes_past_the_highest_version(tmp_path):
    """With enc.pt deleted and enc-v2.pt on disk, the new file is enc-v3.pt: the latest."""
    torch.manual_seed(0)
    first, second, third = (Autoencoder([64, 8]) for _ in range(3))
    path = tmp_path / "enc.pt"
    save_encoder(first, path, versioned=True)
    assert save_encoder(second, path, versioned=True).name == "enc-v2.pt"
    path.unlink()
    written = save_encoder(third, path, versioned=True)
    assert written.name == "enc-v3.pt" and latest_encoder(path) == written
    assert not path.exists()
    with torch.no_grad():
        x = torch.rand(2, 64)
        assert torch.equal(load_encoder(latest_encoder(path))(x), third.encoder(x))


# --- running a trained model: device and modes ----------------------------------------


class _DeviceSpy(Autoencoder):
    """Records the device of every input; returns CPU tensors, so a 'meta' device works."""

    def __init__(self):
        super().__init__([64, 2])
        self.seen = []

    def encode(self, x):
        self.seen.append(x.device.type)
        return torch.zeros(len(x), 2)

    def decode(self, z):
        self.seen.append(z.device.type)
        return torch.zeros(len(z), 64)

    def forward(self, x):
        self.seen.append(x.device.type)
        return torch.zeros(x.shape)


def test_inputs_go_to_the_models_device(monkeypatch):
    """After fit the model may sit on a GPU: the helpers move inputs to it, return CPU."""
    monkeypatch.setattr("transferkit.methods.autoencoder.model_device",
                        lambda model: torch.device("meta"))
    x = torch.rand(5, 64)
    for run in (lambda m: codes(m, x), lambda m: reconstruct(m, x),
                lambda m: reconstruction_error(m, x).per_example,
                lambda m: interpolate(m, x[0], x[1], steps=3)):
        spy = _DeviceSpy()
        out = run(spy)
        assert spy.seen and set(spy.seen) == {"meta"}
        assert out.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_helpers_work_on_a_cuda_model(digits):
    model = pretrain(Autoencoder([64, 16, 2]), digits.train.x, epochs=1, progress=False,
                     device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    x = digits.test.x[:20]
    results = [codes(model, x), reconstruct(model, x), interpolate(model, x[0], x[1]),
               reconstruction_error(model, x).per_example]
    assert all(r.device.type == "cpu" for r in results)
    assert results[0].shape == (20, 2) and results[1].shape == (20, 64)
    with torch.no_grad():
        assert torch.allclose(results[1], model.eval()(x.cuda()).cpu(), atol=1e-5)


def test_results_are_cpu_tensors(digits):
    model = Autoencoder([64, 16, 2])
    x = digits.test.x[:10]
    for out in (codes(model, x), reconstruct(model, x, batch_size=3),
                interpolate(model, x[0], x[1], steps=4)):
        assert out.device.type == "cpu" and not out.requires_grad
    with torch.no_grad():
        assert torch.allclose(reconstruct(model, x, batch_size=3), model.eval()(x))


def _model_with_a_frozen_batchnorm():
    model = Autoencoder([64, 16, 2])
    model.decoder = nn.Sequential(nn.BatchNorm1d(2), *model.decoder)
    model.train()
    model.decoder[0].eval()  # frozen statistics, on purpose
    return model


def test_helpers_give_every_module_its_own_mode_back():
    x = torch.rand(6, 64)
    for run in (lambda m: codes(m, x), lambda m: reconstruct(m, x),
                lambda m: reconstruction_error(m, x), lambda m: interpolate(m, x[0], x[1])):
        model = _model_with_a_frozen_batchnorm()
        run(model)
        assert model.training and model.encoder.training
        assert not model.decoder[0].training  # not switched back to training


def test_bad_arguments_to_the_helpers_give_clear_errors():
    model = Autoencoder([64, 8])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        reconstruction_error(model, torch.rand(3, 64), batch_size=0)
    with pytest.raises(TypeError, match="needs a torch model.*got function"):
        reconstruction_error(lambda x: x, torch.rand(3, 64))
    with pytest.raises(TypeError, match="codes needs an autoencoder"):
        codes(nn.Linear(64, 2), torch.rand(3, 64))
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA(2).decode(torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="not fitted"):
        PCA(2).encode(torch.rand(3, 64))
    with pytest.raises(ValueError, match=r"codes of shape \(batch, 2\)"):
        PCA(2).fit(torch.rand(20, 64)).decode(torch.zeros(3, 5))


def test_encoder_on_an_empty_or_single_example():
    encoder = Autoencoder([64, 8]).encoder
    assert encoder(torch.zeros(0, 64)).shape == (0, 8)
    with pytest.raises(ValueError, match=r"got \(0, 8, 8\)\. Flatten the images first"):
        encoder(torch.zeros(0, 8, 8))
    with pytest.raises(ValueError, match=r"x\.unsqueeze\(0\)"):
        encoder(torch.rand(64))


def test_corrupt_can_leave_unbounded_data_unclipped():
    x = torch.randn(100, 64) * 3  # standardised-like data, far outside [0, 1]
    g = torch.Generator().manual_seed(0)
    noisy = corrupt(x, noise=0.1, clip=None, generator=g)
    assert float(noisy.min()) < -1 and float(noisy.max()) > 2
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.1)
    assert float(corrupt(x, noise=0.1, clip=(-1.0, 1.0)).abs().max()) == 1.0
    with pytest.raises(ValueError, match="low < high"):
        corrupt(x, noise=0.1, clip=(1.0, 0.0))


def test_pretrain_passes_clip_to_corrupt(monkeypatch):
    seen = []
    real = corrupt

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(float(out.min()))
        return out

    monkeypatch.setattr("transferkit.methods.autoencoder.corrupt", spy)
    x = torch.randn(64, 16) - 5  # every value far below 0
    pretrain(Autoencoder([16, 4], out_activation=None), x, epochs=1, noise=0.1, clip=None,
             progress=False)
    assert seen and max(seen) < -1  # not clipped to 0


def test_reconstruct_refuses_an_encoder_alone():
    model = Autoencoder([64, 16, 4])
    with pytest.raises(ValueError, match=r"codes\(model, x\)"):
        reconstruct(model.encoder, torch.rand(3, 64))
    assert reconstruct(model, torch.rand(3, 64)).shape == (3, 64)
