"""N:M structured-sparse linear layer (2:4, 1:4, 4:8, ...): decompress in registers, ``tl.dot``.

Program (i, j) owns output features i*BLOCK_O.. and rows j*BLOCK_N.. of X. For each BLOCK_K-wide
slice of input features it rebuilds the dense W^T tile from the compressed arrays — dense column
``c`` lies in group ``c // M`` at position ``c % M``, so for each of the N kept slots of that group
it loads (value, position) and keeps the value whose position is ``c % M`` — then runs
``acc[n, o] += X_tile @ W^T_tile`` on the tensor cores.

What this buys: the weight crosses DRAM compressed (for fp16 2:4, 6 bytes per 4 weights with the
uint8 positions, instead of 8), which is what matters when N is small and the layer is bandwidth
bound. It does *not* use sparse tensor cores (Triton exposes no ``mma.sp``), so at large N it does
the dense MMA work plus the decompression; there PyTorch's semi-structured path (cuSPARSELt or
CUTLASS, ``semi_structured.py``) is the candidate, and ``benchmarks/bench_gpu.py`` measures both so
the selector can choose by measured cost.
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
from .launch_config import LaunchConfig, nm_config


def _nm_kernel(
    x_ptr,
    values_ptr,
    indices_ptr,
    y_ptr,
    bias_ptr,
    res_ptr,
    N,
    IN,
    OUT,
    stride_xn,
    stride_vo,
    stride_yn,
    stride_rn,
    NKEEP: tl.constexpr,
    M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
    COMPACT: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DOT_UPCAST: tl.constexpr,
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
):
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = offs_o < OUT
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    x_rows = x_ptr + offs_n.to(tl.int64) * stride_xn
    w_rows = offs_o.to(tl.int64) * stride_vo
    offs_k = tl.arange(0, BLOCK_K)
    groups = (IN + M - 1) // M
    acc = tl.full((BLOCK_N, BLOCK_O), 0.0, tl.float32)
    # Columns in [IN, in_p) are the zero padding of the last group: skipping them changes nothing.
    for k0 in range(0, IN, BLOCK_K):
        c = k0 + offs_k
        c_mask = c < IN
        x_tile = tl.load(x_rows[:, None] + c[None, :], mask=n_mask[:, None] & c_mask[None, :], other=0.0)
        if COMPACT:
            # M a power of two dividing BLOCK_K: the tile holds G whole groups. Load each kept slot
            # once as a [G, BLOCK_O] tile (one load per stored value), scatter it to its position
            # in a [G, M, BLOCK_O] tile, and flatten (g, p) -> column g*M + p.
            G: tl.constexpr = BLOCK_K // M
            g = k0 // M + tl.arange(0, G)
            g_mask = (g < groups)[:, None] & o_mask[None, :]
            pos = tl.arange(0, M)[None, :, None]
            w3 = tl.full((G, M, BLOCK_O), 0.0, values_ptr.dtype.element_ty)
            for j in tl.static_range(NKEEP):
                slot = (g * NKEEP + j)[:, None] + w_rows[None, :]
                v = tl.load(values_ptr + slot, mask=g_mask, other=0.0)
                at = tl.load(indices_ptr + slot, mask=g_mask, other=0)
                # Positions strictly increase inside a group, so at most one slot lands on each column.
                w3 = tl.where((at.to(tl.int32)[:, None, :] == pos) & g_mask[:, None, :], v[:, None, :], w3)
            w_tile = tl.reshape(w3, (BLOCK_K, BLOCK_O))
        else:
            # Any M: for each dense column c (group c // M, position c % M) gather the kept slots of
            # its group and keep the one stored at that position.
            pos = (c % M)[:, None]
            slot0 = ((c // M) * NKEEP)[:, None] + w_rows[None, :]
            w_mask = c_mask[:, None] & o_mask[None, :]
            w_tile = tl.full((BLOCK_K, BLOCK_O), 0.0, values_ptr.dtype.element_ty)
            for j in tl.static_range(NKEEP):
                v = tl.load(values_ptr + slot0 + j, mask=w_mask, other=0.0)
                at = tl.load(indices_ptr + slot0 + j, mask=w_mask, other=0)
                w_tile = tl.where(w_mask & (at.to(tl.int32) == pos), v, w_tile)
        acc = dot_acc(x_tile, w_tile, acc, DOT_PREC, DOT_UPCAST)
    epilogue_store(acc, offs_n, offs_o, n_mask, o_mask, y_ptr, stride_yn, bias_ptr, res_ptr, stride_rn,
                   ACT, HAS_BIAS, HAS_RES)


nm_kernel = _dual.kernel(_nm_kernel)


def check_nm(n: int, m: int, in_features: int) -> int:
    """Validate an N:M pattern for ``in_features`` inputs and return the compressed width in_p/m*n."""
    check_dim(n, "n", 1)
    check_dim(m, "m", 1)
    check_dim(in_features, "in_features")
    if n > m or m > 256:
        raise ValueError(f"need 1 <= n <= m <= 256 (positions are stored as uint8), got n={n}, m={m}")
    return -(-in_features // m) * n


def plan_nm(
    x2d: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    n: int,
    m: int,
    y2d: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    residual2d: torch.Tensor | None,
    interpret: bool,
    config: LaunchConfig | None = None,
    tf32: bool | None = None,
) -> _dual.Launch:
    """Build the launch of :data:`nm_kernel` for already-validated 2-D operands."""
    n_rows, in_features = x2d.shape
    out_features = values.shape[0]
    prec, upcast = dot_settings(x2d.dtype, interpret, tf32)
    tensor_cores = prec == "tf32" or x2d.dtype != torch.float32  # exact fp32 dots run on FMA units
    cfg = config or nm_config(n_rows, out_features, m, x2d.element_size(), tensor_cores=tensor_cores)
    return _dual.Launch(
        kernel=nm_kernel,
        grid=(-(-out_features // cfg.block_o), -(-n_rows // cfg.block_n)),
        args=dict(x_ptr=x2d, values_ptr=values, indices_ptr=indices, y_ptr=y2d, bias_ptr=bias,
                  res_ptr=residual2d, N=n_rows, IN=in_features, OUT=out_features, stride_xn=x2d.stride(0),
                  stride_vo=values.stride(0), stride_yn=y2d.stride(0),
                  stride_rn=residual2d.stride(0) if residual2d is not None else 0),
        constexprs=dict(NKEEP=n, M=m, BLOCK_N=cfg.block_n, BLOCK_O=cfg.block_o, BLOCK_K=cfg.block_k,
                        COMPACT=(m & (m - 1)) == 0 and cfg.block_k % m == 0,
                        DOT_PREC=prec, DOT_UPCAST=upcast, ACT=check_activation(activation),
                        HAS_BIAS=bias is not None, HAS_RES=residual2d is not None),
        options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, enable_fp_fusion=True),
    )


def nm_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    n: int,
    m: int,
    in_features: int,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    *,
    interpret: bool | None = None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """``Y = act(X @ W^T + bias) + residual`` for an N:M-sparse weight W [out, in_features].

    Args:
        x: [..., in_features] activations (fp32/fp16/bf16, contiguous); leading dims are flattened.
        values: [out, in_p/m*n] kept values (dtype of x), in group order; in_p = in_features
            rounded up to a multiple of m.
        indices: uint8 [out, in_p/m*n] position 0..m-1 of each kept value inside its group,
            strictly increasing within a group (unused slots hold explicit zeros).
        n, m: the pattern (2:4, 1:4, 4:8, ...), 1 <= n <= m <= 256.
        in_features: columns of the unpadded W.
        bias, activation, residual: fused epilogue ``act(acc + bias[o]) + residual[n, o]``;
            activation in {None, "relu", "gelu", "silu", "tanh"}.
        out: optional preallocated [..., out] result (must not overlap x).
        interpret: True = Triton interpreter, False = compiled (CUDA), None = by device.
        config: override the cost model's launch parameters (block_k >= 16).

    Returns:
        ``out`` (or a new tensor) of shape [..., out].
    """
    width = check_nm(n, m, in_features)
    x2d, lead = flatten_x(x, in_features)
    dev, dtype = x2d.device, x2d.dtype
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError(f"values must be a 2-D [out, {width}] tensor, got {getattr(values, 'shape', values)!r}")
    out_features = values.shape[0]
    check_weight_part(values, "values", dtype, (out_features, width), dev)
    check_weight_part(indices, "indices", torch.uint8, (out_features, width), dev)
    y, bias, residual = check_epilogue_args(x2d, out_features, bias, activation, residual, out, lead)
    interp = should_interpret(dev, interpret)
    launch = plan_nm(x2d, values, indices, n, m, flatten_rows(y, out_features), bias, activation,
                     None if residual is None else flatten_rows(residual, out_features), interp, config)
    _dual.run(launch, interp)
    return y
