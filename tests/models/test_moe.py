"""A top-k mixture of experts: data-dependent routing captured by torch.export, sparse experts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec.codegen.mlir import jit
from sparsec.targets.cpu.sparse_rows import BucketedSparseLinear, bucket
from tests.conftest import assert_close
from tests.models import zoo


@pytest.fixture(scope="module")
def compiled():
    model, inputs = zoo.moe()
    return model, inputs, sparsec.sparse_compile(model, inputs, target="cpu", force_format="csr", calibrate=False)


def test_moe_matches_eager_on_many_routings(compiled):
    model, _, cm = compiled
    g = torch.Generator().manual_seed(7)
    for batch, seq in ((2, 16), (1, 5), (3, 11), (2, 16), (4, 9)):
        x = torch.randn(batch, seq, 64, generator=g)
        with torch.no_grad():
            assert_close(cm(x), model(x))


def test_expert_layers_are_sparse_with_bucketed_rows(compiled):
    _, _, cm = compiled
    rep = {r.name: r for r in cm.report().layers}
    experts = [r for name, r in rep.items() if name.startswith("experts.")]
    assert len(experts) == 8 and all(r.format == "csr" for r in experts)
    # N is the tokens routed to the expert at the example (measured by running the graph), not a guess
    assert sum(rep[f"experts.{e}.fc1"].n for e in range(4)) == 2 * 16 * 2
    mods = [m for m in cm.graph_module.modules() if isinstance(m, BucketedSparseLinear)]
    assert len(mods) == 8


def test_routing_changes_compile_a_bounded_number_of_kernels(compiled):
    model, _, cm = compiled
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 16, 64, generator=g)
    cm(x)
    before = jit.STATS["compiled"]
    for _ in range(12):
        x = torch.randn(2, 16, 64, generator=g)
        with torch.no_grad():
            assert_close(cm(x), model(x))
    # 64 routed tokens fall in at most 11 buckets (1..64): far fewer than one kernel per token count
    assert jit.STATS["compiled"] - before <= 2 * 11
    assert [bucket(n) for n in (0, 1, 2, 3, 5, 7, 13, 17, 33, 100)] == [0, 1, 2, 3, 6, 8, 16, 24, 48, 128]


def test_data_dependent_python_branch_gets_an_explained_capture_error():
    class SkipIdle(zoo.TopKMoE):
        def forward(self, x):
            tokens = x.reshape(-1, x.shape[-1])
            chosen = self.router(tokens).argmax(-1)
            out = torch.zeros_like(tokens)
            for e, expert in enumerate(self.experts):
                idx = torch.where(chosen == e)[0]
                if idx.numel() > 0:  # Python control flow on a tensor value
                    out[idx] = expert(tokens[idx])
            return out

    model: nn.Module = SkipIdle(16, 32, 2, 1).eval()
    with pytest.raises(sparsec.CaptureError, match="data-dependent|control flow"):
        sparsec.sparse_compile(model, (torch.randn(4, 16),), target="cpu", calibrate=False)
