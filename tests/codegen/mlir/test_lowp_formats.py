"""bf16/fp16 BSR, N:M and COO layers against dense torch: native 16-bit kernels, no f32 casts around them.

BSR runs the hand kernel in the dtype (bf16 on an AVX512-BF16 host: vdpbf16ps on pairs of block columns;
otherwise, and for fp16, widened loads and f32 FMAs); N:M and COO are packed as CSR and run CSR's 16-bit
kernels. The reference is torch's dense linear in float32 on the same 16-bit weights and inputs, rounded
once to the dtype; outputs start as NaN (conftest), so an element never written fails.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import knobs, sparse_compile
from sparsec.codegen.mlir import emit_bsrvec, jit
from sparsec.codegen.spec import KernelSpec
from sparsec.formats import registry
from sparsec.formats.bsr import BSR
from sparsec.formats.facts import compute_facts
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.codegen.mlir.test_lowp_kernels import assert_close_lowp
from tests.conftest import random_weight, reference

DTYPES = [torch.bfloat16, torch.float16]
KERNEL = {torch.bfloat16: "bf16", torch.float16: "f16"}
#: block shapes: the registered squares, the paired path's edges (8 lanes, 2 groups, a looped 64-wide block),
#: odd widths (no pairs: widened FMAs) and heights below a register
BLOCKS = [(8, 8), (16, 16), (32, 32), (16, 8), (8, 2), (32, 4), (64, 64), (16, 1), (4, 4), (2, 2), (1, 1)]


def _run(layer, x, r):
    with torch.no_grad():
        return layer(x, r) if r is not None else layer(x)


def _case(dtype, rows, cols, n, bias, residual, seed):
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, cols, generator=g).to(dtype)
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(n, rows, generator=g).to(dtype) if residual else None
    return x, b, r


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    block=st.sampled_from(BLOCKS),
    rows=st.integers(1, 70),
    cols=st.integers(1, 130),
    n=st.sampled_from([1, 2, 3, 7, 13, 64]),
    density=st.sampled_from([0.0, 0.3, 1.0]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_16bit_bsr_matches_dense(dtype, block, rows, cols, n, density, bias, act, residual, threads, seed):
    bh, bw = block
    w = random_weight(rows, cols, density, seed).to(dtype)
    x, b, r = _case(dtype, rows, cols, n, bias, residual, seed)
    with knobs.scope(bsr_widened_16bit=True):  # the widened kernel too (by default it gives way to the casts)
        layer = SparseLinear("t", BSR(bh, bw), w, b, act, residual, threads=threads)
    assert layer.kernel_dtype == KERNEL[dtype] and layer.io_dtype == dtype and layer.bsr_natural
    assert layer.bsr_pairs == emit_bsrvec.pairs_layout(KERNEL[dtype], bh, bw)
    got = _run(layer, x, r)
    want = reference(x.float(), w.float(), b, act, r.float() if r is not None else None).to(dtype)
    assert_close_lowp(got, want, dtype)


@pytest.mark.parametrize("block", [(16, 16), (8, 8), (32, 32)])
def test_bf16_bsr_uses_vdpbf16ps_where_the_host_has_it(block):
    """The paired kernel's source calls the vdpbf16ps intrinsic; its machine code holds the instruction."""
    bh, bw = block
    w = random_weight(64, 64, 0.5, 0).to(torch.bfloat16)
    layer = SparseLinear("t", BSR(bh, bw), w, None, None, False)
    (kern,) = layer.kernels(9)
    if not emit_bsrvec.host_has_bf16_dot():
        assert not layer.bsr_pairs and "dpbf16ps" not in kern.mlir
        return
    assert layer.bsr_pairs and kern.spec.block_pairs
    assert "llvm.x86.avx512bf16.dpbf16ps" in kern.mlir


