"""sparsec.profile: FLOPs, bytes, timing, energy and mask fit, for eager and compiled models."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import sparsec
from sparsec.report import energy
from sparsec.report.hwfit import mask_fit, nm_compliance
from tests.models import zoo


def _mlp(dtype=torch.float32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).to(dtype).eval()
    with torch.no_grad():
        w = model[0].weight
        w.mul_((torch.rand_like(w.float()) > 0.9).to(dtype))  # ~90% zeros
    return model, (torch.randn(8, 64, dtype=dtype),)


def test_eager_counts():
    model, (x,) = _mlp()
    rep = sparsec.profile(model, (x,), repeats=2)
    a, b = rep.layers
    assert (a.name, a.kind, a.n) == ("0", "linear", 8)
    assert a.dense_flops == a.executed_flops == 2 * 8 * 128 * 64  # eager skips nothing
    assert a.weight_bytes == (128 * 64 + 128) * 4
    assert a.activation_bytes == (8 * 64 + 8 * 128) * 4
    assert a.time_us is not None and a.time_us > 0 and rep.total_time_us > 0
    assert a.energy_uj == pytest.approx(energy.estimate_uj(a.dense_flops, a.weight_bytes + a.activation_bytes))
    assert 0.85 < 1 - a.fit["density"] < 0.95 and b.fit["density"] > 0.99
    data = json.loads(rep.to_json())
    assert data["totals"]["dense_flops"] == a.dense_flops + b.dense_flops
    text = str(rep)
    assert "total:" in text and "pJ/FLOP" in text and "0 " in text


def test_real_dtype_bytes():
    model, (x,) = _mlp(torch.bfloat16)
    a = sparsec.profile(model, (x,), repeats=1).layers[0]
    assert a.dtype == "bfloat16" and a.weight_bytes == (128 * 64 + 128) * 2
    assert a.activation_bytes == (8 * 64 + 8 * 128) * 2


def test_compiled_skips_zeros():
    model, (x,) = _mlp()
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=1024, force_format="csr")
    rep = sparsec.profile(cm, (x,), repeats=2)
    first = rep.layers[0]
    assert first.kind == "csr" and rep.compiled
    nnz = int((model[0].weight != 0).sum())
    assert first.executed_flops == 2 * 8 * nnz
    assert 0.85 < first.effective_sparsity < 0.95
    assert first.weight_bytes < 128 * 64 * 4 * 0.3  # values + indices of ~10% entries
    assert first.time_us is not None
    assert rep.totals()["effective_sparsity"] > 0.5 and first.fit["needs"] == "csr"


def test_bert_and_cnn_profile():
    model, inputs = zoo.bert(hidden=64, layers=1, heads=2, inter=256, seq=16)
    names = [x.name for x in sparsec.profile(model, inputs, repeats=1).layers]
    assert "encoder.layer.0.intermediate.dense" in names
    model, inputs = zoo.cnn(width=8, size=16)
    conv = sparsec.profile(model, inputs, repeats=1).layers[0]
    assert conv.kind == "conv2d" and conv.dense_flops == 2 * conv.n * conv.shape[0] * 3 * 3 * 3


def test_mask_fit_patterns():
    w = torch.randn(32, 64)
    w.view(32, 16, 4)[:, :, 2:] = 0  # exactly 2:4
    fit = mask_fit(w)
    assert fit["nm"]["2:4"] == 1.0 and fit["needs"] == "nm2:4"
    blocks = torch.zeros(64, 64)
    blocks[:16, :16] = 1.0
    fit = mask_fit(blocks)
    assert fit["block_occupancy"][16] == pytest.approx(1 / 16) and fit["block_fill"][16] == 1.0
    assert fit["needs"].startswith("bsr") and fit["empty_rows"] == pytest.approx(48 / 64)
    assert nm_compliance(torch.ones(4, 6), 2, 4) is None
    assert mask_fit(torch.randn(16, 16))["needs"] == "dense"


def test_bad_input():
    with pytest.raises(TypeError, match="nn.Module"):
        sparsec.profile(lambda x: x, (torch.randn(2),))
    model, inputs = _mlp()
    with pytest.raises(ValueError, match="repeats"):
        sparsec.profile(model, inputs, repeats=0)


def test_cli_report_and_inspect_saved_model(tmp_path, capsys):
    from sparsec.cli import main

    model, (x,) = _mlp()
    cm = sparsec.sparse_compile(model, (x,), target="cpu", min_weight_numel=1024, force_format="csr")
    cm.save(tmp_path / "m")
    assert main(["report", str(tmp_path / "m"), "--json", "--repeats", "1", "--plots", str(tmp_path / "png")]) == 0
    out = capsys.readouterr().out
    data = json.loads(out[: out.rindex("}") + 1])
    assert data["compiled"] and data["layers"][0]["kind"] == "csr"
    assert (tmp_path / "png" / "density.png").stat().st_size > 1000 and (tmp_path / "png" / "time.png").exists()
    assert main(["inspect", "mlir", "--model", str(tmp_path / "m")]) == 0
    assert "func.func @sparsec_" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "missing")])
