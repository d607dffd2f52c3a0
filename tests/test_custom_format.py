"""A user-defined format with only a level map (CSC) is registered, chosen and run correctly."""

from __future__ import annotations

import torch

import sparsec
from sparsec.demo import prune_linears
from sparsec.models import MLP
from tests.conftest import assert_close


class CSC(sparsec.SparseFormat):
    """Compressed sparse columns: the user writes a name and a level map, nothing else."""

    name = "csc"
    priority = 5  # asked before CSR
    level_map = "(i, j) -> (j : dense, i : compressed)"


def test_custom_format_is_selected_and_correct():
    fmt = sparsec.register_format(CSC)
    try:
        torch.manual_seed(0)
        model = prune_linears(MLP(64, 128, 32).eval(), 0.9)
        x = torch.randn(16, 64)
        cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csc", min_weight_numel=0)
        assert {r.format for r in cm.report().layers} == {"csc"}
        assert_close(cm(x), model(x))
        assert_close(cm(x[:1]), model(x[:1]))
        w = model.fc1.weight.detach()
        assert torch.equal(fmt.unpack(fmt.pack(w)), w)
        # without forcing, the selector costs it like any other format
        cm2 = sparsec.sparse_compile(model, (x,), target="cpu", formats=("csc",), min_weight_numel=0)
        assert all(r.format in ("csc", "dense") for r in cm2.report().layers)
    finally:
        sparsec.unregister_format("csc")
    assert "csc" not in {f.label for f in sparsec.formats()}