def test_bf16_bsr_without_avx512_bf16_widens_and_refuses_pairs(monkeypatch):
    """A host without AVX512-BF16 runs the widened-FMA kernel (transposed blocks) and refuses the paired one."""
    monkeypatch.setattr(emit_bsrvec, "host_has_bf16_dot", lambda: False)
    w = random_weight(48, 80, 0.4, 3).to(torch.bfloat16)
    x = torch.randn(5, 80).to(torch.bfloat16)
    default = SparseLinear("d", registry.get_format("bsr16x16"), w, None, "gelu", False)
    assert default.kernel_dtype == "f32" and default.io_dtype == torch.float32  # measured faster than widening
    with knobs.scope(bsr_widened_16bit=True):
        layer = SparseLinear("t", registry.get_format("bsr16x16"), w, None, "gelu", False)
    assert layer.kernel_dtype == "bf16" and not layer.bsr_pairs
    (kern,) = layer.kernels(5)
    assert "dpbf16ps" not in kern.mlir
    assert_close_lowp(_run(layer, x, None), reference(x.float(), w.float(), None, "gelu").to(torch.bfloat16),
                      torch.bfloat16)
    spec = KernelSpec("bsr16x16", registry.get_format("bsr16x16").level_map, 16, 16, 4, form="natural",
                      dtype="bf16", block_pairs=True)
    with pytest.raises(NotImplementedError, match="AVX512-BF16"):
        emit_bsrvec.emit_bsrvec_kernel(spec)


def test_block_pairs_spec_is_checked():
    lmap = registry.get_format("bsr16x16").level_map
    with pytest.raises(ValueError, match="block_pairs"):
        KernelSpec("bsr16x16", lmap, 16, 16, 4, form="natural", dtype="f16", block_pairs=True)
    odd = BSR(16, 3)
    with pytest.raises(ValueError, match="even width"):
        emit_bsrvec.emit_bsrvec_kernel(KernelSpec("b", odd.level_map, 16, 18, 4, form="natural", dtype="bf16",
                                                  block_pairs=True))


def test_paired_layer_saved_here_loads_on_a_host_without_avx512_bf16(monkeypatch):
    """A pickled paired layer re-derives the transposed layout where the paired kernel cannot run."""
    w = random_weight(32, 48, 0.5, 1).to(torch.bfloat16)
    x = torch.randn(3, 48).to(torch.bfloat16)
    layer = SparseLinear("t", registry.get_format("bsr16x16"), w, torch.randn(32), "relu", False)
    want = _run(layer, x, None)
    saved = pickle.dumps(layer)
    monkeypatch.setattr(emit_bsrvec, "host_has_bf16_dot", lambda: False)
    jit.clear_cache()
    loaded = pickle.loads(saved)
    assert not loaded.bsr_pairs
    assert_close_lowp(_run(loaded, x, None), want, torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_16bit_bsr_runs_natively_only_where_measured_faster(dtype):
    """Default: bf16 with vdpbf16ps in the dtype; fp16 (widened FMAs) the f32 kernel between casts."""
    w = random_weight(32, 32, 0.5, 0, "block16").to(dtype)
    layer = SparseLinear("t", registry.get_format("bsr16x16"), w, None, None, False)
    native = emit_bsrvec.pairs_layout(KERNEL[dtype], 16, 16)
    assert native == (dtype == torch.bfloat16 and emit_bsrvec.host_has_bf16_dot())
    assert layer.kernel_dtype == (KERNEL[dtype] if native else "f32")
    x = torch.randn(3, 32).to(dtype)
    assert_close_lowp(_run(layer, x, None), reference(x.float(), w.float()).to(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("widened", [False, True])
def test_16bit_rounding_of_bsr_is_nearest_even_and_keeps_specials(dtype, widened):
    """An identity weight returns the input exactly; inf and NaN pass through; one rounding of the f32 sum."""
    with knobs.scope(bsr_widened_16bit=widened):
        _check_rounding(dtype)


def _check_rounding(dtype):
    w = torch.eye(16, dtype=dtype)
    x = torch.randn(4, 16).to(dtype)
    x[0, 0], x[1, 1], x[2, 2] = float("inf"), float("-inf"), float("nan")
    got = _run(SparseLinear("t", registry.get_format("bsr16x16"), w, None, None, False), x, None)
    assert got[0, 0] == float("inf") and got[1, 1] == float("-inf") and torch.isnan(got[2, 2])
    finite = torch.isfinite(x).all(dim=1)
    assert torch.equal(got[finite], x[finite])
    w2 = torch.ones(16, 64, dtype=dtype)
    x2 = (torch.rand(3, 64) + 1).to(dtype)
    got2 = _run(SparseLinear("s", registry.get_format("bsr16x16"), w2, None, None, False), x2, None)
    assert torch.equal(got2, x2.float().sum(1, keepdim=True).expand(3, 16).to(dtype))


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    fmt=st.sampled_from(["nm2:4", "nm1:4", "nm4:8", "coo"]),
    rows=st.integers(1, 60),
    cols=st.integers(1, 120),
    n=st.sampled_from([1, 2, 3, 17, 65]),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 1000),
)
def test_16bit_nm_and_coo_run_csr_kernels(dtype, fmt, rows, cols, n, density, bias, act, residual, threads, seed):
    """N:M and COO weights of a 16-bit layer are packed as CSR (their exact nonzeros) and run in the dtype."""
    f = registry.get_format(fmt)
    pattern = fmt if fmt.startswith("nm") else "unstructured"
    w = random_weight(rows, cols, density, seed, pattern).to(dtype)
    if f.accepts(compute_facts(w.float())) is not None:
        return
    x, b, r = _case(dtype, rows, cols, n, bias, residual, seed)
    layer = SparseLinear("t", f, w, b, act, residual, threads=threads)
    assert layer.fmt.label == "csr" and layer.compiled_format == fmt
    assert layer.kernel_dtype == KERNEL[dtype] and layer.io_dtype == dtype
    assert layer.stored == int((w != 0).sum())
    assert f"format={fmt} (as csr)" in repr(layer)
    got = _run(layer, x, r)
    want = reference(x.float(), w.float(), b, act, r.float() if r is not None else None).to(dtype)
    assert_close_lowp(got, want, dtype)


def test_float32_nm_and_coo_keep_their_own_kernels():
    for fmt, pattern in (("nm2:4", "nm2:4"), ("coo", "unstructured")):
        w = random_weight(16, 32, 0.5, 0, pattern)
        layer = SparseLinear("t", registry.get_format(fmt), w, None, None, False)
        assert layer.fmt.label == fmt and layer.kernel_dtype == "f32"
        x = torch.randn(3, 32)
        assert torch.allclose(_run(layer, x, None), x @ w.t(), atol=1e-5)


def _model(dtype: torch.dtype, pattern: str, density: float) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 128))
    with torch.no_grad():
        model[0].weight.copy_(random_weight(256, 128, density, 0, pattern))
        model[2].weight.copy_(random_weight(128, 256, density, 1, pattern))
    return model.to(dtype).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("fmt", "pattern", "density"),
                         [("bsr16x16", "block16", 0.2), ("bsr8x8", "block8", 0.3), ("nm2:4", "nm2:4", 0.5),
                          ("coo", "unstructured", 0.05)])
