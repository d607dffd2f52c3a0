"""Edge cases and input validation of the launch wrappers (Triton interpreter, CPU tensors)."""

from __future__ import annotations

import pytest
import torch

from sparsec.codegen.triton import bsr_linear, csr_linear, interpret_mode, nm_linear, set_interpret
from sparsec.codegen.triton.layouts import dense_to_bsr, dense_to_csr, dense_to_nm, prune_nm
from sparsec.codegen.triton.testing import assert_linear_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _run(kind: str, w: torch.Tensor, x: torch.Tensor, **kw) -> torch.Tensor:
    out_f, in_f = w.shape
    if kind == "bsr":
        return bsr_linear(x, *dense_to_bsr(w, (16, 32)), (16, 32), out_f, **kw)
    if kind == "csr":
        return csr_linear(x, *dense_to_csr(w), out_f, **kw)
    return nm_linear(x, *dense_to_nm(prune_nm(w, 2, 4), 2, 4), 2, 4, in_f, **kw)


def _inputs(out_f, in_f, lead, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g).to(dtype)
    x = torch.randn(*lead, in_f, generator=g).to(dtype)
    b = torch.randn(out_f, generator=g).to(dtype)
    r = torch.randn(*lead, out_f, generator=g).to(dtype)
    return w, x, b, r


@pytest.mark.parametrize("kind", ["bsr", "csr", "nm"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_zero_weight_gives_epilogue_of_zero(kind, dtype):
    w, x, b, r = _inputs(37, 45, (5,), dtype)
    w = torch.zeros_like(w)
    out = torch.full((5, 37), float("nan"), dtype=dtype)
    y = _run(kind, w, x, bias=b, activation="silu", residual=r, out=out)
    assert_linear_close(y, x, w, b, "silu", r, what=f"{kind} zero weight")


@pytest.mark.parametrize("kind", ["bsr", "csr", "nm"])
def test_tiny_and_batched_shapes(kind):
    for out_f, in_f, lead in [(1, 1, (1,)), (1, 5, (3,)), (33, 1, (2,)), (20, 30, (2, 3)), (20, 30, (2, 1, 4))]:
        w, x, b, r = _inputs(out_f, in_f, lead, torch.float32)
        y = _run(kind, prune_nm(w, 2, 4) if kind == "nm" else w, x, bias=b, activation="tanh", residual=r)
        assert y.shape == (*lead, out_f)
        assert_linear_close(y, x, prune_nm(w, 2, 4) if kind == "nm" else w, b, "tanh", r, what=f"{kind} {lead}")


@pytest.mark.parametrize("kind", ["bsr", "csr", "nm"])
def test_no_rows(kind):
    w, x, _, _ = _inputs(8, 12, (0,), torch.float16)
    y = _run(kind, w, x)
    assert y.shape == (0, 8)


def test_csr_rows_of_very_different_lengths():
    # One dense row among empty ones inside the same 16-row program, plus a nonzero count that is not
    # a multiple of the 32-nonzero step.
    w = torch.zeros(40, 77)
    w[3] = torch.randn(77)
    w[17, ::5] = 1.5
    w[39, 76] = -2.0
    x = torch.randn(6, 77)
    y = csr_linear(x, *dense_to_csr(w), 40, out=torch.full((6, 40), float("nan")))
    assert_linear_close(y, x, w)


def test_bsr_output_rows_past_out_features_untouched():
    # out=20 with bh=16: the second block row covers 16..31; rows 20..31 must not be written.
    w, x, _, _ = _inputs(20, 16, (3,), torch.float32)
    backing = torch.full((3 * 20 + 7,), 123.0)
    out = backing[:60].view(3, 20)
    bsr_linear(x, *dense_to_bsr(w, (16, 16)), (16, 16), 20, out=out)
    assert torch.all(backing[60:] == 123.0)
    assert_linear_close(out, x, w)


def test_interpret_switch():
    w, x, _, _ = _inputs(4, 8, (2,), torch.float32)
    parts = dense_to_csr(w)
    with pytest.raises(RuntimeError, match="need CUDA tensors"):
        csr_linear(x, *parts, 4, interpret=False)
    set_interpret(False)
    try:
        with pytest.raises(RuntimeError, match="need CUDA tensors"):
            csr_linear(x, *parts, 4)
        with interpret_mode(True):
            assert_linear_close(csr_linear(x, *parts, 4), x, w)
        with pytest.raises(RuntimeError, match="need CUDA tensors"):
            csr_linear(x, *parts, 4)
    finally:
        set_interpret(None)
    assert_linear_close(csr_linear(x, *parts, 4), x, w)


def test_validation_errors_name_the_problem():
    w, x, b, r = _inputs(8, 12, (3,), torch.float32)
    ip, ix, v = dense_to_csr(w)
    with pytest.raises(ValueError, match="indptr must have dtype torch.int32"):
        csr_linear(x, ip.long(), ix, v, 8)
    with pytest.raises(ValueError, match=r"indptr must have shape \(8,\)"):
        csr_linear(x, ip, ix, v, 7)
    with pytest.raises(ValueError, match="values must have dtype torch.float16"):
        csr_linear(x.half(), ip, ix, v, 8)
    with pytest.raises(ValueError, match="x must be contiguous"):
        csr_linear(torch.randn(12, 3).t(), ip, ix, v, 8)
    with pytest.raises(ValueError, match="x must be float32, float16 or bfloat16"):
        csr_linear(x.double(), ip, ix, v, 8)
    with pytest.raises(ValueError, match="activation must be one of"):
        csr_linear(x, ip, ix, v, 8, activation="softmax")
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        csr_linear(x, ip, ix, v, 8, bias=b[:7])
    with pytest.raises(ValueError, match=r"residual must have shape \(3, 8\)"):
        csr_linear(x, ip, ix, v, 8, residual=r.t().contiguous())
    with pytest.raises(ValueError, match="out must have dtype"):
        csr_linear(x, ip, ix, v, 8, out=torch.empty(3, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="out must not overlap x"):
        big = torch.randn(3, 12)
        csr_linear(big, *dense_to_csr(torch.randn(12, 12)), 12, out=big)
    with pytest.raises(ValueError, match="indices is on meta"):
        csr_linear(x, ip, ix.to("meta"), v, 8)
    bp = dense_to_bsr(w, (16, 16))
    with pytest.raises(ValueError, match=r"values must have shape \(1, 16, 32\)"):
        bsr_linear(x, *bp, (16, 32), 8)
    with pytest.raises(TypeError, match="block must be a"):
        bsr_linear(x, *bp, 16, 8)
    vals, idx = dense_to_nm(prune_nm(w, 2, 4), 2, 4)
    with pytest.raises(ValueError, match="x has 12 input features"):
        nm_linear(x, vals, idx, 2, 4, 13)
    with pytest.raises(ValueError, match="indices must have dtype torch.uint8"):
        nm_linear(x, vals, idx.int(), 2, 4, 12)
    with pytest.raises(ValueError, match="need 1 <= n <= m"):
        nm_linear(x, vals, idx, 5, 4, 12)
