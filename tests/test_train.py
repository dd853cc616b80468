import functools
import math

import pytest
import torch
from torch import nn

from transferkit.course import plots
from transferkit.foundations.data import load_digits, train_val_test_split
from transferkit.foundations.device import model_device
from transferkit.foundations.train_eval import eval_mode
from transferkit.training.callbacks import Callback, EarlyStopping, FitState, History
from transferkit.training.loop import evaluate, fit, predict
from transferkit.training.optimizers import OPTIMIZERS, fused_optimizer


def mlp(hidden=32):
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def splits():
    x, y = load_digits()
    return train_val_test_split(x, y, seed=0)


def test_fit_learns_the_digits(splits):
    model = mlp()
    before = evaluate(model, splits.test)["accuracy"]
    history = fit(model, splits.train, splits.val, epochs=15, lr=3e-3, progress=False, seed=0)
    after = evaluate(model, splits.test)
    assert before < 0.3 and after["accuracy"] > 0.9
    assert len(history) == 15 and history.columns[:5] == [
        "epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert history["loss"][-1] < history["loss"][0]


def test_same_seed_same_run(splits):
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        model = mlp()
        fit(model, splits.train, epochs=2, progress=False, seed=5)
        results.append(model[0].weight.detach().clone())
    assert torch.equal(*results)


def test_frozen_parameters_are_bit_identical_after_fit(splits):
    model = mlp()
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    head = model[2].weight.detach().clone()
    sgd = functools.partial(torch.optim.SGD, momentum=0.9)
    fit(model, splits.train, epochs=2, lr=0.1, optimizer=sgd, weight_decay=0.01, progress=False)
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[2].weight, head)


def test_everything_frozen_is_a_clear_error(splits):
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        fit(model, splits.train, epochs=1, progress=False)


def test_restore_best_loads_the_best_epoch(splits):
    snapshots = {}

    class Snapshot(Callback):
        def on_epoch_end(self, state: FitState) -> None:
            snapshots[state.epoch] = state.model[2].weight.detach().clone()

    model = mlp()
    history = fit(model, splits.train, splits.val, epochs=8, lr=0.05, optimizer="sgd",
                  callbacks=[Snapshot()], progress=False, seed=0)
    best = min(range(8), key=lambda i: history["val_loss"][i]) + 1
    assert history.best_epoch == best
    assert torch.equal(model[2].weight, snapshots[best])


def test_keyboard_interrupt_returns_history_with_best_weights(splits):
    snapshots = {}

    class CtrlC(Callback):
        def on_epoch_end(self, state: FitState) -> None:
            snapshots[state.epoch] = state.model[2].weight.detach().clone()
            if state.epoch == 3:
                raise KeyboardInterrupt

    model = mlp()
    history = fit(model, splits.train, splits.val, epochs=20, callbacks=[CtrlC()],
                  progress=False)
    assert history.interrupted and len(history) == 3
    assert torch.equal(model[2].weight, snapshots[history.best_epoch])


def test_interrupt_in_the_middle_of_an_epoch(splits):
    calls = {"n": 0}

    def loss(out, y):
        calls["n"] += 1
        if calls["n"] == 40:  # the preflight call, then ~17 batches per epoch
            raise KeyboardInterrupt
        return nn.functional.cross_entropy(out, y)

    history = fit(mlp(), splits.train, epochs=10, loss=loss, progress=False)
    assert history.interrupted and len(history) == 2


def test_early_stopping_stops_when_validation_stops_improving(splits):
    x, y = splits.train
    shuffled = y[torch.randperm(len(y))]  # random labels: memorising them hurts val loss
    history = fit(mlp(128), (x, shuffled), splits.val, epochs=200, lr=1e-2,
                  early_stopping=3, progress=False, seed=0)
    assert history.stopped_early and len(history) < 200
    assert len(history) - history.best_epoch == 3


def test_early_stopping_callback_counts_patience():
    callback = EarlyStopping(patience=2)
    state = FitState(model=None, optimizer=None, history=History())
    callback.on_train_begin(state)
    for epoch, value in enumerate([1.0, 0.8, 0.9, 0.7, 0.75, 0.71], start=1):
        state.history.rows.append({"epoch": epoch, "val_loss": value})
        callback.on_epoch_end(state)
        assert state.stop == (epoch == 6)


def test_early_stopping_needs_validation_data(splits):
    with pytest.raises(ValueError, match="val="):
        fit(mlp(), splits.train, epochs=3, early_stopping=2, progress=False)


