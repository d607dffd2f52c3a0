"""Sparse operands that are not Linear weights: SpMV, SpMM (left and right), GCN, SDDMM, row scaling,
masked reductions; each against eager, and each must really run its sparse kernel."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsec
from sparsec import knobs
from sparsec.formats import registry
from sparsec.targets.cpu.sparse_gather import SparseMaskedSum, SparseSDDMM
from sparsec.targets.cpu.sparse_left import SparseLeft
from tests.conftest import assert_close, random_weight
from tests.models import zoo

S = zoo.sparse_matrix


# the built-in rates and no measurement (autotune=False): these tests check how the choices those rates make
# are lowered, and a measurement on this machine would make the choice of these tiny layers timing-dependent
def _compile(model, inputs, **opts):
    return sparsec.sparse_compile(model.eval(), inputs, target="cpu", calibrate=False, autotune=False, **opts)


def _check(cm, model, *inputs):
    with torch.no_grad():
        got, want = cm(*inputs), model(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,),
                    strict=True):
        assert_close(g, w)


def test_spmv():
    model = zoo.SpMV(S(512, 384, 0.05, 1))
    cm = _compile(model, (torch.randn(384),))
    assert cm.report().layers[0].format != "dense" and cm.report().layers[0].n == 1
    _check(cm, model, torch.randn(384))
    with pytest.raises(sparsec.InputError, match=r"\(383,\)"):
        cm(torch.randn(383))


def test_spmm_left_right_and_batched():
    with knobs.scope(column_tile=256):  # so a modest N spans several column tiles
        model = zoo.SpMM(S(256, 192, 0.05, 2), S(192, 128, 0.05, 3))
        cm = _compile(model, (torch.randn(192, 64),))
        rep = {r.name: r for r in cm.report().layers}
        assert rep["A"].format != "dense" and "relu" in rep["A"].fused and rep["A"].shape == (256, 192)
        assert rep["B"].format != "dense" and rep["B"].shape == (128, 192)  # right operand read as [out, in]
        _check(cm, model, torch.randn(192, 64))
        _check(cm, model, torch.randn(192, 3))
        _check(cm, model, torch.randn(192, 700))  # N above one column tile: 256 + 256 + 188
        cm3 = _compile(model, (torch.randn(3, 192, 64),))
        _check(cm3, model, torch.randn(3, 192, 64))
        _check(cm3, model, torch.randn(2, 192, 64))


def test_gcn_with_fixed_sparse_adjacency():
    model = zoo.GCN()
    x = torch.randn(256, 32)
    cm = _compile(model, (x,))
    adj = [r for r in cm.report().layers if r.name == "adj"]
    assert len(adj) == 2 and all(r.format != "dense" for r in adj) and "relu" in adj[0].fused
    _check(cm, model, x)


def test_sddmm():
    model = zoo.SDDMM(S(200, 160, 0.02, 4))
    cm = _compile(model, (torch.randn(200, 48), torch.randn(160, 48)))
    (row,) = cm.report().layers
    assert row.format == "coo" and "sddmm" in row.reason and row.n == 48
    assert "mm" not in cm.report().torch_ops and "matmul" not in cm.report().torch_ops
    _check(cm, model, torch.randn(200, 48), torch.randn(160, 48))
    _check(cm, model, torch.randn(200, 7), torch.randn(160, 7))


def test_sddmm_stays_dense_when_s_is_dense():
    model = zoo.SDDMM(S(64, 64, 0.5, 5))
    cm = _compile(model, (torch.randn(64, 16), torch.randn(64, 16)))
    assert cm.report().layers == [] and "sddmm over S stays dense (density" in cm.ir("gather")
    _check(cm, model, torch.randn(64, 16), torch.randn(64, 16))


def test_sparse_row_scaling():
    s = S(300, 1, 0.2, 6).reshape(-1)
    model = zoo.RowScale(s)
    # eager's s[:, None] * H is one elementwise pass; the selector prices it so and keeps it
    cm = _compile(model, (torch.randn(300, 40),), min_weight_numel=0)
    (row,) = cm.report().layers
    assert row.format == "dense" and row.shape == (300, 300) and row.density < 0.01
    _check(cm, model, torch.randn(300, 40))
    # forced, the sparse kernel computes only the scaled rows, and matches
    cm = _compile(model, (torch.randn(300, 40),), min_weight_numel=0, force_format="coo")
    assert cm.report().layers[0].format == "coo"
    _check(cm, model, torch.randn(300, 40))
    _check(cm, model, torch.randn(300, 2))


def test_dense_row_scaling_stays_an_elementwise_multiply():
    model = zoo.RowScale(torch.randn(64))
    cm = _compile(model, (torch.randn(64, 8),), min_weight_numel=0)
    assert cm.report().layers == [] and "mul" in cm.report().torch_ops


def test_masked_reductions():
    model = zoo.MaskedReduce(S(96, 80, 0.03, 7))
    cm = _compile(model, (torch.randn(4, 96, 80),))
    assert [r.format for r in cm.report().layers] == ["coo", "coo", "coo"]
    assert "sum" not in cm.report().torch_ops
    _check(cm, model, torch.randn(4, 96, 80))
    _check(cm, model, torch.randn(1, 96, 80))


@settings(max_examples=10, deadline=None)
@given(m=st.sampled_from([16, 40]), k=st.sampled_from([24, 33]), n=st.sampled_from([1, 5, 16]),
       batch=st.sampled_from([(), (2,)]), density=st.floats(0.02, 0.7), fmt=st.sampled_from(["csr", "coo"]),
       seed=st.integers(0, 10_000))
def test_left_module_matches_matmul(m, k, n, batch, density, fmt, seed):
    a = random_weight(m, k, density, seed)
    h = torch.randn(*batch, k, n, generator=torch.Generator().manual_seed(seed))
    res = torch.randn(*batch, m, n)
    left = SparseLeft("A", registry.get_format(fmt), a, None, None, True, threads=2)
    assert_close(left(h, res), a @ h + res)


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 30), k=st.integers(1, 9), density=st.floats(0.0, 1.0),
       dims=st.sampled_from([(-1,), (-2,), (-2, -1)]), keep=st.booleans(), seed=st.integers(0, 10_000))
def test_gather_kernels_match_dense(m, n, k, density, dims, keep, seed):
    s = random_weight(m, n, density, seed)
    g = torch.Generator().manual_seed(seed)
    x, b = torch.randn(3, m, k, generator=g), torch.randn(k, n, generator=g)
    assert_close(SparseSDDMM("S", s)(x, b), s * (x @ b))
    xs = torch.randn(2, m, n, generator=g)
    assert_close(SparseMaskedSum("S", s, dims, keep)(xs), (s * xs).sum(dims, keepdim=keep))
