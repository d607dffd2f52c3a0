"""COO: one (row, column) pair per nonzero. Rarely fastest; kept for hypersparse weights and as a reference."""

from __future__ import annotations

from sparsec.formats.base import SparseFormat
from sparsec.formats.facts import WeightFacts


class COO(SparseFormat):
    """Coordinates, structure-of-arrays: a row list (compressed, non-unique) and a column per nonzero."""

    name = "coo"
    priority = 40
    level_map = "(i, j) -> (i : compressed(nonunique), j : singleton(soa))"

    def index_bytes(self, facts: WeightFacts) -> int:
        """Two 4-byte coordinates per nonzero."""
        return 8 * facts.nnz + 8
