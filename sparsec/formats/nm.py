"""N:M structured sparsity along the input dimension (2:4, 1:4, 4:8): MLIR's structured[n, m] level."""

from __future__ import annotations

from sparsec.formats.base import SparseFormat
from sparsec.formats.facts import WeightFacts


class NM(SparseFormat):
    """At most n nonzeros in every group of m consecutive inputs; stores n values and n positions per group."""

    name = "nm"
    priority = 30
    rate_name = "structured_flops"

    def __init__(self, n: int = 2, m: int = 4) -> None:
        if not 0 < n < m:
            raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
        self.n, self.m = n, m
        self.level_map = f"(i, j) -> (i : dense, j floordiv {m} : dense, j mod {m} : structured[{n}, {m}])"

    @property
    def label(self) -> str:
        """e.g. ``nm2:4``."""
        return f"nm{self.n}:{self.m}"

    def accepts(self, facts: WeightFacts) -> str | None:
        """Only weights that satisfy the pattern in every group."""
        key = f"{self.n}:{self.m}"
        if not facts.nm.get(key, False):
            if getattr(facts, "nm_outputs", {}).get(key, False):  # facts pickled before it existed lack it
                return (f"{key} along the outputs, not the inputs: N:M kernels skip weights within groups of "
                        f"{self.m} consecutive inputs (the reduction dimension), so this layer is "
                        f"{1 - facts.density:.0%} unstructured; prune groups along the inputs (dim 0 of a "
                        f"weight stored [in, out], such as transformers' Conv1D)")
            return f"not {key} in every group of {self.m} inputs"
        return None

    def stored_values(self, facts: WeightFacts) -> int:
        """n of every m entries, padding included."""
        groups = -(-facts.shape[1] // self.m)
        return facts.shape[0] * groups * self.n

    def index_bytes(self, facts: WeightFacts) -> int:
        """One coordinate per stored value (MLIR keeps it 32-bit; 2 bits would do)."""
        return 4 * self.stored_values(facts)
