"""sparse_compile end to end: MLP and transformer block vs eager, batch changes, reports, IR stages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from sparsec.demo import prune_linears
from sparsec.models import MLP, TransformerBlock
from tests.conftest import assert_close


def _pruned(model: nn.Module, sparsity: float = 0.9) -> nn.Module:
    torch.manual_seed(0)
    return prune_linears(model.eval(), sparsity)


def test_mlp_matches_eager_across_batch_sizes():
    model = _pruned(MLP(96, 256, 64))
    cm = sparsec.sparse_compile(model, (torch.randn(16, 96),), target="cpu", force_format="csr", min_weight_numel=0)
    for batch in (16, 3, 40, 1, 2):
        x = torch.randn(batch, 96)
        assert_close(cm(x), model(x))
    rep = cm.report()
    assert [r.name for r in rep.layers] == ["fc1", "fc2", "fc3"]
    assert all(r.format == "csr" for r in rep.layers)
    assert rep.layers[0].format in {f.label for f in sparsec.formats()}
    assert rep.layers[0].sparse_flops < rep.layers[0].dense_flops
    assert "fc1" in str(rep) and "why" in str(rep)


def test_transformer_block_attention_stays_dense():
    model = _pruned(TransformerBlock(64, 4, 128))
    x = torch.randn(2, 8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=0, force_format="csr")
    assert_close(cm(x), model(x))
    for shape in ((1, 8, 64), (3, 5, 64), (2, 1, 64)):
        y = torch.randn(*shape)
        assert_close(cm(y), model(y))
    fused = {r.name: r.fused for r in cm.report().layers}
    assert "residual" in fused["ff2"] and "gelu" in fused["ff1"]
    assert "scaled_dot_product_attention" in cm.report().torch_ops


def test_selector_picks_sparse_for_a_large_sparse_layer():
    model = _pruned(MLP(768, 3072, 768))
    # built-in rates: the selector's logic, not this machine's momentary load, decides
    cm = sparsec.sparse_compile(model, (torch.randn(64, 768),), target="cpu", calibrate=False)
    assert cm.report().layers[0].format != "dense"


def test_dense_model_stays_dense_and_correct():
    model = MLP(64, 128, 32).eval()
    x = torch.randn(8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu")
    assert all(r.format == "dense" for r in cm.report().layers)
    assert_close(cm(x), model(x))


def test_ir_stages():
    model = _pruned(MLP(64, 128, 32))
    cm = sparsec.sparse_compile(model, (torch.randn(8, 64),), target="cpu", force_format="csr", min_weight_numel=0)
    assert "aten.linear" in cm.ir("fx")
    assert "# sparsec:" in cm.ir("fuse") and "density=" in cm.ir("fuse")
    assert "vector.fma" in cm.ir("mlir")  # CSR runs the register-blocked vector kernel
    assert "llvm.func" in cm.ir("llvm")
    bsr = sparsec.sparse_compile(model, (torch.randn(8, 64),), target="cpu", force_format="coo", min_weight_numel=0)
    assert "#sparse_tensor.encoding" in bsr.ir("mlir") and "singleton" in bsr.ir("mlir")  # the sparsifier path
    assert "sparsec_fc1" in cm.ir("lowered")
    with pytest.raises(ValueError, match="known stages"):
        cm.ir("bogus")


def test_weight_change_is_never_stale():
    model = _pruned(MLP(64, 128, 32))
    x = torch.randn(8, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", min_weight_numel=0)
    with torch.no_grad():
        model.fc1.weight.mul_(2.0)  # in place
    assert_close(cm(x), model(x))
    model.fc2.weight = nn.Parameter(torch.zeros_like(model.fc2.weight))  # replaced
    assert_close(cm(x), model(x))
    model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
    assert_close(cm(x), model(x))
    model.fc3.weight.data.zero_()  # bypasses the version counter: refresh() is the documented remedy
    cm.refresh()
    assert_close(cm(x), model(x))


def test_dump_dir(tmp_path):
    model = _pruned(MLP(64, 128, 32))
    cm = sparsec.sparse_compile(model, (torch.randn(4, 64),), target="cpu", dump_dir=str(tmp_path),
                                min_weight_numel=0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{i:02d}-{stage}.txt" for i, stage in enumerate(cm.stages())]
    assert (tmp_path / names[0]).read_text().startswith("# stage fx")


def test_threads_agree():
    model = _pruned(MLP(64, 256, 64))
    x = torch.randn(32, 64)
    one = sparsec.sparse_compile(model, (x,), target="cpu", threads=1, force_format="csr", min_weight_numel=0)
    two = sparsec.sparse_compile(model, (x,), target="cpu", threads=2, force_format="bsr8x8", min_weight_numel=0)
    assert_close(one(x), model(x))
    assert_close(two(x), model(x))
