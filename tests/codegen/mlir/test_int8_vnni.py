"""The AVX512-VNNI int8 CSR kernel and its input pass against integer references computed in torch (int64).

With every row's largest magnitude at 127 the scales are exactly 1, so the layer's output is the integer sum
itself and must equal ``Xq Wq^T`` in int64, at +-127 extremes, odd N (16-blocks, padded 64-blocks, masked
tails), rows and columns, empty rows and several slabs. The input pass must reproduce ``quantize_rows`` bit
for bit, at the kernel's permuted N positions. Kernel outputs start as NaN (conftest), so an element never
written fails. The kernel needs avx512_vnni + avx512bw: on other hosts the layer tests check that the
16-bit-lane kernel runs instead (the layout helpers are tested everywhere).
"""

from __future__ import annotations

import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import knobs
from sparsec.codegen.mlir import emit_int8_quant, emit_int8_quant_rows, emit_int8_quant_t, emit_int8_vnni
from sparsec.codegen.mlir.jit import ArgRef, compile_kernel, torch_descriptor
from sparsec.formats import registry
from sparsec.targets.cpu.int8_linear import QMAX, Int8DenseLinear, Int8SparseLinear, quantize_rows, vnni_host
from tests.conftest import reference

CSR = registry.get_format("csr")
VNNI = emit_int8_vnni.available()
needs_vnni = pytest.mark.skipif(not VNNI, reason="this host has no AVX512-VNNI/BW (the kernel cannot run here)")
#: N values that hit every layout case: 1 (the 16-bit-lane kernel), 16-blocks, whole, padded and mixed 64-blocks
ODD_N = [1, 2, 3, 5, 15, 16, 17, 31, 33, 63, 64, 65, 80, 81, 100, 129]


def _int_matrix(rows: int, cols: int, density: float, seed: int, extremes: bool) -> torch.Tensor:
    """Integers in [-127, 127] (float32), each nonzero row holding 127 once (its scale is exactly 1)."""
    g = torch.Generator().manual_seed(seed)
    if extremes:
        m = (torch.randint(0, 2, (rows, cols), generator=g) * 2 - 1).float() * QMAX
    else:
        m = torch.randint(-QMAX, QMAX + 1, (rows, cols), generator=g).float()
    m = m * (torch.rand(rows, cols, generator=g) < density)
    for r in range(rows):
        nz = m[r].nonzero()
        if len(nz):
            m[r, nz[0, 0]] = QMAX
    return m


def _vnni_ran(layer: Int8SparseLinear, n: int) -> bool:
    return n in layer._vnni_kernels and all(isinstance(k.spec, emit_int8_vnni.VnniSpec) for k in layer._vnni_kernels[n])


def test_pad_quads_keeps_the_matrix_and_pads_rows_to_multiples_of_four():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(13, 9, generator=g) * (torch.rand(13, 9, generator=g) < 0.4)
    w[3] = 0  # an empty row
    packed = CSR.pack(w)
    pos, crd, vals = emit_int8_vnni.pad_quads(*(packed.buffers[k] for k in ("pos1", "crd1", "values")))
    assert pos.dtype == np.int32 and (np.diff(pos) % 4 == 0).all()
    assert (np.diff(pos) - np.diff(packed.buffers["pos1"]) < 4).all()  # at most 3 added per row
    dense = np.zeros((13, 9), dtype=np.float32)
    for r in range(13):
        np.add.at(dense[r], crd[pos[r] : pos[r + 1]], vals[pos[r] : pos[r + 1]])
    assert np.array_equal(dense, w.numpy())
    assert ((crd >= 0) & (crd < 9)).all()


