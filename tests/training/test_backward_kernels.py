"""The MLIR backward kernels (codegen/mlir/emit_sddmm.py) against dense torch, on poisoned outputs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsec.codegen.mlir.emit_sddmm import SddmmSpec, passes
from sparsec.codegen.mlir.jit import compile_kernel, numpy_descriptor, torch_descriptor
from sparsec.formats import registry

CSR = registry.get_format("csr")


def _csr(rows, cols, density, gen, bits):
    w = torch.randn(rows, cols, generator=gen) * (torch.rand(rows, cols, generator=gen) < density)
    w[0] = 0  # an empty row
    packed = CSR.pack(w)
    pos, crd = packed.buffers["pos1"], packed.buffers["crd1"]
    return w, packed, pos, (crd.astype(np.int16) if bits == 16 else crd)


@settings(max_examples=12, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 70), n=st.integers(1, 70),
       deriv=st.sampled_from([None, "relu", "tanh"]), bias=st.booleans(), bits=st.sampled_from([16, 32]),
       lanes=st.sampled_from([16, 64, 256]), dense=st.booleans(), seed=st.integers(0, 1000))
def test_sddmm_matches_dense_torch(rows, cols, n, deriv, bias, bits, lanes, dense, seed):
    gen = torch.Generator().manual_seed(seed)
    w, packed, pos, crd = _csr(rows, cols, 0.3, gen, bits)
    x, g = torch.randn(cols, n, generator=gen), torch.randn(rows, n, generator=gen)
    a = torch.randn(rows, n, generator=gen)
    if deriv == "tanh":
        a = torch.tanh(a)
    kern = compile_kernel(SddmmSpec(rows, cols, n, deriv, bias, bits, lanes, dense_out=dense))
    nan = float("nan")
    dv = torch.full((rows, cols) if dense else (packed.stored,), nan)
    dz, db = torch.full((rows, n), nan), torch.full((rows,), nan)
    args = [numpy_descriptor(pos), numpy_descriptor(crd), torch_descriptor(x), torch_descriptor(g)]
    args += [torch_descriptor(a)] if deriv else []
    args += [torch_descriptor(dv)] + ([torch_descriptor(dz)] if deriv else []) + ([torch_descriptor(db)] if bias else [])
    kern(args)
    gz = g if deriv is None else g * (a > 0) if deriv == "relu" else g * (1 - a * a)
    full = (gz.double() @ x.double().t()).float()
    r, c = w.nonzero(as_tuple=True)  # row-major: CSR order
    if dense:
        torch.testing.assert_close(dv, full * (w != 0), rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(dv, full[r, c], rtol=1e-4, atol=1e-4)
    if deriv:
        torch.testing.assert_close(dz, gz, rtol=0, atol=0)
    if bias:
        torch.testing.assert_close(db, gz.sum(1), rtol=1e-4, atol=1e-4)


@settings(max_examples=6, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 50), n=st.integers(1, 40), bits=st.sampled_from([16, 32]),
       seed=st.integers(0, 1000))
def test_scatter_dx_matches_dense_torch(rows, cols, n, bits, seed):
    gen = torch.Generator().manual_seed(seed)
    w, packed, pos, crd = _csr(rows, cols, 0.3, gen, bits)
    g = torch.randn(rows, n, generator=gen)
    out = torch.zeros(cols, n)  # the scatter kernel accumulates: the caller zeroes
    kern = compile_kernel(SddmmSpec(rows, cols, n, index_bits=bits, kind="scatter"))
    kern([numpy_descriptor(pos), numpy_descriptor(crd), numpy_descriptor(packed.buffers["values"]),
          torch_descriptor(g), torch_descriptor(out)])
    torch.testing.assert_close(out, w.t() @ g, rtol=1e-4, atol=1e-4)


def test_passes_cover_every_lane_once_without_masks():
    for n in (1, 3, 17, 64, 100, 256, 300):
        for lanes in (16, 64, 256):
            segs = [s for p in passes(n, lanes) for s in p]
            assert sorted(o + i for o, w in segs for i in range(w)) == list(range(n))
            assert {w for _, w in segs} <= {1, 4, 8, 16}
            assert all(sum(w for _, w in p) <= max(lanes, 16) for p in passes(n, lanes))


def test_spec_rejects_bad_fields():
    with pytest.raises(ValueError, match="deriv"):
        SddmmSpec(4, 4, 4, deriv="gelu")
    with pytest.raises(ValueError, match="index_bits"):
        SddmmSpec(4, 4, 4, index_bits=8)
    with pytest.raises(ValueError, match="kind"):
        SddmmSpec(4, 4, 4, kind="spmm")


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 70), bits=st.sampled_from([16, 32]),
       outside=st.integers(0, 5), negzero=st.booleans(), seed=st.integers(0, 1000),
       density=st.sampled_from([0.1, 0.3, 0.9]))
def test_refresh_kernel_gathers_and_counts_outside(rows, cols, bits, outside, negzero, seed, density):
    """emit_refresh: the packed values become W's at the stored positions (poisoned before), and the count
    is the number of nonzeros outside them; -0.0 outside counts as zero. Rows of >= 16 stored values take
    the vector-gather path, the rest of a row the scalar one (densities 0.1-0.9 over up to 70 columns)."""
    from sparsec.codegen.mlir.emit_refresh import RefreshSpec

    gen = torch.Generator().manual_seed(seed)
    w, packed, pos, crd = _csr(rows, cols, density, gen, bits)
    mask = w != 0
    new = torch.randn(rows, cols, generator=gen) * mask  # an optimizer step: new values, same pattern
    if negzero:
        new[~mask] = -0.0
    free = torch.nonzero(~mask.view(-1)).view(-1)
    put = free[torch.randperm(free.numel(), generator=gen)[:outside]]
    new.view(-1)[put] = 1.0
    vals = np.full(packed.stored, np.nan, dtype=np.float32)
    out = torch.full((1,), -7, dtype=torch.int64)
    kern = compile_kernel(RefreshSpec(rows, cols, bits))
    kern([numpy_descriptor(pos), numpy_descriptor(crd), torch_descriptor(new), numpy_descriptor(vals),
          torch_descriptor(out)])
    assert np.array_equal(vals, new[mask].numpy())  # CSR order is row-major order of the mask
    assert int(out[0]) == put.numel()