def test_divergence_is_reported_not_a_crash(splits):
    with pytest.warns(RuntimeWarning, match="learning rate"):
        history = fit(nn.Linear(64, 10), splits.train, epochs=5, lr=1e30, optimizer="sgd",
                      progress=False)
    assert history.diverged and len(history) == 1
    assert not math.isfinite(history["loss"][-1]) or history["loss"][-1] > 1e3


def test_a_nan_in_the_data_is_an_error_that_names_it_not_a_divergence(splits):
    x, y = splits.train
    x = x.clone()
    x[12, 5] = float("nan")
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"train x \(the inputs\) holds 1 NaN \(in 1 of its "
                       r"[\d,]+ rows, the first at row 12\)"):
        fit(model, (x, y), splits.val, epochs=2, progress=False)
    x_val = splits.val.x.clone()
    x_val[0] = float("inf")
    with pytest.raises(ValueError, match="val x .* holds 64 infinite values"):
        fit(model, splits.train, (x_val, splits.val.y), epochs=2, progress=False)
    targets = x.nan_to_num()
    targets[3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"train y \(the targets\) holds 1 NaN"):
        fit(nn.Linear(64, 64), (x.nan_to_num(), targets), loss="mse", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_model_with_nan_weights_is_refused_before_training(splits):
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="the model's parameter 2.weight holds 1 NaN"):
        fit(model, splits.train, epochs=1, progress=False)


def test_divergence_from_inputs_too_large_does_not_blame_the_learning_rate(splits):
    x, y = splits.train
    huge = x * 1e38 + 1e38  # finite, but far beyond what float32 can multiply
    with pytest.warns(RuntimeWarning, match="not finite before training") as caught:
        history = fit(nn.Linear(64, 10), (huge, y), epochs=2, lr=1e-3, progress=False)
    assert history.diverged
    assert "rate is probably too large" not in str(caught[0].message)


def test_autoencoder_style_targets_with_mse():
    x, _ = load_digits()
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 64), nn.Sigmoid())
    history = fit(model, (x, x), loss="mse", epochs=5, progress=False)
    assert "accuracy" not in history.columns
    assert history["loss"][-1] < history["loss"][0]


def test_transform_inputs_changes_training_inputs_only():
    x, _ = load_digits()
    x = x[:300]
    seen_inputs, seen_in_eval, seen_by_loss = [], [], []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(64, 64)

        def forward(self, xb):
            (seen_inputs if self.training else seen_in_eval).append(xb.detach().clone())
            return self.layer(xb)

    def loss(out, target):
        seen_by_loss.append(target.detach().clone())
        return nn.functional.mse_loss(out, target)

    history = fit(Recorder(), (x, x), (x[:50], x[:50]), loss=loss, epochs=2, batch_size=100,
                  progress=False, transform_inputs=lambda xb: torch.full_like(xb, 0.5))
    assert len(seen_inputs) == 6  # 3 batches × 2 epochs, every one transformed
    assert all(bool((b == 0.5).all()) for b in seen_inputs)
    # the targets (training and validation) stay clean
    assert all(not bool((t == 0.5).all()) for t in seen_by_loss)
    assert seen_in_eval and all(not bool((b == 0.5).all()) for b in seen_in_eval)
    assert len(history) == 2 and "val_loss" in history.columns


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (nn.Linear(30, 10), "ok", "could not process inputs of shape \\(64,\\)"),
        (nn.Linear(64, 4), "ok", "outputs 4 class scores, but the labels run from 0 to 9"),
        (nn.Linear(64, 10), "float", "y.long"),
        (nn.Linear(64, 10), "short", "1797 examples but y has 10"),
    ],
)
def test_bad_input_gives_a_clear_error(model, data, message):
    x, y = load_digits()
    train = {"ok": (x, y), "float": (x, y.float()), "short": (x, y[:10])}[data]
    with pytest.raises(ValueError, match=message):
        fit(model, train, epochs=1, progress=False)


def test_bad_arguments(splits):
    with pytest.raises(ValueError, match="epochs"):
        fit(mlp(), splits.train, epochs=0, progress=False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        fit(mlp(), splits.train, optimizer="adagrad-ish", progress=False)
    with pytest.raises(TypeError, match="pair of tensors"):
        fit(mlp(), [1, 2, 3], progress=False)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="do not also pass lr"):
        fit(model, splits.train, optimizer=opt, lr=0.1, progress=False)


def test_preflight_and_evaluate_leave_batchnorm_statistics_alone(splits):
    model = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    stats = model[1].running_mean.clone()
    evaluate(model, splits.val)
    assert torch.equal(model[1].running_mean, stats) and model.training


def test_a_last_batch_of_one_does_not_break_batchnorm():
    x, y = load_digits()
    model = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    history = fit(model, (x[:65], y[:65]), epochs=2, batch_size=64, progress=False)
    assert len(history) == 2


