"""int8 layers (quantize="int8") against a dense integer reference and against fp32.

Exactness: with every row's largest magnitude at the quantizer's limit, the scales are exactly 1 and the
output is the int32 sum itself, which must equal ``Xq Wq^T`` computed in int64 (values at the +-127
extremes included: the CSR kernel sums pairs of products in 16 bits). The dequantizing epilogue (scales,
bias, activation, residual) is checked against the same formula in torch, and the whole layer against fp32
within a tolerance. Kernel outputs start as NaN (conftest), so an element never written fails.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import knobs, sparse_compile
from sparsec.errors import InputError
from sparsec.formats import registry
from sparsec.targets.cpu.int8_linear import (
    DENSE_XMAX,
    QMAX,
    Int8DenseLinear,
    Int8SparseLinear,
    quantize_rows,
    vnni_host,
)
from tests.conftest import reference

CSR = registry.get_format("csr")


def _int_matrix(rows: int, cols: int, density: float, qmax: int, seed: int, extremes: bool) -> torch.Tensor:
    """Integer values in [-qmax, qmax] (float32), each nonzero row holding +-qmax once (so its scale is 1)."""
    g = torch.Generator().manual_seed(seed)
    if extremes:
        m = (torch.randint(0, 2, (rows, cols), generator=g) * 2 - 1).float() * qmax
    else:
        m = torch.randint(-qmax, qmax + 1, (rows, cols), generator=g).float()
    m = m * (torch.rand(rows, cols, generator=g) < density)
    for r in range(rows):
        nz = m[r].nonzero()
        if len(nz):
            m[r, nz[0, 0]] = qmax
    return m


def _int_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.long() @ w.long().t()).float()


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 50),
    cols=st.integers(1, 70),
    n=st.sampled_from([1, 2, 5, 16, 29]),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    threads=st.sampled_from([1, 3]),
    extremes=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_int8_csr_sums_exactly_in_int32(rows, cols, n, density, threads, extremes, seed):
    w = _int_matrix(rows, cols, density, QMAX, seed, extremes)
    x = _int_matrix(n, cols, 1.0, QMAX, seed + 1, extremes)
    layer = Int8SparseLinear("t", CSR, w, None, None, False, threads)
    assert torch.equal(layer.weight_scale, torch.ones(rows))
    with torch.no_grad():
        got = layer(x)
    assert torch.equal(got, _int_reference(x, w)), (got - _int_reference(x, w)).abs().max()


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 60),
    n=st.sampled_from([1, 3, 16, 17, 21]),
    extremes=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_int8_dense_sums_exactly_in_int32(rows, cols, n, extremes, seed):
    """Small N keeps 8-bit activations (two exact 7-bit halves), larger N quantizes them to 7 bits; with
    VNNI (oneDNN's vpdpbusd does not saturate) every N keeps 8 bits, in one GEMM, also with knob int8_vnni
    off (the AVX2 path, exact on any host)."""
    w = _int_matrix(rows, cols, 1.0, QMAX, seed, extremes)
    qmax = _dense_xmax(n)
    x = _int_matrix(n, cols, 1.0, qmax, seed + 1, extremes)
    layer = Int8DenseLinear("d", w, None, None, False)
    xq, sx = quantize_rows(x, qmax)
    assert torch.equal(sx, torch.ones(n))
    x7 = _int_matrix(n, cols, 1.0, DENSE_XMAX, seed + 2, extremes)
    assert torch.equal(layer.int32_sums(x7.to(torch.int8)), _int_reference(x7, layer.weight_q))
    with torch.no_grad():
        assert torch.equal(layer(x), _int_reference(x, w))
        with knobs.scope(int8_vnni=False):
            xo = _int_matrix(n, cols, 1.0, _dense_xmax(n), seed + 3, extremes)
            assert torch.equal(layer(xo), _int_reference(xo, w))
    if vnni_host():
        x8 = _int_matrix(n, cols, 1.0, QMAX, seed + 4, extremes)
        assert torch.equal(layer.int32_sums(x8.to(torch.int8), 128), _int_reference(x8, layer.weight_q))


def _dense_xmax(n: int) -> int:
    return QMAX if vnni_host() or n <= knobs.get("int8_dense_split_max_n") else DENSE_XMAX


@settings(max_examples=30, deadline=None)
@given(
    dense=st.booleans(),
    rows=st.integers(1, 40),
    cols=st.integers(1, 60),
    n=st.sampled_from([1, 4, 17]),
    density=st.sampled_from([0.0, 0.2, 1.0]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu", "tanh"]),
    residual=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_int8_epilogue_dequantizes_and_matches_fp32(dense, rows, cols, n, density, bias, act, residual, seed):
    """The output is act(Xq Wq^T * sx * sw + b) + r to f32 rounding, and near fp32's."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    x = torch.randn(n, cols, generator=g)
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(n, rows, generator=g) if residual else None
    layer = (Int8DenseLinear("d", w, b, act, residual) if dense
             else Int8SparseLinear("s", CSR, w, b, act, residual, 2))
    with torch.no_grad():
        got = layer(x, r) if residual else layer(x)
    assert not torch.isnan(got).any(), "an output element was never written"
    xq, sx = quantize_rows(x, _dense_xmax(n) if dense else QMAX)
    wq, sw = quantize_rows(w)
    acc = _int_reference(xq, wq) * sx[:, None] * sw[None, :]
    want = reference(acc, torch.eye(rows), b, act, r)
    scale = want.abs().max().clamp_min(1.0)
    assert (got - want).abs().max() / scale <= 1e-5
    fp32 = reference(x, w, b, act, r)
    # per-token and per-channel rounding: each factor is off by at most half its step, so a product by
    # sw |x| / 2 + sx |w| / 2 + sx sw / 2; the activations' slopes stay below 1.2
    bound = (x.abs().sum(1, keepdim=True) * sw[None, :] / 2 + sx[:, None] * (w.abs().sum(1)[None, :]) / 2
             + sx[:, None] * sw[None, :] * cols / 2)
    assert ((got - fp32).abs() <= bound * 1.2 + 1e-4 * scale).all()


def test_int8_bert_shape_error_is_small():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(768, 768, generator=g) * (torch.rand(768, 768, generator=g) < 0.1) * 0.05
    x = torch.randn(128, 768, generator=g)
    for layer in (Int8SparseLinear("s", CSR, w, None, "gelu", False, 2), Int8DenseLinear("d", w, None, "gelu", False)):
        with torch.no_grad():
            got = layer(x)
        want = reference(x, w, None, "gelu")
        assert (got - want).abs().max() / want.abs().max() < 0.02, type(layer).__name__


def test_int8_layers_pickle_and_reject_bad_inputs():
    w = torch.randn(32, 48) * (torch.rand(32, 48) < 0.3)
    x = torch.randn(5, 48)
    for layer in (Int8SparseLinear("s", CSR, w, None, None, False, 2), Int8DenseLinear("d", w, None, None, False)):
        with torch.no_grad():
            want = layer(x)
            assert torch.equal(pickle.loads(pickle.dumps(layer))(x), want)
        with pytest.raises(InputError, match="float32"):
            layer(x.double())
        with pytest.raises(NotImplementedError, match="gradients"):
            layer(x.requires_grad_())
        x = x.detach()
    with pytest.raises(NotImplementedError, match="CSR"):
        Int8SparseLinear("c", registry.get_format("coo"), w, None, None, False)
    with pytest.raises(NotImplementedError, match="float32"):
        Int8DenseLinear("h", w.bfloat16(), None, None, False)


class _MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(128, 256)
        self.b = torch.nn.Linear(256, 128)
        self.c = torch.nn.Linear(128, 64)

    def forward(self, x):
        return self.c(self.b(torch.nn.functional.gelu(self.a(x))) + x)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = _MLP().eval()
    with torch.no_grad():
        for lin in (m.a, m.b):
            lin.weight.mul_(torch.rand_like(lin.weight) < 0.1)
    return m


def test_quantize_int8_compiles_sparse_and_dense_layers_and_reports_errors():
    m, x = _model(), torch.randn(32, 128)
    cm = sparse_compile(m, (x,), quantize="int8", calibrate=False, force_format="csr")
    mods = {type(mod).__name__ for mod in cm._primary.module.modules()}
    assert {"Int8SparseLinear"} <= mods
    rep = cm.report()
    assert all(r.dtype == "int8" and r.quant_error is not None and r.quant_error < 0.05 for r in rep.layers)
    assert "int8 " in str(rep) and "q err" in str(rep)
    with torch.no_grad():
        got, want = cm(x), m(x)
        assert (got - want).abs().max() / want.abs().max() < 0.03
        assert cm(torch.randn(7, 128)).shape == (7, 64)  # another N
    dense = sparse_compile(m, (x,), quantize="int8", calibrate=False, formats=())
    assert "Int8DenseLinear" in {type(mod).__name__ for mod in dense._primary.module.modules()}
    with torch.no_grad():
        assert (dense(x) - want).abs().max() / want.abs().max() < 0.03


def test_quantize_rejects_bad_values_targets_and_dtypes():
    m, x = _model(), torch.randn(4, 128)
    with pytest.raises(ValueError, match="quantize must be None or 'int8'"):
        sparse_compile(m, (x,), quantize="int4")
    with pytest.raises(ValueError, match="quantize"):
        sparse_compile(m, (x,), quantize=True)
    with pytest.raises(NotImplementedError, match="CPU only"):
        sparse_compile(m, (x,), quantize="int8", target="interpret")
    with pytest.raises(NotImplementedError, match="float32 models only"):
        sparse_compile(_model().bfloat16(), (x.bfloat16(),), quantize="int8", calibrate=False)
    with pytest.raises(NotImplementedError, match="float32 models only"):
        sparse_compile(_model().double(), (x.double(),), quantize="int8", calibrate=False)
    with pytest.raises(NotImplementedError, match="CPU only"):
        sparse_compile(m, (x,), quantize="int8", target="gpu")


def test_quantize_int8_refuses_gradients():
    """Forward only: an input that needs a gradient, or backward in train mode, raises a clear error."""
    from sparsec.errors import UnsupportedError

    m, x = _model(), torch.randn(8, 128)
    cm = sparse_compile(m, (x,), quantize="int8", calibrate=False, force_format="csr")
    with pytest.raises(NotImplementedError, match="gradients through int8 layers"):
        cm(x.clone().requires_grad_())
    cm.train()
    with pytest.raises(UnsupportedError, match="int8"):
        cm(x).sum().backward()


def test_quantize_keeps_layers_above_the_error_bound_in_float32():
    """The benchmark's BERT (2 layers, 90%): the pooler (one token, tanh) measures ~2.5% alone and takes
    the output past 2%; the default bound keeps it float32 and says so in the report."""
    from sparsec.bench.bert import bert_model
    from sparsec.bench.e2e import max_rel_error
    from sparsec.demo import prune_linears

    model, inputs = bert_model(2)
    prune_linears(model.encoder, 0.9)
    with torch.no_grad():
        want = model(*inputs)
    errs = {}
    for bound in (None, 0.015):
        cm = sparse_compile(model, inputs, quantize="int8", calibrate=False, threads=1, quantize_max_error=bound)
        with torch.no_grad():
            errs[bound] = max_rel_error(cm(*inputs), want)
        rep = cm.report()
        for r in rep.layers:
            assert r.quant_error is not None
            kept = bound is not None and r.quant_error > bound
            assert r.dtype == ("float32" if kept else "int8"), (r.name, r.quant_error)
            assert ("kept float32: its int8 error" in r.reason) == kept
    assert errs[None] > 0.02 >= errs[0.015], errs  # the fallback is what brings it under 2%
    assert "pooler.dense" in str(rep) and "float32 (int8 " in str(rep)
    assert "Float32Linear" in {type(mod).__name__ for mod in cm._primary.module.modules()}


def test_quantize_max_error_keeps_sparse_and_fused_layers_exact_in_float32():
    """A bound below every layer's error keeps them all float32 (CSR SparseLinear, dense Float32Linear),
    fused epilogues included: the output is fp32's."""
    m, x = _model(), torch.randn(32, 128)
    for fmt in ("csr", None):
        cm = sparse_compile(m, (x,), quantize="int8", calibrate=False, force_format=fmt, quantize_max_error=1e-9)
        assert all(r.dtype == "float32" and r.quant_error > 0 for r in cm.report().layers)
        with torch.no_grad():
            assert torch.allclose(cm(x), m(x), rtol=1e-4, atol=1e-4)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="quantize_max_error"):
            sparse_compile(m, (x,), quantize="int8", quantize_max_error=bad)
