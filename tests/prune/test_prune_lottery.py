"""Lottery tickets: IMP rounds, rewinding to iteration k, random re-init control."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import mlp, train_steps

import sparsec.prune as prune


def _setup():
    model = mlp()
    ticket = prune.LotteryTicket(prune_fraction=0.2, scope="global")
    ticket.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, opt, steps=2)
    ticket.save_rewind_point(step=2)
    snapshot = {n: prune.original(m).detach().clone() for n, m in ticket.targets.items()}
    bias = model[0].bias.detach().clone()
    train_steps(model, opt, steps=3, seed=1)
    return model, ticket, snapshot, bias


def test_rounds_prune_a_fraction_of_the_remaining_weights_and_rewind():
    model, ticket, snapshot, bias = _setup()
    total = sum(m.weight.numel() for m in ticket.targets.values())
    trained = {n: m.weight.detach().abs().clone() for n, m in ticket.targets.items()}
    s1 = ticket.step()
    assert s1 == pytest.approx(0.2, abs=1 / total)
    kept_scores = torch.cat([trained[n][k] for n, k in ticket.masks().items()])
    dropped_scores = torch.cat([trained[n][~k] for n, k in ticket.masks().items()])
    assert dropped_scores.max() <= kept_scores.min()  # pruned by magnitude of the *trained* weights
    for name, module in ticket.targets.items():
        keep = ticket.masks()[name]
        assert torch.equal(prune.original(module)[keep], snapshot[name][keep])  # rewound to iteration k
        assert torch.all(prune.original(module)[~keep] == 0)
    assert torch.equal(model[0].bias, bias)  # the whole network rewinds, biases too
    s2 = ticket.step()
    assert s2 == pytest.approx(1 - 0.8 * 0.8, abs=1 / total)
    s3 = ticket.step(0.9)
    zeros = sum(int((m.weight == 0).sum()) for m in ticket.targets.values())
    assert s3 == pytest.approx(0.9, abs=1 / total) and zeros == round(0.9 * total)
    with pytest.raises(ValueError, match="only removes weights"):
        ticket.step(0.5)


def test_masks_are_nested_across_rounds():
    _, ticket, _, _ = _setup()
    previous = ticket.masks()
    for _ in range(3):
        ticket.step()
        current = ticket.masks()
        assert all(not (current[n] & ~previous[n]).any() for n in current)
        previous = current


def test_random_reinit_keeps_mask_and_draws_fresh_reproducible_weights():
    model, ticket, snapshot, _ = _setup()
    ticket.step(0.5)
    masks = ticket.masks()
    ticket.random_reinit(seed=7)
    first = {n: prune.original(m).detach().clone() for n, m in ticket.targets.items()}
    for name, module in ticket.targets.items():
        assert torch.equal(ticket.masks()[name], masks[name])
        assert torch.all(module.weight[~masks[name]] == 0)
        assert not torch.equal(first[name][masks[name]], snapshot[name][masks[name]])
        fan_in = module.weight.shape[1]
        assert first[name].abs().max() <= fan_in ** -0.5  # PyTorch's default init range
    ticket.random_reinit(seed=7)
    assert all(torch.equal(prune.original(m), first[n]) for n, m in ticket.targets.items())


def test_default_rewind_point_is_initialisation():
    model = mlp()
    init = model[0].weight.detach().clone()
    ticket = prune.LotteryTicket()
    ticket.prepare(model)
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=2)
    ticket.step()
    keep = ticket.masks()["0"]
    assert ticket.rewind_step == 0
    assert torch.equal(model[0].weight[keep], init[keep])


def test_bad_arguments():
    with pytest.raises(ValueError, match="prune_fraction"):
        prune.LotteryTicket(prune_fraction=1.0)
    with pytest.raises(ValueError, match="scope"):
        prune.LotteryTicket(scope="row")