def test_fit_keeps_the_models_mode(splits):
    model = mlp().eval()
    fit(model, splits.train, epochs=1, progress=False)
    assert not model.training


def test_history_rows_and_figure(splits):
    history = fit(mlp(), splits.train, splits.val, epochs=3, progress=False)
    rows = history.to_rows()
    rows[0]["loss"] = -1  # a copy: the history is untouched
    assert history["loss"][0] != -1
    fig = plots.history_figure(history, title="t")
    names = {trace.name for trace in fig.data}
    assert names == {"train", "validation"} and len(fig.data) == 4
    assert list(fig.data[0].y) == history["loss"]
    with pytest.raises(KeyError, match="columns are"):
        history["nope"]
    assert "3 epochs" in repr(history)


def test_progress_bar_runs(splits, capsys):
    fit(mlp(), splits.train, epochs=2, progress=True)
    assert "training" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_on_cuda(splits):
    model = mlp()
    history = fit(model, splits.train, splits.val, epochs=3, device="cuda", progress=False)
    assert history["val_accuracy"][-1] > 0.5
    assert next(model.parameters()).dtype == torch.float32


def test_amp_off_the_gpu_is_refused(splits):
    with pytest.raises(ValueError, match="amp=True needs a CUDA"):
        fit(mlp(), splits.train, amp=True, device="cpu", progress=False)


def test_predict_gives_the_argmax_class_in_eval_mode_without_grad(splits):
    model = nn.Sequential(nn.Linear(64, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 10))
    fit(model, splits.train, epochs=3, progress=False, seed=0)
    x = splits.test.x
    predicted = predict(model, x, batch_size=50)  # several batches, the last one short
    assert predicted.shape == (len(x),) and predicted.dtype == torch.long
    model.eval()
    with torch.no_grad():
        expected = model(x).argmax(dim=1)
    assert torch.equal(predicted, expected)  # dropout was off: the same as one eval pass
    model.train()
    predict(model, x)
    assert model.training  # the mode is restored
    accuracy = (predicted == splits.test.y).float().mean().item()
    assert accuracy == pytest.approx(evaluate(model, splits.test)["accuracy"])
    assert torch.equal(predict(model, splits.test), predicted)  # a Data works too


def test_predict_bad_input():
    with pytest.raises(TypeError, match="tensor of inputs"):
        predict(nn.Linear(4, 3), [[0.0] * 4])
    autoencoder = nn.Sequential(nn.Linear(4, 2), nn.Unflatten(1, (1, 2)))
    with pytest.raises(ValueError, match="Is it a classifier"):
        predict(autoencoder, torch.zeros(3, 4))


def test_predict_evaluate_and_fit_give_every_module_its_own_mode_back():
    """A BatchNorm layer put in eval mode (statistics frozen) inside a model in train mode
    stays in eval mode: ``model.train(was_training)`` would have switched it back."""
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    model[1].eval()
    for use in (lambda: predict(model, x), lambda: evaluate(model, (x, y)),
                lambda: fit(model, (x, y), epochs=1, progress=False)):
        use()
        assert model.training and model[0].training and not model[1].training


def test_eval_mode_restores_modes_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model[1].eval()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training and not model[0].training
        raise RuntimeError("boom")
    assert model.training and model[0].training and not model[1].training


def test_the_device_of_a_model_made_of_buffers_is_where_its_buffers_are():
    model = nn.Module()
    model.register_buffer("mean", torch.zeros(3, device="meta"))
    assert model_device(model).type == "meta"
    assert model_device(nn.ReLU()).type == "cpu"


def test_live_plot_is_a_callback_not_a_flag(splits):
    with pytest.raises(TypeError, match="live_plot"):
        fit(mlp(), splits.train, epochs=1, progress=False, live_plot=True)


class _Events(Callback):
    """Writes down every event fit calls (every ``on_…`` hook it looks up), with the
    step and epoch it sees then."""

    def __init__(self):
        self.seen = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda state: self.seen.append((name, state.step, state.epoch))
        return super().__getattribute__(name)


def test_fit_calls_the_events_in_order_around_every_batch_and_epoch():
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    events = _Events()
    fit(nn.Linear(4, 3), (x, y), epochs=2, batch_size=5, callbacks=[events], progress=False)
    batch = ["on_batch_begin", "on_backward_end", "on_batch_end"]
    expected = [("on_train_begin", 0, 0)]
    for epoch in (1, 2):
        expected.append(("on_epoch_begin", 2 * (epoch - 1), epoch - 1))
        for step in (2 * epoch - 1, 2 * epoch):
            expected += [(name, step - (name != "on_batch_end"), epoch - 1) for name in batch]
        expected.append(("on_epoch_end", 2 * epoch, epoch))
    expected.append(("on_train_end", 4, 2))
    assert events.seen == expected


