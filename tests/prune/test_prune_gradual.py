"""Gradual pruning on the cubic schedule, for unstructured, N:M, block and channel pruners."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import mlp, train_steps
from torch import nn

import sparsec.prune as prune


def _zeros(sp) -> int:
    return sum(int((m.weight == 0).sum()) for m in sp.pruner.targets.values())


def test_gradual_magnitude_follows_the_cubic_ramp_during_training():
    model = mlp()
    gp = prune.GradualPruner(prune.MagnitudePruner(0.8, scope="global"), start_step=2, end_step=12, frequency=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gp.prepare(model, optimizer=opt)
    total = sum(m.weight.numel() for m in gp.pruner.targets.values())
    seen = []
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 16):
        x, y = torch.randn(16, 16, generator=gen), torch.randint(0, 8, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        gp.step()
        seen.append(_zeros(gp))
        if step in (2, 5, 8, 11, 12):
            assert gp.current_sparsity == pytest.approx(gp.schedule(step))
            assert seen[-1] == round(gp.schedule(step) * total)
    assert seen == sorted(seen)  # sparsity only grows
    assert seen[-1] == round(0.8 * total)
    assert gp.current_sparsity == 0.8


@pytest.mark.parametrize("pruner,check", [
    (prune.NMPruner(2, 4), lambda w: prune.is_nm_sparse(w, 2, 4)),
    (prune.BlockPruner(0.5, (2, 4)), lambda w: True),
])
def test_gradual_structured_pruners_reach_their_pattern(pruner, check):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gp = prune.GradualPruner(pruner, start_step=0, end_step=6, frequency=2)
    gp.prepare(model, optimizer=opt)
    train_steps(model, opt, gp, steps=3)
    mid = _zeros(gp)
    train_steps(model, opt, gp, steps=5)
    total = sum(m.weight.numel() for m in gp.pruner.targets.values())
    assert 0 < mid < _zeros(gp) == round(0.5 * total)
    assert all(check(m.weight) for m in gp.pruner.targets.values())


def test_gradual_channel_pruning_then_compress():
    model = mlp()
    x = torch.randn(4, 16)
    gp = prune.GradualPruner(prune.ChannelPruner(0.5), start_step=0, end_step=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    gp.prepare(model, example_inputs=x, optimizer=opt)
    train_steps(model, opt, gp, steps=4)
    out = model(x)
    gp.pruner.compress()
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [16, 12, 8]
    assert torch.allclose(model(x), out, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(TypeError, match="wraps a sparsec pruner"):
        prune.GradualPruner(object(), start_step=0, end_step=5)
    with pytest.raises(ValueError, match="end_step"):
        prune.GradualPruner(prune.MagnitudePruner(0.5), start_step=5, end_step=5)
    with pytest.raises(ValueError, match="frequency"):
        prune.GradualPruner(prune.MagnitudePruner(0.5), start_step=0, end_step=5, frequency=0)
