"""Compiled kernels and the semi-structured path on a real GPU; CPU-side errors everywhere else."""

from __future__ import annotations

import pytest
import torch

from sparsec.codegen.triton import (
    bsr_linear,
    csr_linear,
    nm_linear,
    prepare_semi_structured,
    semi_structured_linear,
    semi_structured_supported,
)
from sparsec.codegen.triton.layouts import dense_to_bsr, dense_to_csr, dense_to_nm, prune_nm
from sparsec.codegen.triton.testing import assert_linear_close

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _problem(out_f, in_f, n_rows, dtype, density=0.2, device="cuda"):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out_f, in_f, generator=g) * (torch.rand(out_f, in_f, generator=g) < density)
    x, b, r = torch.randn(n_rows, in_f, generator=g), torch.randn(out_f, generator=g), torch.randn(n_rows, out_f,
                                                                                                generator=g)
    return [t.to(device=device, dtype=dtype) for t in (w, x, b, r)]


def test_semi_structured_errors_on_cpu_tensors_are_clear():
    ok, reason = semi_structured_supported("cpu")
    assert not ok and ("needs a CUDA GPU" in reason or "needs CUDA tensors" in reason)
    vals, idx = dense_to_nm(prune_nm(torch.randn(8, 16).half(), 2, 4), 2, 4)
    with pytest.raises(RuntimeError, match=r"needs (a CUDA GPU|CUDA tensors).*nm_linear"):
        prepare_semi_structured(vals, idx, 2, 4, 16)
    with pytest.raises(ValueError, match="2:4-compatible"):
        prepare_semi_structured(*dense_to_nm(prune_nm(torch.randn(8, 16).half(), 4, 8), 4, 8), 4, 8, 16)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_rows", [1, 16, 300])
def test_compiled_kernels_match_dense(dtype, n_rows):
    w, x, b, r = _problem(200, 333, n_rows, dtype)
    kw = dict(bias=b, activation="gelu", residual=r)
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32) and dtype == torch.float32
    poison = lambda: torch.full((n_rows, 200), float("nan"), device="cuda", dtype=dtype)  # noqa: E731
    for block in [(16, 16), (32, 32), (64, 64), (4, 4)]:
        y = bsr_linear(x, *dense_to_bsr(w, block), block, 200, **kw, out=poison())
        assert_linear_close(y, x, w, tf32=tf32, what=f"bsr {block}", **kw)
    y = csr_linear(x, *dense_to_csr(w), 200, **kw, out=poison())
    assert_linear_close(y, x, w, tf32=tf32, what="csr", **kw)
    for n, m in [(2, 4), (1, 4), (4, 8)]:
        wn = prune_nm(w, n, m)
        y = nm_linear(x, *dense_to_nm(wn, n, m), n, m, 333, **kw, out=poison())
        assert_linear_close(y, x, wn, tf32=tf32, what=f"nm {n}:{m}", **kw)


@needs_gpu
@pytest.mark.parametrize("backend", ["cusparselt", "cutlass"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_semi_structured_matches_dense(backend, dtype):
    ok, reason = semi_structured_supported()
    if not ok:
        pytest.skip(reason)
    if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
        pytest.skip("this torch build has no cuSPARSELt")
    w, x, b, r = _problem(100, 200, 37, dtype, density=1.0)
    wn = prune_nm(w, 2, 4)
    weight = prepare_semi_structured(*dense_to_nm(wn, 2, 4), 2, 4, 200, backend=backend)
    for kw in (dict(), dict(bias=b), dict(bias=b, activation="silu", residual=r)):
        y = semi_structured_linear(x, weight, **kw)
        assert_linear_close(y, x, wn, **kw, what=f"semi-structured {backend} {kw.keys()}")
