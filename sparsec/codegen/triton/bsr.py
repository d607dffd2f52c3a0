"""Block-sparse (BSR) linear layer: one ``tl.dot`` per stored (bh, bw) block, epilogue fused.

Program (i, j) owns block row i of the weight (output features i*bh .. i*bh+bh-1) and rows
j*BLOCK_N.. of X. It walks the stored blocks of its block row (``indptr[i]`` .. ``indptr[i+1]``)
and accumulates ``X[n-tile, block columns] @ W_block^T`` in fp32. The accumulator is oriented
[n, o] so that at N >= 64 the MMA's M dimension is the dense dimension, which lets sm_90 use
wgmma even for 16- or 32-high blocks, and the output tile is stored along contiguous features.
Blocks narrower than 16 columns (tl.dot's minimum K) use an outer-product loop instead.
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
from .launch_config import LaunchConfig, bsr_config, next_pow2


def _bsr_kernel(
    x_ptr,
    indptr_ptr,
    indices_ptr,
    values_ptr,
    y_ptr,
    bias_ptr,
    res_ptr,
    N,
    IN,
    OUT,
    stride_xn,
    stride_yn,
    stride_rn,
    BH: tl.constexpr,
    BW: tl.constexpr,
    BH_P: tl.constexpr,
    BW_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_DOT: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DOT_UPCAST: tl.constexpr,
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
):
    block_row = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_i = tl.arange(0, BH_P)  # row inside the block = output feature
    offs_j = tl.arange(0, BW_P)  # column inside the block = input feature
    i_mask = offs_i < BH
    x_rows = x_ptr + offs_n.to(tl.int64) * stride_xn
    # 64-bit loop bounds: block index * bh * bw may exceed 2**31 elements.
    start = tl.load(indptr_ptr + block_row).to(tl.int64)
    end = tl.load(indptr_ptr + block_row + 1).to(tl.int64)
    acc = tl.full((BLOCK_N, BH_P), 0.0, tl.float32)
    for k in range(start, end):
        col0 = tl.load(indices_ptr + k) * BW
        block = values_ptr + k * (BH * BW)
        if USE_DOT:
            cols = col0 + offs_j
            # Columns past IN exist only in the zero padding of the last block column: never read x there.
            x_tile = tl.load(x_rows[:, None] + cols[None, :], mask=n_mask[:, None] & (cols < IN)[None, :], other=0.0)
            # W_block^T as a [BW_P, BH_P] tile straight from the row-major [bh, bw] block.
            w_mask = (offs_j < BW)[:, None] & i_mask[None, :]
            w_tile = tl.load(block + offs_i[None, :] * BW + offs_j[:, None], mask=w_mask, other=0.0)
            acc = dot_acc(x_tile, w_tile, acc, DOT_PREC, DOT_UPCAST)
        else:
            for j in tl.static_range(BW):
                x_col = tl.load(x_rows + (col0 + j), mask=n_mask & (offs_n * 0 + (col0 + j) < IN), other=0.0)
                w_col = tl.load(block + offs_i * BW + j, mask=i_mask, other=0.0)
                acc += x_col.to(tl.float32)[:, None] * w_col.to(tl.float32)[None, :]
    offs_o = block_row * BH + offs_i
    epilogue_store(acc, offs_n, offs_o, n_mask, i_mask & (offs_o < OUT), y_ptr, stride_yn, bias_ptr, res_ptr,
                   stride_rn, ACT, HAS_BIAS, HAS_RES)


bsr_kernel = _dual.kernel(_bsr_kernel)


def _check_block(block: tuple[int, int]) -> tuple[int, int]:
    if not (isinstance(block, (tuple, list)) and len(block) == 2):
        raise TypeError(f"block must be a (bh, bw) pair of ints, got {block!r}")
    return check_dim(block[0], "block[0] (bh)", 1), check_dim(block[1], "block[1] (bw)", 1)


def plan_bsr(
    x2d: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    block: tuple[int, int],
    out_features: int,
    y2d: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    residual2d: torch.Tensor | None,
    interpret: bool,
    config: LaunchConfig | None = None,
    tf32: bool | None = None,
) -> _dual.Launch:
    """Build the launch of :data:`bsr_kernel` for already-validated 2-D operands."""
    bh, bw = block
    n_rows, in_features = x2d.shape
    out_blocks = indptr.shape[0] - 1
    prec, upcast = dot_settings(x2d.dtype, interpret, tf32)
    tensor_cores = prec == "tf32" or x2d.dtype != torch.float32  # exact fp32 dots run on FMA units
    cfg = config or bsr_config(n_rows, out_blocks, bh, bw, x2d.element_size(), tensor_cores=tensor_cores)
    bh_p, bw_p = max(16, next_pow2(bh)), next_pow2(bw)
    if cfg.block_o != bh_p or cfg.block_k != bw_p:
        raise ValueError(f"BSR config must have block_o={bh_p} and block_k={bw_p} for a {bh}x{bw} block")
    return _dual.Launch(
        kernel=bsr_kernel,
        grid=(out_blocks, -(-n_rows // cfg.block_n)),
        args=dict(x_ptr=x2d, indptr_ptr=indptr, indices_ptr=indices, values_ptr=values, y_ptr=y2d,
                  bias_ptr=bias, res_ptr=residual2d, N=n_rows, IN=in_features, OUT=out_features,
                  stride_xn=x2d.stride(0), stride_yn=y2d.stride(0),
                  stride_rn=residual2d.stride(0) if residual2d is not None else 0),
        constexprs=dict(BH=bh, BW=bw, BH_P=bh_p, BW_P=bw_p, BLOCK_N=cfg.block_n, USE_DOT=bw_p >= 16,
                        DOT_PREC=prec, DOT_UPCAST=upcast, ACT=check_activation(activation),
                        HAS_BIAS=bias is not None, HAS_RES=residual2d is not None),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=True),
    )


def bsr_linear(
    x: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    values: torch.Tensor,
    block: tuple[int, int],
    out_features: int,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    *,
    interpret: bool | None = None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """``Y = act(X @ W^T + bias) + residual`` for a block-sparse weight W [out_features, in].

    Args:
        x: [..., in] activations (fp32/fp16/bf16, contiguous); leading dims are flattened.
        indptr: int32 [ceil(out_features/bh) + 1] block-row pointers.
        indices: int32 [nblocks] block-column index of each stored block.
        values: [nblocks, bh, bw] stored blocks (dtype of x) of W zero-padded to block multiples.
        block: (bh, bw). 16, 32 and 64 (any mix) are the tuned sizes; any size works (blocks
            narrower than 16 use a slower outer-product loop).
        out_features: rows of the unpadded W; outputs past it are never written.
        bias, activation, residual: fused epilogue ``act(acc + bias[o]) + residual[n, o]``;
            activation in {None, "relu", "gelu", "silu", "tanh"}.
        out: optional preallocated [..., out_features] result (must not overlap x).
        interpret: True = Triton interpreter, False = compiled (CUDA), None = by device (see
            ``available.should_interpret``).
        config: override the cost model's launch parameters (block_o/block_k must match the block).

    Returns:
        ``out`` (or a new tensor) of shape [..., out_features].
    """
    bh, bw = _check_block(block)
    check_dim(out_features, "out_features")
    x2d, lead = flatten_x(x, None)
    dev, dtype = x2d.device, x2d.dtype
    out_blocks = -(-out_features // bh)
    check_weight_part(indptr, "indptr", torch.int32, (out_blocks + 1,), dev)
    if not isinstance(values, torch.Tensor) or values.dim() != 3:
        raise ValueError(f"values must be a [nblocks, {bh}, {bw}] tensor, got {getattr(values, 'shape', values)!r}")
    nblocks = values.shape[0]
    check_weight_part(values, "values", dtype, (nblocks, bh, bw), dev)
    check_weight_part(indices, "indices", torch.int32, (nblocks,), dev)
    y, bias, residual = check_epilogue_args(x2d, out_features, bias, activation, residual, out, lead)
    interp = should_interpret(dev, interpret)
    launch = plan_bsr(x2d, indptr, indices, values, (bh, bw), out_features, flatten_rows(y, out_features), bias,
                      activation, None if residual is None else flatten_rows(residual, out_features), interp, config)
    _dual.run(launch, interp)
    return y
