"""The 16-bit bitmap and compact 2:4 formats (sparsec/formats/bitmap.py) against dense torch, per dtype.

The reference is torch's dense linear in float32 on the same 16-bit weights and inputs, rounded once to the
dtype; tolerances per dtype as for the 16-bit CSR kernels. Outputs start as NaN (conftest), so an element a
kernel never writes fails.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec import knobs, sparse_compile
from sparsec.codegen.mlir import emit_bitmap
from sparsec.errors import FormatError, InputError
from sparsec.formats import registry
from sparsec.formats.facts import compute_facts
from sparsec.targets.cpu.compact_linear import CompactLinear
from tests.codegen.mlir.test_lowp_kernels import assert_close_lowp
from tests.conftest import random_weight, reference

pytestmark = pytest.mark.skipif(not emit_bitmap.available(), reason="the bitmap kernels need x86-64 with SSSE3/AVX2/F16C")
DTYPES = [torch.bfloat16, torch.float16]


def _check(fmt: str, w, dtype, n, bias, act, residual, threads, seed, lead=()):
    g = torch.Generator().manual_seed(seed + 1)
    rows, cols = w.shape
    x = torch.randn(*lead, n, cols, generator=g).to(dtype)
    b = torch.randn(rows, generator=g) if bias else None
    r = torch.randn(*lead, n, rows, generator=g).to(dtype) if residual else None
    layer = CompactLinear("t", registry.get_format(fmt), w, b, act, residual, threads=threads)
    got = layer(x, r) if residual else layer(x)
    want = reference(x.float(), w.float(), b, act, r.float() if r is not None else None).to(dtype)
    assert_close_lowp(got, want, dtype)


@pytest.mark.parametrize("fmt", ["bitmap", "nm2:4c"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads,n,residual", [(2, 1, False), (3, 2, True), (5, 9, False)])
@pytest.mark.parametrize("omp_dispatch", [False, True])
def test_slabs_in_parallel_match_dense(fmt, dtype, threads, n, residual, omp_dispatch):
    """The slabs run concurrently (parallel_min_work=0) on libgomp's threads (omp_dispatch, the default:
    torch's spinning OpenMP workers would otherwise share the cores with a pool thread) or on the pool;
    more slabs than OpenMP threads too, the last slab zero-padded (rows not a multiple of 8)."""
    rows, cols = 8 * threads * 3 - 5, 72
    w = random_weight(rows, cols, 0.5, 7)
    if fmt == "nm2:4c":
        g = w.view(rows, -1, 4)
        g.scatter_(2, g.abs().argsort(dim=2)[:, :, :2], 0)
    with knobs.scope(omp_dispatch=omp_dispatch, parallel_min_work=0, poison_outputs=True):
        _check(fmt, w.to(dtype), dtype, n, True, "silu", residual, threads, 3)


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    rows=st.integers(1, 70),
    cols=st.integers(1, 120),
    n=st.sampled_from([1, 2, 3, 5, 8, 11, 19]),
    density=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 1000),
)
def test_bitmap_matches_dense(dtype, rows, cols, n, density, bias, act, residual, threads, seed):
    w = random_weight(rows, cols, density, seed).to(dtype)
    _check("bitmap", w, dtype, n, bias, act, residual, threads, seed)


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    rows=st.integers(1, 70),
    cols=st.integers(1, 120),
    n=st.sampled_from([1, 2, 3, 5, 8, 11, 19]),
    density=st.sampled_from([0.1, 0.3, 0.5]),
    bias=st.booleans(),
    act=st.sampled_from([None, "relu", "gelu", "silu"]),
    residual=st.booleans(),
    threads=st.sampled_from([1, 2, 3]),
    seed=st.integers(0, 1000),
)
def test_compact_2_4_matches_dense(dtype, rows, cols, n, density, bias, act, residual, threads, seed):
    w = random_weight(rows, cols, density, seed, "nm2:4").to(dtype)
    _check("nm2:4c", w, dtype, n, bias, act, residual, threads, seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_leading_dims_and_empty_input(dtype):
    w = random_weight(24, 40, 0.5, 3).to(dtype)
    _check("bitmap", w, dtype, 1, True, "gelu", True, 2, 3, lead=(2, 3))
    layer = CompactLinear("t", registry.get_format("bitmap"), w, None, None, False)
    assert layer(torch.zeros(0, 40, dtype=dtype)).shape == (0, 24)


@pytest.mark.parametrize("fmt,pattern", [("bitmap", "unstructured"), ("nm2:4c", "nm2:4")])
def test_pack_unpack_and_bytes_per_weight(fmt, pattern):
    """The buffers stand for the weight exactly; 1/8 + 2 d bytes per weight (2:4: 1.125)."""
    rows, cols = 64, 256
    w = random_weight(rows, cols, 0.5, 0, pattern).to(torch.bfloat16)
    f = registry.get_format(fmt)
    packed = f.pack(w)
    assert torch.equal(f.unpack(packed), w.float())
    value_bytes = 2 * (cols // 2 * rows if fmt == "nm2:4c" else int((w != 0).sum()))
    index_bytes = rows * cols // 8 + (0 if fmt == "nm2:4c" else 4 * rows)
    assert packed.nbytes == value_bytes + index_bytes + 16
    assert f.sparse_bytes(compute_facts(w)) == value_bytes + index_bytes
    if fmt == "nm2:4c":
        assert packed.nbytes / w.numel() < 1.13


def test_compact_2_4_pads_sparse_groups_and_rejects_dense_ones():
    w = torch.zeros(8, 16, dtype=torch.float16)
    w[0, 1] = 3.0  # a group with one nonzero stores one explicit zero
    f = registry.get_format("nm2:4c")
    packed = f.pack(w)
    assert packed.stored == 8 * 16 // 2 and torch.equal(f.unpack(packed), w.float())
    w[0, 0] = w[0, 2] = 1.0
    with pytest.raises(FormatError, match="more than 2"):
        f.pack(w)
    assert f.accepts(compute_facts(w)) is not None


def test_formats_refuse_what_they_cannot_run():
    f = registry.get_format("bitmap")
    assert "bfloat16" in f.accepts_layer(torch.float32, "linear", "cpu")
    assert "CPU" in f.accepts_layer(torch.bfloat16, "linear", "gpu")
    assert "conv2d" in f.accepts_layer(torch.bfloat16, "conv2d", "cpu")
    assert f.accepts_layer(torch.float16, "linear", "cpu") is None
    with pytest.raises(NotImplementedError, match="bfloat16"):
        CompactLinear("t", f, torch.randn(8, 8), None, None, False)
    layer = CompactLinear("t", f, random_weight(8, 8, 0.5, 0).to(torch.bfloat16), None, None, False)
    with pytest.raises(InputError, match="bfloat16"):
        layer(torch.randn(1, 8))
    with pytest.raises(NotImplementedError, match="no_grad"):
        layer(torch.randn(1, 8, dtype=torch.bfloat16, requires_grad=True))


def test_layer_survives_pickling():
    w = random_weight(40, 72, 0.4, 1).to(torch.bfloat16)
    layer = CompactLinear("t", registry.get_format("bitmap"), w, torch.randn(40), "relu", False, threads=2)
    x = torch.randn(1, 72).to(torch.bfloat16)
    back = pickle.loads(pickle.dumps(layer))
    assert torch.equal(back(x), layer(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_16bit_model_compiles_to_the_compact_formats(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.SiLU(), torch.nn.Linear(256, 128))
    with torch.no_grad():
        model[0].weight.copy_(random_weight(256, 128, 0.5, 0))
        model[2].weight.copy_(random_weight(128, 256, 0.5, 1, "nm2:4"))
    model = model.to(dtype).eval()
    x = torch.randn(1, 128).to(dtype)
    for fmt in ("bitmap", "nm2:4c"):
        compiled = sparse_compile(model, (x,), force_format=fmt, calibrate=False)
        with torch.no_grad():
            got = compiled(x)
            want = model.float()(x.float()).to(dtype)
            model.to(dtype)
        fmts = [layer.format for layer in compiled.report().layers]
        assert fmt in fmts, fmts
        assert_close_lowp(got, want, dtype)
        with pytest.raises(NotImplementedError, match="no_grad"):
            compiled(x)  # the parameters require grad: these kernels have no backward


def _half_dense_bf16(rows: int = 1024, cols: int = 1024):
    lin = torch.nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        lin.weight.copy_(random_weight(rows, cols, 0.5, 7))
    return torch.nn.Sequential(lin).to(torch.bfloat16).eval()


@pytest.mark.parametrize("bitmap_bw,want", [(30e9, "bitmap"), (2e9, "dense")])
def test_selector_prices_the_bitmap_from_the_calibrated_rates(monkeypatch, bitmap_bw, want):
    """A 50% bf16 weight at N = 1 takes the bitmap when its calibrated rate makes it faster, dense otherwise
    (torch's GEMV at 24e9 fp32-equivalent B/s: 2 B per weight against the bitmap's 1.125)."""
    import dataclasses

    from sparsec.formats.cost import lowp_default_machine
    from sparsec.targets.cpu import calibrate

    fake = dataclasses.replace(lowp_default_machine(torch.bfloat16, 2), dense_gemv_bw=24e9, bitmap_bw=bitmap_bw)
    monkeypatch.setattr(calibrate, "machine", lambda threads, dtype=torch.float32: dataclasses.replace(fake, threads=threads))
    model = _half_dense_bf16()
    x = torch.randn(1, 1024).to(torch.bfloat16)
    compiled = sparse_compile(model, (x,), calibrate=True, autotune=False, threads=2)
    (layer,) = compiled.report().layers
    assert layer.format == want, layer
    # the crossover: the bitmap's predicted time against dense's, from the same rates
    fmt = registry.get_format("bitmap")
    facts = compute_facts(model[0].weight)
    from sparsec.formats.cost import dense_time
    assert (fmt.cost(facts, 1, fake) < dense_time(1024, 1024, 1, fake)) == (want == "bitmap")


def test_bitmap_cost_grows_with_density_and_n():
    from sparsec.formats.cost import lowp_default_machine

    m = lowp_default_machine(torch.bfloat16, 2)
    fmt = registry.get_format("bitmap")
    costs = [fmt.cost(compute_facts(random_weight(512, 512, d, 0)), 1, m) for d in (0.3, 0.5, 0.7)]
    assert costs == sorted(costs)
    f = compute_facts(random_weight(512, 512, 0.5, 0))
    assert fmt.cost(f, 1, m) < fmt.cost(f, 8, m) < fmt.cost(f, 9, m)
