"""BucketedSparseLinear: a SparseLinear whose row count N is data-dependent (mixture-of-experts routing).

Kernels are specialized to N. An expert sees a different number of tokens on every call, so compiling
per exact N would compile a kernel on most calls; instead N is rounded up to a bucket (powers of two and
1.5x powers of two: at most 1.5x the work, about two kernel shapes per octave), the extra rows are
zero-padded in and sliced off the result.
"""

from __future__ import annotations

import torch

from sparsec.targets.cpu.sparse_linear import SparseLinear


def bucket(n: int) -> int:
    """The smallest bucket >= n: n itself up to 2, then 2^k or 3 * 2^(k-1). ``bucket(bucket(n)) == bucket(n)``."""
    if n <= 2:
        return n
    p = 1 << (n - 1).bit_length()  # next power of two >= n
    three_halves = 3 * p // 4
    return three_halves if n <= three_halves and three_halves > p // 2 else p


class BucketedSparseLinear(SparseLinear):
    """SparseLinear that runs N rows through the kernel of ``bucket(N)`` rows."""

    def kernels(self, n: int):
        """The kernels of the bucket that ``n`` rows run in."""
        return super().kernels(bucket(n))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Same contract as SparseLinear.forward; pads the rows to the bucket."""
        n = 1
        for s in x.shape[:-1]:
            n *= int(s)
        nb = bucket(n)
        if nb == n or x.shape[-1] != self.in_features:
            return super().forward(x, residual)
        xp = x.new_zeros(nb, self.in_features)
        xp[:n] = x.reshape(n, self.in_features)
        rp = None
        if residual is not None:
            rp = residual.new_zeros(nb, self.out_features)
            rp[:n] = residual.reshape(n, self.out_features)
        return super().forward(xp, rp)[:n].reshape(*x.shape[:-1], self.out_features)
