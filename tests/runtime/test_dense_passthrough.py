"""A compiled model whose layers all stay dense runs the source model itself (no per-op graph dispatch),
while inputs and weights are still checked and a change to sparse weights still compiles sparse kernels."""

from __future__ import annotations

import pytest
import torch

import sparsec
from tests.conftest import assert_close


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512)).eval()


def test_all_dense_model_runs_the_source_model(monkeypatch):
    model, x = _model(), torch.randn(8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False, min_weight_numel=0)
    assert [r.format for r in cm.report().layers] == ["dense", "dense"]
    assert "calls run the source model" in cm.ir("lowered")
    graph = cm._primary.module
    monkeypatch.setattr(graph, "forward", lambda *a: pytest.fail("the graph ran for an all-dense model"))
    with torch.no_grad():
        assert_close(cm(x), model(x))
        x3 = torch.randn(3, 64)
        assert_close(cm(x3), model(x3))
    with pytest.raises(sparsec.InputError, match="dimension 1 must be 64"):
        cm(torch.randn(8, 63))
    with pytest.raises(sparsec.InputError, match="dtype"):
        cm(x.double())


def test_sparse_weights_loaded_later_get_sparse_kernels():
    model, x = _model(), torch.randn(32, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False, min_weight_numel=0, autotune=False)
    assert cm._eager == [model]
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.02)
        y = cm(x)
    assert cm._eager == [] and any(r.format != "dense" for r in cm.report().layers)
    assert_close(y, model(x))


def test_a_model_switched_to_training_mode_leaves_the_passthrough():
    model, x = _model(), torch.randn(8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False, min_weight_numel=0)
    model.train()
    calls = []
    graph = cm._primary.module
    real = graph.forward
    graph.forward = lambda *a: calls.append(1) or real(*a)
    with torch.no_grad():
        assert_close(cm(x), model(x))
    assert calls, "the compiled graph must run when the model's mode differs from the compiled one"
