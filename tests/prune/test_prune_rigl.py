"""RigL and SET: masks change at update steps only, per-layer counts constant, zero-initialised growth."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import mlp, train_steps
from torch import nn

import sparsec.prune as prune


@pytest.mark.parametrize("cls", [prune.RigL, prune.SET])
def test_masks_change_only_at_update_steps_and_keep_layer_counts(cls):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = cls(0.8, end_step=12, update_interval=4, alpha=0.5, distribution="erk", seed=0)
    sp.prepare(model, optimizer=opt)
    counts = {n: int(m.sum()) for n, m in sp.masks().items()}
    previous = sp.masks()
    for step in range(1, 17):
        train_steps(model, opt, sp, steps=1, seed=step)
        current = sp.masks()
        changed = any(not torch.equal(current[n], previous[n]) for n in current)
        assert changed == (step in (4, 8)), step  # updates at 4 and 8; none at or after end_step=12
        assert {n: int(m.sum()) for n, m in current.items()} == counts
        for name, module in sp.targets.items():
            assert torch.all(prune.original(module)[~current[name]] == 0)
        previous = current
    assert [h[0] for h in sp.history] == [4, 8]
    assert sp.history[0][1] == pytest.approx(prune.cosine_update_fraction(4, alpha=0.5, end_step=12))


def test_rigl_grows_largest_gradients_with_zero_init_and_zero_momentum():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4, bias=False)
    model = nn.Sequential(lin)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = prune.RigL(0.5, end_step=100, update_interval=1, alpha=0.5, distribution="uniform")
    sp.prepare(model, optimizer=opt)
    before = sp.masks()["0"]
    x = torch.randn(16, 8)
    loss = model(x).pow(2).sum()
    opt.zero_grad()
    loss.backward()
    dense_grad = sp.dense_grads["0"].clone()
    opt.step()
    weights_after_opt = prune.original(lin).detach().clone()
    sp.step()
    after = sp.masks()["0"]
    k = int(prune.cosine_update_fraction(1, alpha=0.5, end_step=100) * 16)
    assert k > 0 and int(after.sum()) == int(before.sum()) == 16
    # Drop: the k smallest magnitudes among the active weights.
    order = torch.argsort(torch.where(before, weights_after_opt.abs(), torch.inf).flatten(), stable=True)
    survivors = before.clone().flatten()
    survivors[order[:k]] = False
    survivors = survivors.view_as(before)
    assert not (survivors & ~after).any()
    # Grow: the k largest dense gradients among everything else (a just-dropped weight may come back).
    grown_slots = after & ~survivors
    assert int(grown_slots.sum()) == k
    rest = ~survivors & ~grown_slots
    assert dense_grad[grown_slots].abs().min() >= dense_grad[rest].abs().max()
    grown = after & ~before
    assert grown.any()
    assert torch.all(prune.original(lin)[grown] == 0)
    assert torch.all(opt.state[prune.original(lin)]["momentum_buffer"][grown] == 0)


def test_set_growth_is_random_and_needs_no_gradient():
    masks = []
    for seed in (0, 1):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sp = prune.SET(0.8, end_step=10, update_interval=2, distribution="uniform", seed=seed)
        sp.prepare(model, optimizer=opt)
        assert all(prune.get_mask(m).grad_callback is None for m in sp.targets.values())
        train_steps(model, opt, sp, steps=2)
        masks.append(sp.masks()["2"])
    assert not torch.equal(masks[0], masks[1])


def test_update_without_a_backward_pass_is_a_clear_error():
    model = mlp()
    sp = prune.RigL(0.5, end_step=10, update_interval=1)
    sp.prepare(model)
    with pytest.raises(RuntimeError, match="found no gradient"):
        sp.step()
    with pytest.raises(ValueError, match="update_interval"):
        prune.RigL(0.5, end_step=10, update_interval=0)
    with pytest.raises(ValueError, match="alpha"):
        prune.RigL(0.5, end_step=10, alpha=1.5)
