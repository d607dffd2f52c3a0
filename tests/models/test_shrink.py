"""Structural sparsity: zero channel groups shrink to smaller dense layers (and stay correct)."""

from __future__ import annotations

import torch
from torch import nn

import sparsec
from tests.conftest import assert_close
from tests.models import zoo


def test_residual_mlp_group_shrinks_together():
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    model = zoo.channel_pruned(zoo.ResMLP(), (x,), 0.5)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False)
    shapes = {r.name: r.shape for r in cm.report().layers}
    assert shapes == {"fc1": (128, 64), "fc2": (128, 128), "head": (10, 128)}
    assert all(r.format == "dense" and r.density == 1.0 for r in cm.report().layers)  # dense, smaller
    assert "256 -> 128" in cm.ir("shrink")
    with torch.no_grad():
        assert_close(cm(x), model(x))
        x3 = torch.randn(3, 64)
        assert_close(cm(x3), model(x3))


def test_cnn_with_batchnorm_and_flatten_shrinks():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    model = zoo.channel_pruned(zoo.randomize_bn(zoo.FlattenCNN(16, 16)), (x,), 0.5)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False)
    shapes = {r.name: r.shape for r in cm.report().layers}
    assert shapes["c1"] == (8, 27) and shapes["c2"] == (16, 72) and shapes["fc"] == (10, 16 * 16)
    for batch in (2, 5):
        xb = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            assert_close(cm(xb), model(xb))


def test_group_reaching_the_output_is_left_alone():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 64)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))  # fc2's channels are the model output

    model = Head().eval()
    with torch.no_grad():
        model.fc2.weight[::2] = 0
        model.fc2.bias[::2] = 0
        model.fc1.weight[:10] = 0
        model.fc1.bias[:10] = 0
    x = torch.randn(4, 32)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False)
    shapes = {r.name: r.shape for r in cm.report().layers}
    assert shapes == {"fc1": (54, 32), "fc2": (64, 54)}  # fc1's group shrinks, fc2's (the output) does not
    assert "not shrunk" in cm.ir("shrink")
    with torch.no_grad():
        out = cm(x)
    assert out.shape == (4, 64)
    assert_close(out, model(x))


def test_channel_with_nonzero_bias_is_kept():
    model = zoo.ResMLP().eval()
    with torch.no_grad():
        model.fc1.weight[:5] = 0
        model.fc2.weight[:5] = 0
        model.fc2.bias[:5] = 0  # fc1.bias stays nonzero: relu(bias) reaches head
    x = torch.randn(4, 64)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", calibrate=False)
    assert {r.name: r.shape for r in cm.report().layers}["head"] == (10, 256)
    with torch.no_grad():
        assert_close(cm(x), model(x))
