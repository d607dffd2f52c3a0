"""CSR linear layer: row-split SpMM vectorized over the dense dimension N, epilogue fused.

Program (i, j) owns the BLOCK_O weight rows i*BLOCK_O.. (output features) and the BLOCK_N rows
j*BLOCK_N.. of X. The nonzeros of its rows are contiguous in the CSR arrays
(``indptr[row0]`` .. ``indptr[row0 + BLOCK_O]``), so it streams them BLOCK_K at a time:

* gather ``G[n, p] = X[n, indices[p]]`` — with X passed transposed (X^T [in, N], made by the
  wrapper when N > 1) every nonzero reads BLOCK_N contiguous elements, i.e. coalesced;
* scatter the values into ``A[p, r] = values[p] if nonzero p belongs to row r else 0``;
* ``acc[n, r] += G @ A`` with ``tl.dot``: the segmented row sums run on the tensor cores in fp32,
  with no per-row loop bounds, so rows of very different lengths (or empty rows) in one program
  cost nothing extra.

The dot does BLOCK_O (16) times the useful multiply-adds; on tensor cores that is about what one
useful FMA per nonzero costs on the CUDA cores, and the kernel is bound by the gathers anyway.
"""

from __future__ import annotations

import torch
import triton.language as tl

from . import _dual
from ._checks import (
    check_activation,
    check_dim,
    check_epilogue_args,
    check_weight_part,
    flatten_rows,
    flatten_x,
)
from ._mma import dot_acc, dot_settings
from .available import should_interpret
from .epilogue import epilogue_store
from .launch_config import LaunchConfig, csr_config


def _csr_kernel(
    x_ptr,
    indptr_ptr,
    indices_ptr,
    values_ptr,
    y_ptr,
    bias_ptr,
    res_ptr,
    N,
    OUT,
    stride_xk,
    stride_xn,
    stride_yn,
    stride_rn,
    BLOCK_N: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DOT_UPCAST: tl.constexpr,
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
):
    row0 = tl.program_id(0) * BLOCK_O
    offs_o = row0 + tl.arange(0, BLOCK_O)
    o_mask = offs_o < OUT
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    x_cols = x_ptr + offs_n.to(tl.int64) * stride_xn
    # Rows past OUT get an empty range [0, 0) so they own no nonzero.
    row_start = tl.load(indptr_ptr + offs_o, mask=o_mask, other=0).to(tl.int64)
    row_end = tl.load(indptr_ptr + offs_o + 1, mask=o_mask, other=0).to(tl.int64)
    first = tl.load(indptr_ptr + row0).to(tl.int64)
    last = tl.load(indptr_ptr + tl.minimum(row0 + BLOCK_O, OUT)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.full((BLOCK_N, BLOCK_O), 0.0, tl.float32)
    for p0 in range(first, last, BLOCK_K):
        p = p0 + offs_k
        p_mask = p < last
        col = tl.load(indices_ptr + p, mask=p_mask, other=0).to(tl.int64)
        val = tl.load(values_ptr + p, mask=p_mask, other=0.0)
        g = tl.load(x_cols[:, None] + col[None, :] * stride_xk, mask=n_mask[:, None] & p_mask[None, :], other=0.0)
        owner = (p[:, None] >= row_start[None, :]) & (p[:, None] < row_end[None, :])
        a = tl.where(owner, val[:, None], 0.0).to(values_ptr.dtype.element_ty)
        acc = dot_acc(g, a, acc, DOT_PREC, DOT_UPCAST)
    epilogue_store(acc, offs_n, offs_o, n_mask, o_mask, y_ptr, stride_yn, bias_ptr, res_ptr, stride_rn,
                   ACT, HAS_BIAS, HAS_RES)


csr_kernel = _dual.kernel(_csr_kernel)


def plan_csr(
    x2d: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    out_features: int,
    y2d: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    residual2d: torch.Tensor | None,
    interpret: bool,
    config: LaunchConfig | None = None,
    tf32: bool | None = None,
) -> _dual.Launch:
    """Build the launch of :data:`csr_kernel` for already-validated 2-D operands.

    X is handed over transposed (one copy) when N > 1 so the gathers are coalesced; at N == 1 both
    layouts coincide.
    """
    n_rows, in_features = x2d.shape
    prec, upcast = dot_settings(x2d.dtype, interpret, tf32)
    tensor_cores = prec == "tf32" or x2d.dtype != torch.float32  # exact fp32 dots run on FMA units
    cfg = config or csr_config(n_rows, out_features, x2d.element_size(), tensor_cores=tensor_cores)
    if n_rows > 1:
        xk = x2d.t().contiguous()
        stride_xk, stride_xn = xk.stride(0), xk.stride(1)
    else:
        xk, stride_xk, stride_xn = x2d, x2d.stride(1), x2d.stride(0)
    return _dual.Launch(
        kernel=csr_kernel,
        grid=(-(-out_features // cfg.block_o), -(-n_rows // cfg.block_n)),
        args=dict(x_ptr=xk, indptr_ptr=indptr, indices_ptr=indices, values_ptr=values, y_ptr=y2d,
                  bias_ptr=bias, res_ptr=residual2d, N=n_rows, OUT=out_features, stride_xk=stride_xk,
                  stride_xn=stride_xn, stride_yn=y2d.stride(0),
                  stride_rn=residual2d.stride(0) if residual2d is not None else 0),
        constexprs=dict(BLOCK_N=cfg.block_n, BLOCK_O=cfg.block_o, BLOCK_K=cfg.block_k, DOT_PREC=prec,
                        DOT_UPCAST=upcast, ACT=check_activation(activation), HAS_BIAS=bias is not None,
                        HAS_RES=residual2d is not None),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=True),
    )


def csr_linear(
    x: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    out_features: int,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    *,
    interpret: bool | None = None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """``Y = act(X @ W^T + bias) + residual`` for a CSR weight W [out_features, in].

    Args:
        x: [..., in] activations (fp32/fp16/bf16, contiguous); leading dims are flattened.
        indptr: int32 [out_features + 1] row pointers.
        indices: int32 [nnz] input-feature (column) of each nonzero, each < in.
        values: [nnz] nonzeros, dtype of x.
        out_features: rows of W.
        bias, activation, residual: fused epilogue ``act(acc + bias[o]) + residual[n, o]``;
            activation in {None, "relu", "gelu", "silu", "tanh"}.
        out: optional preallocated [..., out_features] result (must not overlap x).
        interpret: True = Triton interpreter, False = compiled (CUDA), None = by device.
        config: override the cost model's launch parameters (block_o and block_k >= 16).

    Returns:
        ``out`` (or a new tensor) of shape [..., out_features].
    """
    check_dim(out_features, "out_features")
    x2d, lead = flatten_x(x, None)
    dev, dtype = x2d.device, x2d.dtype
    check_weight_part(indptr, "indptr", torch.int32, (out_features + 1,), dev)
    if not isinstance(values, torch.Tensor) or values.dim() != 1:
        raise ValueError(f"values must be a 1-D [nnz] tensor, got {getattr(values, 'shape', values)!r}")
    check_weight_part(values, "values", dtype, (values.shape[0],), dev)
    check_weight_part(indices, "indices", torch.int32, (values.shape[0],), dev)
    y, bias, residual = check_epilogue_args(x2d, out_features, bias, activation, residual, out, lead)
    interp = should_interpret(dev, interpret)
    launch = plan_csr(x2d, indptr, indices, values, out_features, flatten_rows(y, out_features), bias, activation,
                      None if residual is None else flatten_rows(residual, out_features), interp, config)
    _dual.run(launch, interp)
    return y