def test_block_order_is_the_unpack_permutation():
    for n_pad in (16, 64, 80, 128, 144):
        order = emit_int8_vnni.block_order(n_pad)
        assert sorted(order.tolist()) == list(range(n_pad))
        assert np.array_equal(order[order], np.arange(n_pad))  # an involution: its own inverse
        # register k, i32 lane 4L + d reads position 16L + 4k + d: it must hold token 16k + 4L + d
        for k in range(4 if n_pad >= 64 else 0):
            for lane in range(4):
                for d in range(4):
                    assert order[16 * lane + 4 * k + d] == 16 * k + 4 * lane + d
        if n_pad % 64:
            assert np.array_equal(order[-16:], np.arange(n_pad - 16, n_pad))
    assert [emit_int8_vnni.padded_n(n) for n in (1, 16, 17, 64, 65, 80, 81, 128)] == [16, 16, 64, 64, 80, 80, 128, 128]


def test_specs_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        emit_int8_vnni.VnniSpec(0, 4, 16)
    with pytest.raises(ValueError, match="activation"):
        emit_int8_vnni.VnniSpec(4, 4, 16, activation="elu")
    with pytest.raises(ValueError, match="index_bits"):
        emit_int8_vnni.VnniSpec(4, 4, 16, index_bits=8)
    with pytest.raises(ValueError, match="shape"):
        emit_int8_quant.QuantSpec(4, 8, 7)


def test_without_vnni_the_16bit_kernel_runs_and_is_exact():
    """Knob int8_vnni off (a host without VNNI): no quads, the 16-bit-lane kernel, the same exact sums."""
    w, x = _int_matrix(20, 33, 0.3, 0, False), _int_matrix(17, 33, 1.0, 1, False)
    with knobs.scope(int8_vnni=False), torch.no_grad():
        layer = Int8SparseLinear("o", CSR, w, None, None, False, 2)
        assert not layer.quads and not vnni_host()
        assert torch.equal(layer(x), (x.long() @ w.long().t()).float())
        assert not layer._vnni_kernels


@needs_vnni
@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 45),
    cols=st.integers(1, 80),
    n=st.sampled_from(ODD_N),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    threads=st.sampled_from([1, 3]),
    extremes=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_vnni_sums_exactly_in_int32(rows, cols, n, density, threads, extremes, seed):
    w = _int_matrix(rows, cols, density, seed, extremes)
    x = _int_matrix(n, cols, 1.0, seed + 1, extremes)
    layer = Int8SparseLinear("t", CSR, w, None, None, False, threads)
    assert layer.quads and torch.equal(layer.weight_scale, torch.ones(rows))
    with torch.no_grad():
        got = layer(x)
        # the input as a previous CSR layer returns it: a transposed view (the X^T input pass)
        got_t = layer(x.t().contiguous().t())
    want = (x.long() @ w.long().t()).float()  # int64: no overflow in the reference
    assert torch.equal(got, want), (got - want).abs().max()
    assert torch.equal(got_t, want), (got_t - want).abs().max()
    assert _vnni_ran(layer, n) == (n >= knobs.get("int8_vnni_min_n"))


