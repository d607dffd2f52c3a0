"""Mask parametrization, optimizer-state hygiene and finalize."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import mlp, train_steps
from torch import nn
from torch.nn.utils import parametrize

import sparsec.prune as prune


def test_masked_weight_is_what_forward_sees_and_gradients_are_masked():
    lin = nn.Linear(6, 4)
    keep = torch.rand(4, 6) > 0.5
    prune.attach_mask(lin, "weight", keep)
    assert torch.equal(lin.weight, prune.original(lin) * keep)
    x = torch.randn(3, 6)
    assert torch.allclose(lin(x), x @ (prune.original(lin) * keep).T + lin.bias)
    lin(x).sum().backward()
    grad = prune.original(lin).grad
    assert torch.all(grad[~keep] == 0)
    assert torch.all(grad[keep] != 0)


def test_attach_is_idempotent_and_keeps_the_optimizer_parameter():
    lin = nn.Linear(5, 3)
    param = lin.weight
    m1 = prune.attach_mask(lin)
    m2 = prune.attach_mask(lin, mask=torch.zeros(3, 5, dtype=torch.bool))
    assert m1 is m2
    assert prune.original(lin) is param  # the optimizer built before prepare still updates the right tensor
    assert torch.all(lin.weight == 0)


def test_attach_refuses_bad_input():
    lin = nn.Linear(5, 3)
    with pytest.raises(ValueError, match=r"mask shape \(5, 3\)"):
        prune.attach_mask(lin, mask=torch.ones(5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no parameter named 'scale'"):
        prune.attach_mask(lin, "scale")

    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

    parametrize.register_parametrization(lin, "weight", Double())
    with pytest.raises(ValueError, match="not a sparsec Mask"):
        prune.attach_mask(lin)


def test_zero_optimizer_state_clears_momentum_and_adam_moments():
    for opt_cls in (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.Adam(p, lr=0.1)):
        model = mlp()
        opt = opt_cls(model.parameters())
        train_steps(model, opt, steps=2)
        lin = model[0]
        keep = torch.rand_like(lin.weight) > 0.5
        prune.zero_optimizer_state(opt, lin.weight, keep)
        for value in opt.state[lin.weight].values():
            if isinstance(value, torch.Tensor) and value.shape == keep.shape:
                assert torch.all(value[~keep] == 0)
                assert torch.any(value[keep] != 0)


def test_finalize_leaves_plain_parameters_with_zeros():
    model = mlp()
    params_before = [m.weight for m in model if isinstance(m, nn.Linear)]
    sp = prune.MagnitudePruner(0.6)
    sp.prepare(model)
    sp.step()
    expected = [m.weight.detach().clone() for m in model if isinstance(m, nn.Linear)]
    out = sp.finalize()
    assert out is model
    for m, param, exp in zip([m for m in model if isinstance(m, nn.Linear)], params_before, expected, strict=True):
        assert type(m) is nn.Linear  # the Parametrized* class is gone
        assert not parametrize.is_parametrized(m)
        assert not hasattr(m, "parametrizations")
        assert type(m.weight) is nn.Parameter and m.weight is param
        assert torch.equal(m.weight.detach(), exp)
        assert (m.weight == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)
    assert not any(k.endswith(".mask") or "original" in k for k in model.state_dict())


def test_finalize_refuses_a_foreign_parametrization_on_the_same_tensor():
    lin = nn.Linear(4, 4)
    prune.attach_mask(lin)

    class Neg(nn.Module):
        def forward(self, x):
            return -x

    parametrize.register_parametrization(lin, "weight", Neg())
    with pytest.raises(ValueError, match="mixes a sparsec Mask"):
        prune.finalize(lin)


def test_sparsity_report_matches_before_and_after_finalize():
    model = mlp()
    sp = prune.MagnitudePruner(0.5, scope="global")
    sp.prepare(model)
    sp.step()
    before = prune.sparsity_report(model)
    prune.finalize(model)
    assert prune.sparsity_report(model) == before
    assert before["__global__"] == pytest.approx(0.5, abs=1e-3)


def test_prepare_names_unsupported_modules_and_unknown_names():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(TypeError, match="unsupported module type LayerNorm for '1'"):
        prune.MagnitudePruner(0.5).prepare(model, ["1"])
    with pytest.raises(ValueError, match="no submodule named 'nope'"):
        prune.MagnitudePruner(0.5).prepare(model, ["nope"])
    with pytest.raises(ValueError, match="no prunable layers"):
        prune.MagnitudePruner(0.5).prepare(nn.Sequential(nn.ReLU()))
    with pytest.raises(RuntimeError, match="prepare"):
        prune.MagnitudePruner(0.5).step()