def test_16bit_model_through_each_format_keeps_its_dtype(dtype, fmt, pattern, density):
    """sparse_compile with the format forced: every layer in it, run by a 16-bit kernel, output in the dtype."""
    torch.manual_seed(0)
    model = _model(dtype, pattern, density)
    x = torch.randn(8, 128).to(dtype)
    compiled = sparse_compile(model, (x,), force_format=fmt, calibrate=False)
    fmts = [layer.format for layer in compiled.report().layers]
    assert fmts == [fmt, fmt], fmts
    mods = [m for m in compiled.graph_module.modules() if isinstance(m, SparseLinear)]
    native = not fmt.startswith("bsr") or emit_bsrvec.pairs_layout(KERNEL[dtype], int(fmt[3:].split("x")[0]),
                                                                       int(fmt.split("x")[1]))
    kd = KERNEL[dtype] if native else "f32"  # fp16 BSR: the f32 kernel between casts (measured faster)
    assert len(mods) == 2 and all(m.kernel_dtype == kd and m.io_dtype == (dtype if native else torch.float32)
                                  for m in mods)
    with torch.no_grad():
        got = compiled(x)
        want = model.float()(x.float()).to(dtype)
    assert_close_lowp(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_16bit_bsr_with_the_sparsifier_kernel_runs_between_casts(dtype):
    """Knob bsr_vector_kernel off: no 16-bit kernel, so the f32 sparsifier kernel runs between casts."""
    w = random_weight(32, 48, 0.5, 0, "block16").to(dtype)
    x = torch.randn(5, 48).to(dtype)
    with knobs.scope(bsr_vector_kernel=False):
        layer = SparseLinear("t", registry.get_format("bsr16x16"), w, None, "relu", False)
        assert layer.kernel_dtype == "f32" and layer.io_dtype == torch.float32
        got = _run(layer, x, None)
    assert_close_lowp(got, reference(x.float(), w.float(), None, "relu").to(dtype), dtype)
