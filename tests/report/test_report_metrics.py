"""cm.report()'s sparse-aware metrics, checked against hand computation on a small model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import sparsec
from sparsec.formats.facts import compute_facts
from sparsec.report.hwfit import mask_fit, nm_compliance


def _masked_model():
    """Linear(32 -> 16): rows 0-7 keep the first 2 of every 4 inputs (2:4) except one 3-of-4 group; 8-15 empty."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16, bias=False)).eval()
    mask = torch.zeros(16, 32)
    mask[:8].view(8, 8, 4)[:, :, :2] = 1
    mask[0, 2] = 1  # one group of 4 holds 3 nonzeros
    with torch.no_grad():
        model[0].weight.copy_((torch.rand(16, 32) + 0.5) * mask)
    return model, (torch.randn(4, 32),)


def test_report_numbers_by_hand():
    model, (x,) = _masked_model()
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=1, force_format="csr")
    (r,) = cm.report().layers
    nnz = 8 * 16 + 1
    assert (r.format, r.n, r.dtype) == ("csr", 4, "float32")
    assert r.dense_flops == 2 * 4 * 16 * 32 and r.sparse_flops == 2 * 4 * nnz
    assert r.effective_sparsity == pytest.approx(1 - nnz / (16 * 32))
    assert r.dense_bytes == 16 * 32 * 4
    assert r.activation_bytes == 4 * (32 + 16) * 4  # N x (in + out) float32
    assert r.bytes_moved == r.sparse_bytes + r.activation_bytes
    assert r.energy_uj == pytest.approx((r.sparse_flops * 20 + r.bytes_moved * 100) * 1e-6)  # the documented pJ
    fit = r.fit
    assert fit["nm"]["2:4"] == pytest.approx(1 - 1 / (16 * 8))  # 128 groups of 4, one with 3 nonzeros
    assert fit["nm"]["1:4"] == pytest.approx(0.5)  # the 64 groups of the empty rows
    assert fit["nm"]["4:8"] == pytest.approx(1 - 1 / (16 * 4))  # 64 groups of 8, one holds 3 + 2
    assert fit["block_occupancy"][8] == pytest.approx(4 / 8)  # the top 8 rows' four 8x8 blocks of eight
    assert fit["block_occupancy"][16] == pytest.approx(1.0) and fit["empty_rows"] == pytest.approx(0.5)
    assert fit["block_fill"][8] == pytest.approx(nnz / (4 * 64))
    assert fit == mask_fit(model[0].weight)  # the same numbers as profile's, from the analyze facts
    text = str(cm.report())
    assert "skip" in text and "uJ est" in text and "pJ/FLOP" in text and "99%" in text  # 2:4 compliance
    data = json.loads(cm.report().to_json())
    assert data["totals"]["executed_flops"] == r.sparse_flops
    assert data["layers"][0]["energy_uj"] == pytest.approx(r.energy_uj)


def test_dense_layer_counts_its_real_dtype():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32)).to(torch.bfloat16).eval()
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    (r,) = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=1).report().layers
    assert r.format == "dense" and r.dtype == "bfloat16"
    assert r.dense_bytes == r.sparse_bytes == 64 * 32 * 2 and r.activation_bytes == 8 * (64 + 32) * 2
    assert r.sparse_flops == r.dense_flops and r.effective_sparsity == 0.0


@pytest.mark.parametrize("shape", [(16, 32), (8, 12), (5, 40)])
def test_facts_nm_fraction_matches_the_direct_count(shape):
    torch.manual_seed(1)
    w = torch.randn(*shape) * (torch.rand(*shape) > 0.6)
    facts = compute_facts(w)
    for pat, (n, m) in {"2:4": (2, 4), "1:4": (1, 4), "4:8": (4, 8)}.items():
        direct = nm_compliance(w, n, m)
        got = facts.nm_fraction.get(pat)
        assert got == direct if direct is None else got == pytest.approx(direct)
