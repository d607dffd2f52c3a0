"""Sparsity a compile could miss without a word (issue 11, family probe): layers inside a grad-mode region
(Reformer), weights stored [in, out] (GPT-2's Conv1D) pruned 2:4 along either dimension, and graphs with
no layer to make sparse, whose report must say why."""

from __future__ import annotations

import torch
from torch import nn

import sparsec
from sparsec.prune import nm_mask
from tests.conftest import assert_close, random_weight

OPTS = dict(target="cpu", calibrate=False, autotune=False, min_weight_numel=0)


class NoGradRegions(nn.Module):
    """Reformer's shape: the attention under ``with torch.no_grad():``, the feed-forward under enable_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 32)
        with torch.no_grad():
            self.a.weight.copy_(random_weight(64, 32, 0.1, 0))
            self.b.weight.copy_(random_weight(32, 64, 0.1, 1))

    def forward(self, x):
        with torch.no_grad():
            h = torch.relu(self.a(x))
        with torch.enable_grad():
            return self.b(h) + x


def test_layers_inside_grad_mode_regions_are_made_sparse():
    model = NoGradRegions().eval()
    x = torch.randn(6, 32)
    cm = sparsec.sparse_compile(model, (x,), force_format="csr", **OPTS)
    assert [(r.name, r.format) for r in cm.report().layers] == [("a", "csr"), ("b", "csr")]
    for rows in (6, 3):
        x = torch.randn(rows, 32)
        with torch.no_grad():
            assert_close(cm(x), model(x))


class StoredInOut(nn.Module):
    """transformers' Conv1D: ``addmm(bias, x, W)`` with W stored [in, out]."""

    def __init__(self, w_in_out: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(w_in_out)
        self.bias = nn.Parameter(torch.randn(w_in_out.shape[1]))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


def test_in_out_weight_pruned_2_4_along_the_inputs_runs_nm():
    w = torch.randn(64, 48)  # [in, out]: the inputs are dim 0
    model = StoredInOut(w * nm_mask(w.t(), 2, 4).t()).eval()
    x = torch.randn(2, 5, 64)
    cm = sparsec.sparse_compile(model, (x,), force_format="nm2:4", **OPTS)
    assert [r.format for r in cm.report().layers] == ["nm2:4"]
    with torch.no_grad():
        assert_close(cm(x), model(x))


def test_in_out_weight_pruned_2_4_along_the_outputs_says_why():
    w = torch.randn(64, 48)  # pruned along dim 1 (the outputs): a 50% unstructured weight to the kernels
    model = StoredInOut(w * nm_mask(w, 2, 4)).eval()
    x = torch.randn(2, 5, 64)
    cm = sparsec.sparse_compile(model, (x,), force_format="nm2:4", **OPTS)
    (layer,) = cm.report().layers
    assert layer.format == "dense"
    assert "2:4 along the outputs, not the inputs" in layer.reason and "50% unstructured" in layer.reason
    with torch.no_grad():
        assert_close(cm(x), model(x))


class WeightAsInput(nn.Module):
    def forward(self, x, w):
        return x @ w


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, groups=8, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class InsideCond(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: self.a(t), lambda t: self.b(t), (x,))


def test_a_report_with_no_layer_says_why():
    cases = [
        (WeightAsInput(), (torch.randn(4, 16), torch.randn(16, 8)), "reads a constant 2-d weight"),
        (Depthwise(), (torch.randn(1, 8, 6, 6),), "depthwise / grouped"),
        (InsideCond(), (torch.randn(4, 16),), "higher-order ops (cond"),
    ]
    for model, args, why in cases:
        model.eval()
        cm = sparsec.sparse_compile(model, args, **OPTS)
        rep = cm.report()
        assert rep.layers == []
        assert any(why in n for n in rep.notes), rep.notes
        assert "note: no layer can be made sparse" in str(rep)
        with torch.no_grad():
            assert_close(cm(*args), model(*args))
