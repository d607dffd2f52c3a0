"""analyze, select, fuse and lower on small graphs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparsec.compiler.capture import capture
from sparsec.compiler.context import CompileContext
from sparsec.compiler.options import CompileOptions
from sparsec.passes import analyze, fuse, lower, select
from tests.conftest import random_weight


class Net(nn.Module):
    def __init__(self, density: float = 0.05) -> None:
        super().__init__()
        self.a = nn.Linear(128, 128)
        self.b = nn.Linear(128, 128)
        self.conv1d_w = nn.Parameter(random_weight(128, 128, density, 7))  # [in, out] like GPT-2's Conv1D
        self.conv1d_b = nn.Parameter(torch.randn(128))
        with torch.no_grad():
            self.a.weight.copy_(random_weight(128, 128, density, 1))
            self.b.weight.copy_(torch.randn(128, 128))  # dense

    def forward(self, x):
        h = F.gelu(self.a(x))
        h = self.b(h) + h
        return F.relu(torch.addmm(self.conv1d_b, h, self.conv1d_w))


def _run(model, x, *passes, **opts):
    cap = capture(model, (x,))
    ctx = CompileContext(CompileOptions(**opts), model)
    gm = cap.module
    for p in passes:
        gm = p.run(gm, ctx)
    layers = {n.meta["sparsec"].name: n.meta["sparsec"] for n in gm.graph.nodes if "sparsec" in n.meta}
    return gm, ctx, layers


def test_analyze_finds_linear_and_in_out_weights():
    _, ctx, layers = _run(Net(), torch.randn(16, 128), analyze)
    assert set(layers) == {"a", "b", "conv1d_w"}
    assert layers["conv1d_w"].m.transposed  # stored [in, out]
    assert abs(layers["a"].facts.density - 0.05) < 0.02
    assert layers["b"].facts.density == 1.0
    assert layers["a"].n == 16
    assert "density=" in ctx.summaries["analyze"]


def test_select_dense_for_dense_and_sparse_for_sparse():
    _, ctx, layers = _run(Net(), torch.randn(64, 128), analyze, select, min_weight_numel=0)
    assert layers["b"].format == "dense" and "no sparse format" in layers["b"].reason
    assert layers["a"].format != "dense" and "predicted" in layers["a"].reason
    assert "dense" in layers["a"].costs and layers["a"].costs[layers["a"].format] < layers["a"].costs["dense"]
    assert "bsr32x32" in layers["a"].rejected  # scattered nonzeros would fill whole blocks
    # every candidate is either costed or rejected with a reason
    from sparsec.formats import registry

    for f in registry.formats():
        assert f.label in layers["a"].costs or f.label in layers["a"].rejected


def test_select_respects_allowed_and_forced_formats():
    _, _, layers = _run(Net(), torch.randn(64, 128), analyze, select, formats=("coo",), min_weight_numel=0)
    assert layers["a"].format in ("coo", "dense")
    _, _, layers = _run(Net(), torch.randn(64, 128), analyze, select, force_format="coo", min_weight_numel=0)
    assert layers["a"].format == "coo" and layers["b"].format == "coo" and "forced" in layers["b"].reason
    _, _, layers = _run(Net(), torch.randn(64, 128), analyze, select, force_format="nm2:4", min_weight_numel=0)
    assert layers["b"].format == "dense" and "rejected" in layers["b"].reason


def test_fuse_groups_activation_and_residual():
    _, ctx, layers = _run(Net(), torch.randn(64, 128), analyze, select, fuse, force_format="csr", min_weight_numel=0)
    assert layers["a"].activation == "gelu"
    assert layers["a"].residual_index is None  # gelu's output has two users: the add stays outside
    assert layers["b"].activation is None and layers["b"].residual_index is not None
    assert layers["conv1d_w"].activation == "relu"


def test_lower_replaces_groups_and_keeps_results():
    model = Net()
    x = torch.randn(32, 128)
    gm, _, _ = _run(model, x, analyze, select, fuse, lower, force_format="csr", min_weight_numel=0)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert sum(str(t).startswith("sparsec_") for t in targets) == 3
    assert not any(n.target is torch.ops.aten.gelu.default for n in gm.graph.nodes)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-4)


def test_select_requires_a_margin_over_dense():
    _, _, layers = _run(Net(), torch.randn(64, 128), analyze, select, min_weight_numel=0, min_speedup=1000.0)
    assert layers["a"].format == "dense" and "min_speedup" in layers["a"].reason


def test_bsr_cost_at_one_row_uses_the_block_sizes_measured_rate():
    from sparsec.formats.bsr import BSR
    from sparsec.formats.cost import DEFAULT_MACHINE
    from sparsec.formats.facts import compute_facts

    facts = compute_facts(random_weight(256, 256, 0.3, 0, "block32"))
    fast8 = DEFAULT_MACHINE.__class__(**{**DEFAULT_MACHINE.as_dict(), "block_dot_flops_8": 1e12})
    assert BSR(8).cost(facts, 1, fast8) < BSR(32).cost(facts, 1, fast8)
    assert BSR(8).cost(facts, 64, fast8) == BSR(8).cost(facts, 64, DEFAULT_MACHINE)


def test_operand_kind_table_prices_convolutions_on_the_cpu_only():
    """Every kind the matchers produce has a table entry; a conv2d's dense option is torch's conv2d on the
    CPU (a GEMM's price over knob dense_conv_speedup, sparse ones times conv_sparse_slowdown), a GEMM
    elsewhere; a kind the table lacks is a clear NotImplementedError."""
    import pytest

    from sparsec import knobs
    from sparsec.formats.cost import DEFAULT_MACHINE
    from sparsec.passes.operand_kinds import KINDS, kind

    assert set(KINDS) == {"linear", "left", "conv2d", "diag"}
    with knobs.scope(dense_conv_speedup=4.0, conv_sparse_slowdown=3.0):
        cpu = kind("conv2d").pricing("cpu")
        assert cpu.dense(8, 16, 1.0, DEFAULT_MACHINE) == 0.25 and cpu.sparse_factor() == 3.0
        assert "conv2d" in cpu.dense_name
    gpu = kind("conv2d").pricing("gpu")
    assert gpu.dense(8, 16, 1.0, DEFAULT_MACHINE) == 1.0 and gpu.sparse_factor() == 1.0
    assert kind("linear").rows((4, 5, 6)) == 20 and kind("conv2d").rows((2, 8, 3, 3)) == 18
    with pytest.raises(NotImplementedError, match="operand_kinds.py"):
        kind("sddmm")
