"""SparseLeft: ``act(A @ H + bias[:, None]) + residual`` with a constant sparse LEFT operand A [M, K].

The CPU kernel computes Y^T = W X^T with X^T [in, N] innermost-dense; a constant left operand is that
product with W = A and X^T = H, so H [K, N] goes to the kernel as it is (no transpose) and the [M, N]
result comes back in place. This covers SpMV (H [K]), SpMM (H [K, N]), batched H [..., K, N] (the batch
folds into N) and sparse row scaling (A = diag(s)).

Columns are processed in tiles of at most knob ``column_tile``: the kernels are specialized to N, and their
compile time grows faster than linearly in N (CSR: 0.1 s at N=1024, 0.4 s at 4096, 1.2 s at 8192, and
it was minutes at 65536 with an earlier kernel), so a large N runs as several calls of a few kernel
shapes. A tile is a column slice of H, which costs a copy in and out, so tiles are as large as compile
time allows.
"""

from __future__ import annotations

import torch

from sparsec import knobs
from sparsec.errors import InputError
from sparsec.targets.cpu.sparse_linear import SparseLinear


def tile_sizes(n: int, tile: int | None = None) -> list[int]:
    """The distinct column counts of the kernel calls that process ``n`` columns."""
    tile = tile or knobs.get("column_tile")
    if n <= tile:
        return [n]
    return sorted({tile, n % tile} - {0})


class SparseLeft(SparseLinear):
    """``A @ H`` (plus the fused epilogue) for a constant sparse A, packed like a Linear weight."""

    def kernels(self, n: int):
        """The kernels of every slab for the calls that process ``n`` columns."""
        if n <= knobs.get("column_tile"):
            return super().kernels(n)
        return [k for size in tile_sizes(n) for k in SparseLinear.kernels(self, size)]

    def forward(self, h: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``h``: [K] or [..., K, N]; ``residual`` has the output's shape ([M] or [..., M, N])."""
        if not isinstance(h, torch.Tensor) or h.dim() < 1:
            raise InputError(f"{self.layer_name}: the right operand must be a tensor of rank >= 1")
        k, m = self.in_features, self.out_features
        if h.dim() == 1:
            if h.shape[0] != k:
                raise InputError(f"{self.layer_name}: vector of shape {tuple(h.shape)}, expected [{k}]")
            r = residual.reshape(m, 1) if residual is not None else None
            return self._columns(h.reshape(k, 1), r).reshape(m)
        if h.shape[-2] != k:
            raise InputError(
                f"{self.layer_name}: right operand of shape {tuple(h.shape)}, expected [..., {k}, N] "
                f"for the constant [{m}, {k}] left operand"
            )
        if h.dim() == 2:
            return self._columns(h, residual)
        lead, n = h.shape[:-2], h.shape[-1]
        hk = h.movedim(-2, 0).reshape(k, -1)  # batch folded into N: [K, B*N]
        rk = residual.movedim(-2, 0).reshape(m, -1) if residual is not None else None
        return self._columns(hk, rk).reshape(m, *lead, n).movedim(0, -2)

    def _columns(self, hk: torch.Tensor, rk: torch.Tensor | None) -> torch.Tensor:
        """[M, T] = epilogue(A @ hk [K, T]), in column tiles."""
        total = hk.shape[1]
        tile = knobs.get("column_tile")
        if total <= tile:
            return SparseLinear.forward(self, hk.t(), rk.t() if rk is not None else None).t()
        out = torch.empty(self.out_features, total)
        for c0 in range(0, total, tile):
            c1 = min(total, c0 + tile)
            r = rk[:, c0:c1].t() if rk is not None else None
            out[:, c0:c1] = SparseLinear.forward(self, hk[:, c0:c1].t(), r).t()
        return out
