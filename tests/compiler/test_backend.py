"""torch.compile(model, backend="sparsec") runs the same compiler."""

from __future__ import annotations

import torch

import sparsec
from sparsec.demo import prune_linears
from sparsec.models import MLP
from tests.conftest import assert_close


def test_torch_compile_backend_by_name_and_object():
    torch.manual_seed(0)
    model = prune_linears(MLP(64, 256, 32).eval(), 0.9)
    x = torch.randn(16, 64)
    for backend in ("sparsec", sparsec.backend):
        torch._dynamo.reset()
        opt = torch.compile(model, backend=backend)
        with torch.no_grad():
            assert_close(opt(x), model(x))


def test_backend_compiles_sparse_layers():
    torch.manual_seed(0)
    model = prune_linears(MLP(64, 256, 32).eval(), 0.9)
    seen = []

    def spy(gm, inputs):
        fn = sparsec.backend(gm, inputs, force_format="csr", min_weight_numel=0)
        seen.append(fn)
        return fn

    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, backend=spy)(torch.randn(8, 64))
    assert out.shape == (8, 32)
    assert seen and {r.format for r in seen[0].compiled.report().layers} == {"csr"}
    # the backend's CompiledModel exposes the same stages as sparse_compile's
    assert "select" in seen[0].compiled.stages() and "SparseLinear" in seen[0].compiled.ir("lower")
