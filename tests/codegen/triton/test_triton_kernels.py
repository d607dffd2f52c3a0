"""Every kernel against dense torch in the Triton interpreter, on hypothesis-drawn problems.

Shapes are small because the interpreter runs each program as numpy code; they are drawn ragged
(not multiples of blocks or groups), with densities from fully zero to fully dense, empty rows,
every epilogue combination and all three dtypes. The output buffer is poisoned with NaN so an
element the kernel forgot to write fails the comparison.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsec.codegen.triton import LaunchConfig, bsr_linear, csr_linear, nm_linear
from sparsec.codegen.triton.layouts import dense_to_bsr, dense_to_csr, dense_to_nm, prune_nm
from sparsec.codegen.triton.testing import assert_linear_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACTS = [None, "relu", "gelu", "silu", "tanh"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, max_out: int = 70, max_in: int = 90):
    """A random layer problem: weight (with zero rows and a density), input, epilogue, dtype."""
    out_f = draw(st.integers(1, max_out))
    in_f = draw(st.integers(1, max_in))
    n_rows = draw(st.integers(1, 20))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    dtype = draw(st.sampled_from(DTYPES))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    w = torch.randn(out_f, in_f, generator=gen)
    w = w * (torch.rand(out_f, in_f, generator=gen) < density)
    empty_rows = torch.rand(out_f, generator=gen) < draw(st.sampled_from([0.0, 0.3]))
    w[empty_rows] = 0
    lead = (n_rows,) if draw(st.booleans()) else (2, (n_rows + 1) // 2)
    x = torch.randn(*lead, in_f, generator=gen)
    bias = torch.randn(out_f, generator=gen) if draw(st.booleans()) else None
    residual = torch.randn(*lead, out_f, generator=gen) if draw(st.booleans()) else None
    act = draw(st.sampled_from(ACTS))

    def cast(t):
        return None if t is None else t.to(dtype)

    return cast(w), cast(x), cast(bias), act, cast(residual)


def _poisoned(x: torch.Tensor, out_f: int) -> torch.Tensor:
    return torch.full((*x.shape[:-1], out_f), float("nan"), dtype=x.dtype)


@SETTINGS
@given(problems(), st.sampled_from([(16, 16), (32, 32), (64, 64), (16, 32), (32, 16), (16, 64), (64, 16)]))
def test_bsr_matches_dense(problem, block):
    w, x, bias, act, residual = problem
    indptr, indices, values = dense_to_bsr(w, block)
    out = _poisoned(x, w.shape[0])
    y = bsr_linear(x, indptr, indices, values, block, w.shape[0], bias, act, residual, out=out)
    assert y is out
    assert_linear_close(y, x, w, bias, act, residual, what=f"bsr {block}")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_out=24, max_in=24), st.sampled_from([(1, 1), (4, 4), (3, 5), (8, 2), (24, 40)]))
def test_bsr_small_and_odd_blocks(problem, block):
    # Blocks narrower than 16 take the outer-product path; non-power-of-two blocks use masked tiles.
    w, x, bias, act, residual = problem
    indptr, indices, values = dense_to_bsr(w, block)
    y = bsr_linear(x, indptr, indices, values, block, w.shape[0], bias, act, residual, out=_poisoned(x, w.shape[0]))
    assert_linear_close(y, x, w, bias, act, residual, what=f"bsr {block}")


@SETTINGS
@given(problems())
def test_csr_matches_dense(problem):
    w, x, bias, act, residual = problem
    indptr, indices, values = dense_to_csr(w)
    y = csr_linear(x, indptr, indices, values, w.shape[0], bias, act, residual, out=_poisoned(x, w.shape[0]))
    assert_linear_close(y, x, w, bias, act, residual, what="csr")


@SETTINGS
@given(problems(), st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2), (3, 7)]))
def test_nm_matches_dense(problem, pattern):
    w, x, bias, act, residual = problem
    n, m = pattern
    w = prune_nm(w, n, m)
    values, indices = dense_to_nm(w, n, m)
    y = nm_linear(x, values, indices, n, m, w.shape[1], bias, act, residual, out=_poisoned(x, w.shape[0]))
    assert_linear_close(y, x, w, bias, act, residual, what=f"nm {n}:{m}")


def _layer(out_f: int, in_f: int, n_rows: int, dtype: torch.dtype, density: float = 0.3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=gen) * (torch.rand(out_f, in_f, generator=gen) < density)
    x = torch.randn(n_rows, in_f, generator=gen)
    bias = torch.randn(out_f, generator=gen)
    residual = torch.randn(n_rows, out_f, generator=gen)
    return w.to(dtype), x.to(dtype), bias.to(dtype), residual.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_tiles_and_many_programs(dtype):
    # The cost model picks 16-row tiles for the interpreter's tiny grids; force the big tiles the GPU
    # uses at large N (and several of them along N and along the output features).
    w, x, bias, residual = _layer(130, 100, 140, dtype)
    kw = dict(bias=bias, activation="gelu", residual=residual)
    ip, ix, v = dense_to_bsr(w, (32, 32))
    y = bsr_linear(x, ip, ix, v, (32, 32), 130, **kw, out=_poisoned(x, 130),
                   config=LaunchConfig(block_n=128, block_o=32, block_k=32, num_warps=8))
    assert_linear_close(y, x, w, what="bsr block_n=128", **kw)
    ip, ix, v = dense_to_csr(w)
    y = csr_linear(x, ip, ix, v, 130, **kw, out=_poisoned(x, 130),
                   config=LaunchConfig(block_n=64, block_o=32, block_k=16))
    assert_linear_close(y, x, w, what="csr block_n=64", **kw)
    wn = prune_nm(w, 2, 4)
    vals, idx = dense_to_nm(wn, 2, 4)
    y = nm_linear(x, vals, idx, 2, 4, 100, **kw, out=_poisoned(x, 130),
                  config=LaunchConfig(block_n=64, block_o=128, block_k=32))
    assert_linear_close(y, x, wn, what="nm block_n=64", **kw)
