"""The fused epilogue shared by every kernel: ``+ bias[o]``, activation, ``+ residual[n, o]``, store.

Every sparse kernel ends with :data:`epilogue_store` on its fp32 accumulator tile ``acc[n, o]``. The
same helper backs :data:`epilogue_kernel`, a standalone elementwise kernel used after PyTorch's
semi-structured matmul (``semi_structured.py``), so both paths compute bit-identical epilogues.
"""

from __future__ import annotations

import torch
import triton.language as tl

from . import _dual
from ._checks import ACTIVATIONS, check_epilogue_args, flatten_rows
from .available import should_interpret


def _activation(x, ACT: tl.constexpr):
    # Codes match ACTIVATIONS: 0 none, 1 relu, 2 gelu (erf), 3 silu, 4 tanh. Computed in fp32.
    if ACT == 1:
        # where() instead of maximum() so NaN propagates like torch.relu.
        x = tl.where(x < 0.0, 0.0, x)
    elif ACT == 2:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 3:
        # tl.sigmoid is a library @jit function (unusable by the interpreter twin), so spell it out.
        x = x / (1.0 + tl.exp(-x))
    elif ACT == 4:
        # No tanh builtin in triton.language (libdevice calls do not run in the interpreter):
        # tanh|x| = (1 - e) / (1 + e), e = exp(-2|x|), exact at large |x|; below 1/16 the subtraction
        # cancels, so use the odd Taylor series there (truncation error < 1e-9 relative).
        a = tl.abs(x)
        e = tl.exp(-2.0 * a)
        big = (1.0 - e) / (1.0 + e)
        a2 = a * a
        small = a * (1.0 + a2 * (-0.3333333333333333 + a2 * 0.13333333333333333))
        t = tl.where(a < 0.0625, small, big)
        x = tl.where(x < 0.0, -t, t)
    return x


activation = _dual.kernel(_activation)


def _epilogue_store(
    acc,
    offs_n,
    offs_o,
    n_mask,
    o_mask,
    y_ptr,
    stride_yn,
    bias_ptr,
    res_ptr,
    stride_rn,
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
):
    # acc: fp32 [BLOCK_N, BLOCK_O] tile of Y; offs_n/offs_o its row/column indices; the masks mark the
    # elements that exist (rows < N, columns < out and inside the kernel's own output block).
    mask = n_mask[:, None] & o_mask[None, :]
    rows = offs_n.to(tl.int64)[:, None]
    if HAS_BIAS:
        b = tl.load(bias_ptr + offs_o, mask=o_mask, other=0.0).to(tl.float32)
        acc = acc + b[None, :]
    acc = activation(acc, ACT)
    if HAS_RES:
        r = tl.load(res_ptr + rows * stride_rn + offs_o[None, :], mask=mask, other=0.0).to(tl.float32)
        acc = acc + r
    tl.store(y_ptr + rows * stride_yn + offs_o[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


epilogue_store = _dual.kernel(_epilogue_store)


def _epilogue_kernel(
    src_ptr,
    y_ptr,
    bias_ptr,
    res_ptr,
    N,
    OUT,
    stride_sn,
    stride_yn,
    stride_rn,
    BLOCK_N: tl.constexpr,
    BLOCK_O: tl.constexpr,
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    n_mask = offs_n < N
    o_mask = offs_o < OUT
    src = src_ptr + offs_n.to(tl.int64)[:, None] * stride_sn + offs_o[None, :]
    acc = tl.load(src, mask=n_mask[:, None] & o_mask[None, :], other=0.0).to(tl.float32)
    epilogue_store(acc, offs_n, offs_o, n_mask, o_mask, y_ptr, stride_yn, bias_ptr, res_ptr, stride_rn,
                   ACT, HAS_BIAS, HAS_RES)


epilogue_kernel = _dual.kernel(_epilogue_kernel)


def plan_epilogue(
    src: torch.Tensor,
    y: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    residual: torch.Tensor | None,
) -> _dual.Launch:
    """Build the launch of :data:`epilogue_kernel` reading ``src`` [N, out] and writing ``y``."""
    n_rows, out_features = src.shape
    block_n, block_o = 16, 128
    return _dual.Launch(
        kernel=epilogue_kernel,
        grid=((n_rows + block_n - 1) // block_n, (out_features + block_o - 1) // block_o),
        args=dict(src_ptr=src, y_ptr=y, bias_ptr=bias, res_ptr=residual, N=n_rows, OUT=out_features,
                  stride_sn=src.stride(0), stride_yn=y.stride(0),
                  stride_rn=residual.stride(0) if residual is not None else 0),
        constexprs=dict(BLOCK_N=block_n, BLOCK_O=block_o, ACT=ACTIVATIONS[activation],
                        HAS_BIAS=bias is not None, HAS_RES=residual is not None),
        options=dict(num_warps=4, num_stages=1, enable_fp_fusion=True),
    )


def apply_epilogue(
    y: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    *,
    interpret: bool | None = None,
) -> torch.Tensor:
    """Return ``act(y + bias) + residual`` computed in fp32 by one elementwise Triton kernel.

    ``y`` is [..., out] (its rows may be strided, e.g. a column slice of a padded result, but the last
    dimension must be contiguous). The result goes to ``out`` when given (may be ``y`` itself),
    else to a new tensor. Used after matmuls that cannot fuse the epilogue themselves.
    """
    if y.dim() < 1 or y.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"y must be a float32/float16/bfloat16 tensor with >= 1 dims, got {y.dtype}, "
                         f"{y.dim()} dims")
    if y.stride(-1) != 1:
        raise ValueError("y must be contiguous in its last dimension")
    lead, out_features = tuple(y.shape[:-1]), y.shape[-1]
    src = y.reshape(-1, out_features) if y.dim() != 2 else y
    result, bias, residual = check_epilogue_args(
        src, out_features, bias, activation, residual, out, lead, allow_out_alias=y)
    launch = plan_epilogue(src, flatten_rows(result, out_features), bias, activation,
                           None if residual is None else flatten_rows(residual, out_features))
    _dual.run(launch, should_interpret(y.device, interpret))
    return result
