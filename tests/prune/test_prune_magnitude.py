"""One-shot magnitude pruning: exact counts per layer and globally, and it removes the smallest weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prune_helpers import mlp
from torch import nn

import sparsec.prune as prune

sizes = st.lists(st.integers(1, 40), min_size=2, max_size=4)


@given(sizes, st.floats(0.0, 0.99), st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_layer_scope_exact_per_layer(dims, sparsity, seed):
    model = mlp(seed, tuple(dims))
    sp = prune.MagnitudePruner(sparsity, scope="layer")
    sp.prepare(model)
    before = {n: m.weight.detach().abs().clone() for n, m in sp.targets.items()}
    sp.step()
    for name, module in sp.targets.items():
        w = module.weight.detach()
        pruned = w == 0
        assert int(pruned.sum()) == int(round(sparsity * w.numel()))
        if pruned.any() and (~pruned).any():
            assert before[name][pruned].max() <= before[name][~pruned].min()


@given(sizes, st.floats(0.0, 0.99), st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_global_scope_exact_in_total_with_one_threshold(dims, sparsity, seed):
    model = mlp(seed, tuple(dims))
    sp = prune.MagnitudePruner(sparsity, scope="global")
    sp.prepare(model)
    scores = torch.cat([m.weight.detach().abs().flatten() for m in sp.targets.values()])
    sp.step()
    weights = torch.cat([m.weight.detach().flatten() for m in sp.targets.values()])
    pruned = weights == 0
    assert int(pruned.sum()) == int(round(sparsity * weights.numel()))
    if pruned.any() and (~pruned).any():
        assert scores[pruned].max() <= scores[~pruned].min()


def test_conv_and_functional_form():
    conv = nn.Conv2d(4, 6, 3)
    sp = prune.MagnitudePruner(0.75)
    sp.prepare(nn.Sequential(conv))
    sp.step()
    assert int((conv.weight == 0).sum()) == round(0.75 * conv.weight.numel())
    masks = prune.magnitude_masks({"a": torch.tensor([3.0, -1.0, 2.0, 0.5])}, 0.5)
    assert masks["a"].tolist() == [True, False, True, False]


def test_repeated_steps_are_monotone_and_pruned_weights_are_zeroed():
    model = mlp()
    sp = prune.MagnitudePruner(0.5)
    sp.prepare(model)
    sp.update_masks(0.3)
    first = sp.masks()
    sp.update_masks(0.5)
    for name, keep in sp.masks().items():
        assert not (keep & ~first[name]).any()  # nothing pruned comes back
        assert torch.all(prune.original(sp.targets[name])[~keep] == 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scope"):
        prune.MagnitudePruner(0.5, scope="network")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune.MagnitudePruner(1.0)
