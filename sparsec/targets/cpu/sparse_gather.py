"""Gather kernels over a constant sparse matrix S's nonzeros: SDDMM and masked reductions.

These products are not a matmul with S as an operand, so the MLIR SpMM kernel does not apply; they run
as torch index kernels that touch only S's nonzeros (COO: rows, cols, values):

- SDDMM ``S * (X @ B)``: for every nonzero (i, j), ``S[i, j] * <X[i, :], B[:, j]>``; O(nnz K) instead
  of the dense O(M N K), the rest of the output is exactly zero.
- masked reduction ``(S * X).sum(dims)`` over S's dimensions: gathers X at the nonzeros and adds them
  per row (dim -1), per column (dim -2) or in total; O(nnz) instead of O(M N).

Gathered operands are processed in chunks of nonzeros so the temporary stays below knob ``gather_chunk_elems``.
"""

from __future__ import annotations

import torch

from sparsec import knobs
from sparsec.errors import InputError
from sparsec.runtime.module import SparseModule


class _SparseConst(SparseModule):
    """Holds S as COO (int64 rows/cols, float values) and reports its size like SparseLinear does."""

    def __init__(self, name: str, s: torch.Tensor) -> None:
        super().__init__()
        if s.dim() != 2:
            raise InputError(f"{name}: the sparse operand must be 2-d, got shape {tuple(s.shape)}")
        self.layer_name = name
        self.shape = tuple(s.shape)
        idx = torch.nonzero(s.detach())
        self.register_buffer("rows", idx[:, 0].contiguous())
        self.register_buffer("cols", idx[:, 1].contiguous())
        self.register_buffer("values", s.detach()[idx[:, 0], idx[:, 1]].contiguous())
        self.stored = int(idx.shape[0])
        self.nbytes = self.stored * (4 + 8 + 8)

    def kernels(self, n: int) -> list:
        """No MLIR kernels: these run as torch index ops."""
        return []

    def _check(self, t: torch.Tensor, what: str, shape: tuple) -> None:
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{self.layer_name}: {what} must be a tensor, got {type(t).__name__}")
        if tuple(t.shape[-2:]) != shape:
            raise InputError(f"{self.layer_name}: {what} of shape {tuple(t.shape)}, expected [..., {shape[0]}, "
                             f"{shape[1]}]")


class SparseSDDMM(_SparseConst):
    """``S * (x @ b)`` with S constant: x [..., M, K], b [..., K, N] (batch dims broadcast like matmul)."""

    def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The sampled product, dense [..., M, N] with zeros off S's pattern."""
        m, n = self.shape
        if not isinstance(x, torch.Tensor) or not isinstance(b, torch.Tensor) or x.dim() < 2 or b.dim() < 2:
            raise InputError(f"{self.layer_name}: SDDMM operands must be tensors of rank >= 2")
        k = x.shape[-1]
        self._check(x, "left operand", (m, k))
        self._check(b, "right operand", (k, n))
        lead = torch.broadcast_shapes(x.shape[:-2], b.shape[:-2])
        # Gathered rows must be contiguous in memory: a strided gather misses the cache on every element.
        x = x.expand(*lead, m, k).contiguous()
        bt = b.expand(*lead, k, n).transpose(-1, -2).contiguous()  # [..., N, K]: rows of B^T are gathered
        dtype = torch.promote_types(x.dtype, b.dtype)
        out = torch.zeros(*lead, m, n, dtype=dtype, device=x.device)
        flat = out.view(*lead, m * n)
        step = max(1, knobs.get("gather_chunk_elems") // max(1, k * max(1, lead.numel())))
        for c0 in range(0, self.stored, step):
            r, c = self.rows[c0 : c0 + step], self.cols[c0 : c0 + step]
            dots = (x.index_select(-2, r) * bt.index_select(-2, c)).sum(-1)  # [..., chunk]
            flat[..., r * n + c] = dots * self.values[c0 : c0 + step].to(dtype)
        return out


class SparseMaskedSum(_SparseConst):
    """``(S * x).sum(dims, keepdim)`` with S constant [M, N], x [..., M, N]; dims among the last two."""

    def __init__(self, name: str, s: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> None:
        super().__init__(name, s)
        self.dims = tuple(sorted(dims))  # normalized: -2, -1 or both
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sums of x weighted by S over S's nonzeros only."""
        m, n = self.shape
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise InputError(f"{self.layer_name}: masked reduction input must be a tensor of rank >= 2")
        self._check(x, "input", (m, n))
        lead = x.shape[:-2]
        xf = x.reshape(-1, m * n)
        dtype = torch.promote_types(x.dtype, self.values.dtype)
        if self.dims == (-1,):
            out, index = torch.zeros(xf.shape[0], m, dtype=dtype), self.rows
        elif self.dims == (-2,):
            out, index = torch.zeros(xf.shape[0], n, dtype=dtype), self.cols
        else:
            out, index = torch.zeros(xf.shape[0], 1, dtype=dtype), None
        step = max(1, knobs.get("gather_chunk_elems") // max(1, xf.shape[0]))
        for c0 in range(0, self.stored, step):
            r, c = self.rows[c0 : c0 + step], self.cols[c0 : c0 + step]
            g = xf.index_select(1, r * n + c).to(dtype) * self.values[c0 : c0 + step].to(dtype)
            if index is None:
                out[:, 0] += g.sum(1)
            else:
                out.index_add_(1, index[c0 : c0 + step], g)
        if self.dims == (-1,):
            shape = (*lead, m, 1) if self.keepdim else (*lead, m)
        elif self.dims == (-2,):
            shape = (*lead, 1, n) if self.keepdim else (*lead, n)
        else:
            shape = (*lead, 1, 1) if self.keepdim else tuple(lead)
        return out.reshape(shape)
