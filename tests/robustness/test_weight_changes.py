"""Weights changed after compiling are never silently ignored, for every new model kind: the next call
recompiles (re-fold, re-shrink, re-analyze, re-pack); writes through ``.data`` need ``refresh()``."""

from __future__ import annotations

import torch
from torch import nn

import sparsec
from tests.conftest import assert_close
from tests.models import zoo


def _compile(model, inputs, **opts):
    return sparsec.sparse_compile(model, inputs, target="cpu", calibrate=False, **opts)


def _same(cm, model, *inputs):
    with torch.no_grad():
        got, want = cm(*inputs), model(*inputs)
    got = got.last_hidden_state if hasattr(got, "last_hidden_state") else got
    want = want.last_hidden_state if hasattr(want, "last_hidden_state") else want
    assert_close(got, want)


def test_cnn_conv_weight_and_batchnorm_statistics():
    model, (x,) = zoo.cnn(width=8)
    cm = _compile(model, (x,), force_format="csr", min_weight_numel=0)
    with torch.no_grad():
        model.c2.weight.mul_(-2.0)  # in place: the folded, packed filter must follow
    _same(cm, model, x)
    model.b1.running_var.mul_(4.0)  # a BatchNorm buffer folded into c1
    _same(cm, model, x)
    model.b2.weight = nn.Parameter(torch.randn(16))  # a replaced parameter
    _same(cm, model, x)


def test_gcn_adjacency_buffer_and_plain_tensor_attribute():
    model = zoo.GCN(nodes=64).eval()
    x = torch.randn(64, 32)
    cm = _compile(model, (x,), force_format="csr", min_weight_numel=0)
    with torch.no_grad():
        model.adj[:, :10] = 0.0  # in-place edit of a registered buffer
    _same(cm, model, x)
    spmv = zoo.SpMV(torch.zeros(1))
    del spmv.A
    spmv.A = zoo.sparse_matrix(48, 40, 0.1, 0)  # a plain attribute, which export lifts as a constant
    cm = _compile(spmv, (torch.randn(40),), force_format="csr", min_weight_numel=0)
    spmv.A.mul_(3.0)
    _same(cm, spmv, torch.randn(40))
    spmv.A = zoo.sparse_matrix(48, 40, 0.3, 1)
    _same(cm, spmv, torch.randn(40))


def test_moe_expert_replaced_and_gpt2_state_dict():
    model, (x,) = zoo.moe(d=32, hidden=64)
    cm = _compile(model, (x,), force_format="csr", min_weight_numel=0)
    model.experts[1] = zoo.Expert(32, 64).eval()  # a whole new submodule
    _same(cm, model, x)
    gpt, (ids,) = zoo.gpt2(embd=64, seq=8)
    cm = _compile(gpt, (ids,))
    gpt.load_state_dict({k: v * 0.5 if v.is_floating_point() else v for k, v in gpt.state_dict().items()})
    _same(cm, gpt, ids)


def test_revived_channel_after_shrink_and_data_writes_need_refresh():
    x = torch.randn(8, 64)
    model = zoo.channel_pruned(zoo.ResMLP(), (x,), 0.5)
    cm = _compile(model, (x,))
    assert cm.report().layers[0].shape == (128, 64)
    with torch.no_grad():  # bring pruned channels back: the shrunk graph would drop them
        model.fc1.weight[model.fc1.weight.abs().sum(1) == 0] = 0.1
    _same(cm, model, x)
    assert cm.report().layers[0].shape[0] > 128
    model.fc2.weight.data.mul_(0.5)  # .data bypasses autograd's version counter: documented remedy
    cm.refresh()
    _same(cm, model, x)
