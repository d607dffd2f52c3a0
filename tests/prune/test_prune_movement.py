"""Movement pruning: scores are -sum(W * dL/dW') with the straight-through gradient."""

from __future__ import annotations

import torch
from prune_helpers import mlp
from torch import nn

import sparsec.prune as prune


def test_scores_accumulate_minus_weight_times_dense_gradient():
    model = mlp()
    mp = prune.MovementPruner(0.5)
    mp.prepare(model)
    lin = model[0]
    expected = torch.zeros_like(lin.weight)
    for seed in range(3):
        torch.manual_seed(seed)
        x = torch.randn(8, 16)
        model.zero_grad()
        model(x).pow(2).sum().backward()
        w = prune.original(lin).detach()
        # With an all-ones mask the dense gradient equals the parameter gradient.
        expected -= w * prune.original(lin).grad
        with torch.no_grad():
            prune.original(lin).sub_(0.01 * prune.original(lin).grad)
    assert torch.allclose(mp.importance["0"], expected, atol=1e-6)


def test_pruned_weights_keep_their_value_and_score_and_can_return():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    mp = prune.MovementPruner(0.5)
    mp.prepare(nn.Sequential(lin))
    mp.importance["0"].copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    mp.step()
    assert lin.weight.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    assert prune.original(lin).tolist() == [[1.0, 1.0, 1.0, 1.0]]  # not zeroed: movement may bring them back
    # Loss -x3: the gradient pushes w3 away from zero, so its score grows although it is masked.
    x = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    for _ in range(10):
        (-lin(x)).sum().backward()
    assert mp.importance["0"][0, 3] > 4.0
    mp.step()
    assert lin.weight[0, 3] == 1.0 and lin.weight[0, 2] == 0.0


def test_movement_keeps_weights_moving_away_from_zero_unlike_magnitude():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[5.0, 0.1]]))
    mp = prune.MovementPruner(0.5)
    mp.prepare(nn.Sequential(lin))
    x = torch.tensor([[1.0, 1.0]])
    for _ in range(3):  # loss = w0 - w1: w0 shrinks toward zero, w1 grows away from it
        lin.zero_grad()
        (lin(x) * torch.tensor([[1.0]]) - 2 * x[:, 1:] * lin.weight[:, 1:]).sum().backward()
        with torch.no_grad():
            prune.original(lin).sub_(0.1 * prune.original(lin).grad)
    mp.step()
    assert lin.weight[0, 0] == 0 and lin.weight[0, 1] != 0
    mp.finalize()
    assert type(lin.weight) is nn.Parameter and not hasattr(lin, "parametrizations")
