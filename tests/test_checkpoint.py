import os

import pytest
import torch
from torch import nn

from transferkit.training.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


def net(out=10):
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, out))


class Exploit:
    """An object whose unpickling would run a command."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_round_trip_weights_freeze_state_optimizer_and_meta(tmp_path):
    model = net()
    model[0].requires_grad_(False)
    # An optimizer over all parameters: frozen ones simply get no gradient.
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", model, opt, meta={"epoch": 3, "note": "hi"})

    fresh = net()
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.5)
    assert fresh[0].weight.requires_grad
    ckpt = load_checkpoint(path, fresh, fresh_opt)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not fresh[0].weight.requires_grad and fresh[3].weight.requires_grad
    assert fresh_opt.param_groups[0]["lr"] == 0.01
    saved_moment = opt.state[model[3].weight]["exp_avg"]
    assert torch.equal(fresh_opt.state[fresh[3].weight]["exp_avg"], saved_moment)
    assert ckpt["meta"] == {"epoch": 3, "note": "hi"}


def test_no_silent_overwrite(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", net())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(path, net())
    assert path.read_bytes() == before
    save_checkpoint(path, net(), overwrite=True)
    assert path.read_bytes() != before


def test_failed_save_leaves_the_old_file_and_no_temp_files(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "a.pt", net())
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, net(), overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_gives_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "c.pt", net())
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a checkpoint at all" * 10,
                      "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path, net())


def test_a_checkpoint_cannot_run_code(tmp_path, capfd):
    path = tmp_path / "evil.pt"
    torch.save({"model": Exploit()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(path)
    assert "pwned" not in capfd.readouterr().out


def test_mismatched_head_lists_the_keys_and_leaves_the_model_alone(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", net(out=10))
    model = net(out=5)
    before = model[0].weight.detach().clone()
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path, model)
    message = str(info.value)
    assert "3.weight: file has shape (10, 16), model has (5, 16)" in message
    assert "strict=False" in message
    assert info.value.shapes["3.bias"] == ((10,), (5,))
    assert torch.equal(model[0].weight, before)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", nn.Sequential(nn.Linear(8, 16)))
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(path, nn.Sequential(nn.Identity(), nn.Linear(8, 16)))
    assert info.value.missing == ["1.weight", "1.bias"]
    assert info.value.unexpected == ["0.weight", "0.bias"]


def test_non_strict_loads_the_matching_part_and_reports_the_rest(tmp_path):
    source = net(out=10)
    path = save_checkpoint(tmp_path / "m.pt", source)
    target = net(out=5)
    with pytest.warns(UserWarning, match=r"(?s)strict=False.*3.weight: file has shape \(10, 16\)"):
        ckpt = load_checkpoint(path, target, strict=False)
    assert torch.equal(target[0].weight, source[0].weight)
    assert set(ckpt["skipped"]["shapes"]) == {"3.weight", "3.bias"}


def test_plain_state_dict_files_are_accepted(tmp_path):
    source = net()
    torch.save(source.state_dict(), tmp_path / "sd.pt")
    target = net()
    load_checkpoint(tmp_path / "sd.pt", target)
    assert torch.equal(target[3].weight, source[3].weight)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "nope.pt", net())


def test_optimizer_state_that_does_not_fit(tmp_path):
    model = net()
    path = save_checkpoint(tmp_path / "o.pt", model, torch.optim.SGD(model.parameters(), lr=1))
    wrong = torch.optim.SGD(model[0].parameters(), lr=1)
    with pytest.raises(CheckpointError, match="does not fit this optimizer"):
        load_checkpoint(path, net(), wrong)


def test_arguments_in_the_wrong_order_get_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match=r"save_checkpoint\(path, model\)"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()
