"""transferkit.surgery.heads.set_submodule: the one way the library swaps a layer by its dotted
name (replace_head and without_head, add_lora, a backbone's input channels use it)."""

import pytest
import torch
from torch import nn

from transferkit.surgery.heads import set_submodule


def test_set_submodule_swaps_a_layer_at_any_depth_in_place():
    net = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))
    names = [name for name, _ in net.named_modules()]
    new = nn.Linear(8, 3)
    set_submodule(net, "1.1", new)  # inside a Sequential inside a Sequential
    assert net[1][1] is new and net(torch.zeros(1, 4)).shape == (1, 3)
    set_submodule(net, "0", nn.Identity())  # a top-level name: no parent to look up
    assert isinstance(net[0], nn.Identity)
    assert [name for name, _ in net.named_modules()] == names  # same names, same order


def test_set_submodule_reaches_named_attributes():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.Module()
            self.attention.query = nn.Linear(2, 2)

    model = nn.Module()
    model.layer = nn.ModuleList([Block(), Block()])
    query = nn.Linear(2, 2, bias=False)
    set_submodule(model, "layer.1.attention.query", query)
    assert model.get_submodule("layer.1.attention.query") is query
    assert model.layer[0].attention.query is not query


def test_set_submodule_names_a_missing_parent():
    with pytest.raises(AttributeError, match="nothing"):
        set_submodule(nn.Sequential(nn.Linear(2, 2)), "nothing.here", nn.Identity())
