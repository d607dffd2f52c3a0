"""BSR: dense bh x bw blocks, block rows dense, block columns compressed. Any block shape."""

from __future__ import annotations

import math

from sparsec.formats import cost as costmodel
from sparsec.formats.base import SparseFormat
from sparsec.formats.facts import BLOCK_SIZES, WeightFacts


class BSR(SparseFormat):
    """Block sparse rows. Stores every block that holds a nonzero, in full."""

    name = "bsr"
    priority = 20
    rate_name = "block_flops"

    def __init__(self, bh: int = 16, bw: int | None = None) -> None:
        bw = bh if bw is None else bw
        if bh <= 0 or bw <= 0:
            raise ValueError(f"BSR block must be positive, got {bh}x{bw}")
        self.bh, self.bw = bh, bw
        self.level_map = (
            f"(i, j) -> (i floordiv {bh} : dense, j floordiv {bw} : compressed, "
            f"i mod {bh} : dense, j mod {bw} : dense)"
        )

    @property
    def label(self) -> str:
        """e.g. ``bsr16x16``."""
        return f"bsr{self.bh}x{self.bw}"

    def _blocks(self, facts: WeightFacts) -> int:
        if self.bh == self.bw and self.bh in facts.block_nonzero:
            return facts.block_nonzero[self.bh]
        # Unmeasured block shape: assume nonzeros spread evenly (the pessimistic case).
        total = math.ceil(facts.shape[0] / self.bh) * math.ceil(facts.shape[1] / self.bw)
        return min(total, facts.nnz)

    def accepts(self, facts: WeightFacts) -> str | None:
        """Only when blocks are mostly full: past 2x padding the format moves more than CSR."""
        stored = self._blocks(facts) * self.bh * self.bw
        if stored > 2 * max(facts.nnz, 1):
            return f"blocks {self.bh}x{self.bw} would store {stored / max(facts.nnz, 1):.1f}x the nonzeros"
        return None

    def cost(self, facts: WeightFacts, n: int, machine: costmodel.Machine = costmodel.DEFAULT_MACHINE) -> float:
        """As the base class, but N = 1 uses the dot-form rate measured for the nearest block size."""
        if n != 1:
            return super().cost(facts, n, machine)
        nearest = min((8, 16, 32), key=lambda b: abs(b - max(self.bh, self.bw)))
        rate = getattr(machine, f"block_dot_flops_{nearest}")
        return costmodel.sparse_time(
            self.stored_values(facts), self.index_bytes(facts), facts.shape[0], facts.shape[1], n, rate, machine
        )

    def stored_values(self, facts: WeightFacts) -> int:
        """Whole blocks."""
        return self._blocks(facts) * self.bh * self.bw

    def index_bytes(self, facts: WeightFacts) -> int:
        """One column index per block plus positions per block row."""
        return 4 * self._blocks(facts) + 4 * (math.ceil(facts.shape[0] / self.bh) + 1)


DEFAULT_BLOCKS = tuple(BSR(b) for b in BLOCK_SIZES)
