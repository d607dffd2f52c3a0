"""Channel pruning: dependency groups, coupled residual branches, and a shrunk model equal to the masked one."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import ConvRes, mlp
from torch import nn

import sparsec.prune as prune


def _warm_bn(model: nn.Module, shape: tuple[int, ...]) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(*shape))
    model.eval()


def test_groups_couple_residual_branches_and_follow_flatten():
    model = ConvRes()
    groups = prune.channel_groups(model, torch.randn(2, 3, 4, 4))
    prunable = [g for g in groups if g.prunable]
    by_first = {g.producers[0]: g for g in prunable}
    assert set(by_first) == {"c1", "c3"}
    res = by_first["c1"]
    assert sorted(res.producers) == ["c1", "c2"] and sorted(res.norms) == ["b1", "b2"]
    assert sorted(res.consumers) == [("c2", 1), ("c3", 1)]
    assert by_first["c3"].consumers == [("fc", 16)]  # each c3 channel spans 4*4 flattened features
    head = next(g for g in groups if g.producers == ["fc"])
    assert not head.prunable and "model output" in head.fixed


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_compressed_conv_model_equals_masked_model(norm):
    torch.manual_seed(0)
    model = ConvRes()
    _warm_bn(model, (16, 3, 4, 4))
    x = torch.randn(5, 3, 4, 4)
    cp = prune.ChannelPruner(0.5, norm=norm)
    cp.prepare(model, example_inputs=x)
    cp.step()
    masked_out = model(x)
    n_before = sum(p.numel() for p in model.parameters())
    cp.compress()
    assert torch.allclose(model(x), masked_out, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < n_before
    assert (model.c1.out_channels, model.c2.out_channels, model.c2.in_channels) == (4, 4, 4)
    assert model.b1.num_features == model.b2.num_features == 4
    assert (model.c3.out_channels, model.c3.in_channels, model.fc.in_features) == (3, 4, 48)
    assert model.fc.out_features == 5
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    assert model.c1.weight.shape == (4, 3, 3, 3)


def test_mlp_channels_by_norm_and_exact_count():
    model = mlp(0, (16, 32, 24, 8))
    x = torch.randn(7, 16)
    with torch.no_grad():
        model[0].weight[:5] *= 0.01  # the five weakest output neurons of layer 0
    cp = prune.ChannelPruner(0.25)
    cp.prepare(model, example_inputs=x)
    cp.step()
    kept = cp.kept_channels()
    assert [len(k) for k in kept] == [32 - 8, 24 - 6]
    assert not set(range(5)) & set(kept[0].tolist())
    masked = model(x)
    assert torch.all(model[0](x)[:, 0] == 0)  # pruned neuron outputs exactly zero (weight row and bias)
    cp.compress()
    assert [m.weight.shape for m in model if isinstance(m, nn.Linear)] == [(24, 16), (18, 24), (8, 18)]
    assert torch.allclose(model(x), masked, atol=1e-6)


def test_unsupported_ops_fix_their_groups():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(12, 3)
            self.d, self.e = nn.Linear(3, 5), nn.Linear(5, 2)

        def forward(self, x):
            y = self.c(torch.cat([self.a(x), self.b(x)], dim=1))
            return self.e(torch.sigmoid(self.d(y)))  # sigmoid(0) != 0: d's channels cannot be zeroed away

    model = Cat()
    groups = {tuple(g.producers): g for g in prune.channel_groups(model, torch.randn(2, 4))}
    assert not groups[("a",)].prunable and any("cat" in r for r in groups[("a",)].fixed)
    assert not groups[("d",)].prunable and any("sigmoid" in r for r in groups[("d",)].fixed)
    assert groups[("c",)].prunable
    with pytest.raises(ValueError, match="channels of 'a' cannot be pruned"):
        prune.ChannelPruner(0.5).prepare(model, ["a"], example_inputs=torch.randn(2, 4))
    cp = prune.ChannelPruner(0.5)
    cp.prepare(model, example_inputs=torch.randn(2, 4))
    assert list(cp.targets) == ["c"]


def test_errors():
    model = mlp(0, (4, 3, 2))
    cp = prune.ChannelPruner(0.9)
    cp.prepare(model, example_inputs=torch.randn(1, 4))
    with pytest.raises(ValueError, match="would remove all 3 channels"):
        cp.step()
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune.ChannelPruner(0.5).prepare(nn.Sequential(nn.Linear(4, 2)), example_inputs=torch.randn(1, 4))
    with pytest.raises(ValueError, match="norm"):
        prune.ChannelPruner(0.5, norm="linf")
    bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, affine=False), nn.Linear(6, 2))
    with pytest.raises(ValueError, match="no prunable channel group"):
        prune.ChannelPruner(0.5).prepare(bn, example_inputs=torch.randn(3, 4))