def test_batch_events_see_the_batch_its_loss_and_gradients(splits):
    """on_batch_begin sees (and may replace) the batch; on_backward_end the gradients
    before the step, so a callback can clip them; on_batch_end the loss of the step."""
    x, y = splits.train.x[:40], splits.train.y[:40]

    class Clip(Callback):
        def __init__(self):
            self.sizes, self.norms, self.losses = [], [], []

        def on_batch_begin(self, state):
            state.xb = state.xb[:5]  # train on the first 5 examples of every batch
            state.yb = state.yb[:5]

        def on_backward_end(self, state):
            self.norms.append(float(nn.utils.clip_grad_norm_(state.model.parameters(), 1e-3)))

        def on_batch_end(self, state):
            self.sizes.append(len(state.out))
            self.losses.append(float(state.loss.detach()))
            grads = [p.grad.norm() for p in state.model.parameters()]
            assert float(torch.stack(grads).norm()) <= 1e-3 * 1.01

    clip = Clip()
    history = fit(mlp(), (x, y), epochs=2, batch_size=20, lr=1.0, optimizer="sgd",
                  callbacks=[clip], progress=False, seed=0)
    assert clip.sizes == [5] * 4 and len(clip.losses) == 4 and len(history) == 2
    assert max(clip.norms) > 1e-3  # there was something to clip


class _Fused(Callback):
    def on_train_begin(self, state):
        self.fused = state.optimizer.defaults.get("fused")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_named_optimizers_run_fused_and_train_as_torchs_plain_ones(splits, name):
    weights, fused = [], []
    for optimizer in (name, functools.partial(OPTIMIZERS[name][0], foreach=False)):
        torch.manual_seed(1)
        model, seen = mlp(), _Fused()
        fit(model, splits.train, epochs=2, lr=1e-2, optimizer=optimizer, weight_decay=1e-3,
            progress=False, seed=5, callbacks=[seen])
        weights.append(model[0].weight.detach().clone())
        fused.append(seen.fused)
    assert fused == [True, None]  # the name: fused; a class you pass: as you built it
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)
    assert not torch.equal(weights[0], mlp()[0].weight)  # it trained


def test_fused_optimizer_only_fuses_what_torch_can():
    on_cpu = nn.Parameter(torch.ones(3))
    groups = [{"params": [on_cpu], "lr": 0.1}, {"params": [nn.Parameter(torch.ones(2))]}]
    assert fused_optimizer(torch.optim.AdamW, groups, lr=1e-3).defaults["fused"] is True
    assert len(fused_optimizer(torch.optim.AdamW, groups, lr=1e-3).param_groups) == 2
    lazy = [{"params": iter([on_cpu])}]  # a group's parameters may come as an iterator
    assert fused_optimizer(torch.optim.Adam, lazy).param_groups[0]["params"] == [on_cpu]
    meta = nn.Parameter(torch.ones(3, device="meta"))
    assert not fused_optimizer(torch.optim.Adam, [meta]).defaults.get("fused")
    assert not fused_optimizer(torch.optim.RMSprop, [on_cpu]).defaults.get("fused")
    chosen = fused_optimizer(torch.optim.Adam, [on_cpu], foreach=True).defaults
    assert chosen["foreach"] is True and not chosen.get("fused")  # your choice stands


def test_step_curve_measures_every_few_steps_and_before_and_after(splits):
    """A learning curve finer than one point per epoch: fit calls on_batch_end after every
    optimizer step, and StepCurve measures the model then (and before the first step)."""
    from transferkit.training.callbacks import StepCurve

    model = nn.Sequential(nn.Linear(64, 10))
    seen_modes = []

    def measure(m):
        seen_modes.append(m.training)
        return {"val_accuracy": evaluate(m, splits.val)["accuracy"]}

    curve = StepCurve(measure, every=5)
    n = len(splits.train.x[:200])
    fit(model, (splits.train.x[:200], splits.train.y[:200]), epochs=2, batch_size=32,
        callbacks=[curve], progress=False)
    steps = 2 * -(-n // 32)
    assert [r["step"] for r in curve.rows] == sorted({0, *range(5, steps + 1, 5), steps})
    assert curve.rows[-1]["val_accuracy"] > curve.rows[0]["val_accuracy"]
    with pytest.raises(ValueError, match="every"):
        StepCurve(measure, every=0)
