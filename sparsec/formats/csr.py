"""CSR: rows dense, columns compressed. The general-purpose unstructured format."""

from __future__ import annotations

from sparsec.formats.base import SparseFormat


class CSR(SparseFormat):
    """Compressed sparse rows of the [out, in] weight: positions per row, column per nonzero."""

    name = "csr"
    priority = 10
    level_map = "(i, j) -> (i : dense, j : compressed)"
