"""Static sparse training: fixed mask, zero gradients and zero optimizer state at pruned positions."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import mlp, train_steps

import sparsec.prune as prune


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
])
def test_mask_is_stable_and_pruned_weights_stay_exactly_zero(make_opt):
    model = mlp()
    opt = make_opt(model.parameters())
    train_steps(model, opt, steps=2)  # the optimizer already has dense state before sparsifying
    ss = prune.StaticSparsifier(0.8, distribution="uniform", seed=3)
    ss.prepare(model, optimizer=opt)
    masks = ss.masks()
    for name, module in ss.targets.items():
        assert int(masks[name].sum()) == round(0.2 * module.weight.numel())
    for step in range(6):
        train_steps(model, opt, ss, steps=1, seed=step)
        for name, module in ss.targets.items():
            keep = masks[name]
            assert torch.equal(ss.masks()[name], keep)
            w = prune.original(module)
            assert torch.all(w.grad[~keep] == 0)  # gradients of pruned weights are zero
            assert torch.all(w[~keep] == 0)
            for value in opt.state[w].values():
                if isinstance(value, torch.Tensor) and value.shape == w.shape:
                    assert torch.all(value[~keep] == 0)


def test_erk_masks_and_explicit_masks():
    model = mlp()
    ss = prune.StaticSparsifier(0.9, distribution="erk", seed=0)
    ss.prepare(model)
    kept = sum(int(m.sum()) for m in ss.masks().values())
    total = sum(m.numel() for m in ss.masks().values())
    assert abs(kept - 0.1 * total) <= len(ss.masks())  # per-layer rounding only
    given = {n: m.clone() for n, m in ss.masks().items()}
    other = mlp(1)
    ss2 = prune.StaticSparsifier(0.9, masks=given)
    ss2.prepare(other)
    assert all(torch.equal(ss2.masks()[n], given[n]) for n in given)
    with pytest.raises(RuntimeError, match="fixed"):
        ss2.update_masks(0.5)


def test_same_seed_same_mask_different_seed_different_mask():
    a, b, c = (prune.StaticSparsifier(0.5, seed=s) for s in (1, 1, 2))
    for sp in (a, b, c):
        sp.prepare(mlp())
    assert torch.equal(a.masks()["0"], b.masks()["0"])
    assert not torch.equal(a.masks()["0"], c.masks()["0"])
