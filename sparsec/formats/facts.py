"""What the analyze pass learns about one weight: density, N:M compliance, block fill, empty rows/columns.

The facts are computed once per weight from its values, stored in ``node.meta["sparsec"]`` and read by
every format's ``accepts`` and ``cost``. The matrix is always seen in [out, in] (torch Linear) layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

NM_PATTERNS = ((2, 4), (1, 4), (4, 8))
BLOCK_SIZES = (8, 16, 32)


@dataclass
class WeightFacts:
    """Sparsity facts of one [out, in] weight."""

    shape: tuple[int, int]
    nnz: int
    nm: dict[str, bool] = field(default_factory=dict)  # "2:4" -> every group of 4 along `in` holds <= 2
    block_fill: dict[int, float] = field(default_factory=dict)  # b -> fraction of b x b blocks not all zero
    block_nonzero: dict[int, int] = field(default_factory=dict)  # b -> count of b x b blocks not all zero
    zero_rows: int = 0
    zero_cols: int = 0

    @property
    def numel(self) -> int:
        """Entries of the dense matrix."""
        return self.shape[0] * self.shape[1]

    @property
    def density(self) -> float:
        """Fraction of nonzero entries."""
        return self.nnz / max(self.numel, 1)

    def summary(self) -> str:
        """One line for ``ir("sparse")`` and the report."""
        nm = ",".join(k for k, ok in self.nm.items() if ok) or "-"
        blocks = " ".join(f"b{b}={f:.2f}" for b, f in self.block_fill.items())
        return (
            f"shape={self.shape[0]}x{self.shape[1]} density={self.density:.3f} nnz={self.nnz} nm={nm} "
            f"{blocks} zero_rows={self.zero_rows} zero_cols={self.zero_cols}"
        )


def compute_facts(weight: torch.Tensor) -> WeightFacts:
    """Measure the sparsity pattern of a 2-d weight in [out, in] layout."""
    w = weight.detach()
    if w.dim() != 2:
        raise ValueError(f"sparsity facts need a 2-d weight, got shape {tuple(w.shape)}")
    nz = w != 0
    out_f, in_f = w.shape
    facts = WeightFacts(shape=(out_f, in_f), nnz=int(nz.sum()))
    facts.zero_rows = int((~nz.any(dim=1)).sum())
    facts.zero_cols = int((~nz.any(dim=0)).sum())
    for n, m in NM_PATTERNS:
        pad = (-in_f) % m
        groups = torch.nn.functional.pad(nz, (0, pad)).reshape(out_f, -1, m)
        facts.nm[f"{n}:{m}"] = bool((groups.sum(dim=2) <= n).all())
    for b in BLOCK_SIZES:
        pr, pc = (-out_f) % b, (-in_f) % b
        padded = torch.nn.functional.pad(nz, (0, pc, 0, pr))
        blocks = padded.reshape((out_f + pr) // b, b, (in_f + pc) // b, b).any(dim=3).any(dim=1)
        facts.block_nonzero[b] = int(blocks.sum())
        facts.block_fill[b] = facts.block_nonzero[b] / max(blocks.numel(), 1)
    return facts