@needs_vnni
@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 70),
    n=st.sampled_from(ODD_N[1:]),
    density=st.sampled_from([0.0, 0.1, 0.6]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu", "tanh"]),
    residual=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_vnni_epilogue_dequantizes_bias_activation_residual(rows, cols, n, density, bias, act, residual, seed):
    """act((Xq Wq^T) * sx * sw + b) + r to f32 rounding, the integer part from int64 (float64 scaling)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    x = torch.randn(n, cols, generator=g) * 3
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(n, rows, generator=g) if residual else None
    layer = Int8SparseLinear("s", CSR, w, b, act, residual, 2)
    with torch.no_grad():
        got = layer(x, r) if residual else layer(x)
    assert _vnni_ran(layer, n)
    assert not torch.isnan(got).any(), "an output element was never written"
    xq, sx = quantize_rows(x)
    wq, sw = quantize_rows(w)
    acc = ((xq.long() @ wq.long().t()).double() * sx.double()[:, None] * sw.double()[None, :]).float()
    want = reference(acc, torch.eye(rows), b, act, r)
    assert (got - want).abs().max() / want.abs().max().clamp_min(1.0) <= 1e-5


@needs_vnni
@settings(max_examples=30, deadline=None)
@given(
    n=st.sampled_from(ODD_N),
    in_features=st.integers(1, 90),
    extra_cols=st.sampled_from([0, 3]),
    ties=st.booleans(),
    zero_token=st.booleans(),
    transposed=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_input_pass_matches_quantize_rows_bit_for_bit(n, in_features, extra_cols, ties, zero_token, transposed,
                                                      seed):
    """sx and every byte of Xu^T at the kernel's N positions: round half to even, clamping, zero tokens;
    from X [n, in] (emit_int8_quant) and from X^T [in, n] (emit_int8_quant_t)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g) * 10
    if ties:  # values at exact .5 steps of the scale: rounding ties
        x = torch.randint(-254, 255, (n, in_features), generator=g).float() / 2
        x[:, 0] = 127.0
    if zero_token:
        x[n // 2] = 0
    cols = in_features + extra_cols
    n_pad = emit_int8_vnni.padded_n(n)
    sx, inv = torch.full((n,), float("nan")), torch.empty(n)
    xt = torch.zeros((cols, n_pad), dtype=torch.int8)
    spec = (emit_int8_quant_t.QuantTSpec if transposed else emit_int8_quant.QuantSpec)(n, in_features, cols)
    xin = x.t().contiguous() if transposed else x
    kern = compile_kernel(spec)
    kern.call_refs([ArgRef(torch_descriptor(xin)), ArgRef(torch_descriptor(sx)), ArgRef(torch_descriptor(inv)),
                    ArgRef(torch_descriptor(xt.view(torch.int32).reshape(-1)))])
    xq, scale = quantize_rows(x)
    assert torch.equal(sx, scale)
    order = torch.from_numpy(emit_int8_vnni.block_order(n_pad))
    at = torch.nonzero(order < n).flatten()  # the positions that hold a token
    got = xt[:in_features, at].view(torch.uint8).long()
    want = xq.long().t()[:, order[at]] + 128
    assert torch.equal(got, want)


@needs_vnni
def test_vnni_layer_pickles_and_falls_back_when_the_knob_turns_off():
    """A quad-padded layer is still CSR: with the knob off after packing, the 16-bit kernel gives the same sums."""
    w, x = _int_matrix(24, 40, 0.2, 3, False), _int_matrix(21, 40, 1.0, 4, False)
    layer = Int8SparseLinear("p", CSR, w, None, "relu", False, 2)
    with torch.no_grad():
        want = layer(x)
        assert _vnni_ran(layer, 21)
        assert torch.equal(pickle.loads(pickle.dumps(layer))(x), want)
        with knobs.scope(int8_vnni=False):
            assert torch.equal(layer(x), want)
        assert torch.equal(want, torch.relu((x.long() @ w.long().t()).float()))


@needs_vnni
def test_vnni_kernel_machine_code_uses_vpdpbusd_on_zmm(tmp_path):
    """The JIT targets this host: the object code multiplies with vpdpbusd on 512-bit registers."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed")
    from torch_mlir import execution_engine, ir

    from sparsec.codegen.mlir.pipeline import run_pipeline

    spec = emit_int8_vnni.VnniSpec(64, 256, 128, index_bits=16)
    source, pipeline = spec.emit_mlir()
    with ir.Context(), ir.Location.unknown():
        module = ir.Module.parse(source)
        run_pipeline(module, pipeline, source, spec.name)
        engine = execution_engine.ExecutionEngine(module, opt_level=3, shared_libs=[])
        engine.dump_to_object_file(str(tmp_path / "k.o"))
    asm = subprocess.run([objdump, "-d", str(tmp_path / "k.o")], capture_output=True, text=True, check=True).stdout
    dp = [ln for ln in asm.splitlines() if "vpdpbusd" in ln]
    assert dp and all("zmm" in ln for ln in dp)
    assert "vpunpcklbw" in asm and "vpunpckhwd" in asm


def test_select_prices_int8_with_the_calibrated_rates():
    """The int8/f32 time ratio is the measured rates' ratio when calibration took them, else the knobs'."""
    import dataclasses
    import time

    from sparsec.formats.cost import DEFAULT_MACHINE
    from sparsec.passes.select import int8_time_ratio
    from sparsec.targets.cpu import calibrate

    m = dataclasses.replace(DEFAULT_MACHINE, sparse_flops=60e9, int8_sparse_flops=120e9, dense_flops=100e9,
                            int8_dense_flops=150e9)
    assert int8_time_ratio(False, m) == pytest.approx(0.5)
    assert int8_time_ratio(True, m) == pytest.approx(100 / 150)
    assert int8_time_ratio(True, DEFAULT_MACHINE) == pytest.approx(1 / knobs.get("int8_dense_speedup"))
    want = knobs.get("int8_vnni_csr_slowdown" if vnni_host() else "int8_csr_slowdown")
    assert int8_time_ratio(False, DEFAULT_MACHINE) == want
    probes = calibrate._probes_int8(torch.Generator().manual_seed(0), torch.randn(64, 64) * (torch.rand(64, 64) < 0.1))
    assert set(probes) == {"int8_sparse_flops", "int8_dense_flops"}
    for fn, work in probes.values():
        t = time.perf_counter()
        fn()
        assert work > 0 and time.perf_counter() - t < 5


@needs_vnni
def test_vnni_with_32bit_column_indices_and_old_pickles():
    """More than 32767 columns: 32-bit indices; a layer pickled without ``quads`` (before the VNNI kernel)
    loads as plain CSR and runs the 16-bit-lane kernel."""
    w, x = _int_matrix(6, 40_000, 0.002, 5, True), _int_matrix(18, 40_000, 1.0, 6, True)
    layer = Int8SparseLinear("w", CSR, w, None, None, False, 1)
    assert layer.index_bits == 32
    want = (x.long() @ w.long().t()).float()
    with torch.no_grad():
        assert torch.equal(layer(x), want) and _vnni_ran(layer, 18)
    with knobs.scope(int8_vnni=False):
        old = Int8SparseLinear("o", CSR, w, None, None, False, 1)
    state = old.__getstate__()
    del state["quads"]  # what an earlier version saved
    loaded = Int8SparseLinear.__new__(Int8SparseLinear)
    loaded.__setstate__(state)
    with torch.no_grad():
        assert torch.equal(loaded(x), want) and not loaded._vnni_kernels


def test_rows_too_wide_for_exact_int32_sums_are_refused(monkeypatch):
    from sparsec.targets.cpu import int8_linear

    monkeypatch.setattr(int8_linear, "ROW_NONZERO_LIMIT", 5)
    with pytest.raises(NotImplementedError, match="exact in int32"):
        Int8SparseLinear("x", CSR, torch.ones(3, 8), None, None, False)


@needs_vnni
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), in_features=st.integers(1, 90), ties=st.booleans(), seed=st.integers(0, 10_000))
def test_dense_input_pass_matches_quantize_rows_bit_for_bit(n, in_features, ties, seed):
    """The dense layer's u8 input (emit_int8_quant_rows) is quantize_rows' xq + 128, its scales sx."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=g) * 7
    if ties:
        x = torch.randint(-254, 255, (n, in_features), generator=g).float() / 2
        x[:, 0] = 127.0
    x[n // 2] = 0
    layer = Int8DenseLinear("d", torch.randn(3, in_features, generator=g), None, None, False)
    xu, sx = layer._quantize_u8(x.t().contiguous().t())  # a transposed view: copied to rows first
    xq, scale = quantize_rows(x)
    assert torch.equal(sx, scale)
    assert torch.equal(xu.long(), xq.long() + 128)
    assert isinstance(layer._quant[n].spec, emit_int8_quant_rows.QuantRowsSpec)


@needs_vnni
def test_prepare_compiles_the_kernels_and_both_input_passes():
    layer = Int8SparseLinear("p", CSR, _int_matrix(8, 24, 0.5, 7, False), None, None, False, 1)
    specs = {type(k.spec).__name__ for k in layer.prepare(20)}
    assert specs == {"VnniSpec", "QuantSpec", "QuantTSpec"}
    assert {type(k.spec).__name__ for k in layer.prepare(1)} == {"KernelSpec"}  # N = 1: the 16-bit-lane kernel
