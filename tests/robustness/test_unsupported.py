"""Ops no pass handles run in torch (and the report lists them); untraceable models get a CaptureError
that explains why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsec
from tests.conftest import assert_close, random_weight


class Odd(nn.Module):
    """A sparse Linear surrounded by ops sparsec has no kernel for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)
        with torch.no_grad():
            self.fc.weight.copy_(random_weight(64, 64, 0.1, 0))

    def forward(self, x):
        h = torch.cumsum(self.fc(x), dim=-1)
        spec = torch.fft.rfft(h, dim=-1).abs()
        top = torch.sort(h, dim=-1).values[..., :8]
        return torch.cat([spec, top, torch.einsum("bi,bj->bij", x[:, :4], x[:, :4]).flatten(1)], dim=-1)


def test_unsupported_ops_run_in_torch_and_are_reported():
    model = Odd().eval()
    x = torch.randn(6, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csr", calibrate=False)
    assert_close(cm(x), model(x))
    x2 = torch.randn(2, 64)
    assert_close(cm(x2), model(x2))
    ops = set(cm.report().torch_ops)
    assert {"cumsum", "sort", "cat"} <= ops and any("fft" in o for o in ops)
    assert "ops run by torch" in str(cm.report())
    assert [r.format for r in cm.report().layers] == ["csr"]


def test_item_is_captured_and_a_tensor_branch_gets_an_explained_capture_error():
    class Item(nn.Module):
        def forward(self, x):
            return x * x.max().item()  # export keeps the value symbolic: no error needed

    class Branch(nn.Module):
        def forward(self, x):
            return x + 1 if x.mean() > 0 else x - 1

    x = torch.randn(3, 4)
    assert_close(sparsec.sparse_compile(Item(), (x,), target="cpu")(x), Item()(x))
    with pytest.raises(sparsec.CaptureError) as info:
        sparsec.sparse_compile(Branch(), (x,), target="cpu")
    text = str(info.value)
    assert "What to do" in text and "data-dependent" in text and "torch.cond" in text
