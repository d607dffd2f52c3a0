"""SparseModule: the base of every runtime module a target builds for a sparse layer.

A target's ``module(...)`` (sparsec/targets/) returns one of these; the lowered graph calls it. The base
says what every runtime module has, so the compiler, the report and the artifact writer ask the module
instead of probing it with ``hasattr``: the layer's name and format, how many values and bytes its
packed weight holds, and the ahead-of-time compiled kernels it runs for a row count (``kernels(n)``:
MLIR kernels on the CPU; empty for modules whose kernels compile elsewhere, e.g. Triton's own cache).
"""

from __future__ import annotations

import torch


class SparseModule(torch.nn.Module):
    """A runtime module computing one sparse layer (or gather site) of a compiled graph."""

    #: the layer's name in the source model (report rows, error messages)
    layer_name: str = ""
    #: stored values of the packed weight (nonzeros plus the explicit zeros the format keeps)
    stored: int = 0
    #: bytes of the packed weight: values, indices and metadata
    nbytes: int = 0

    def kernels(self, n: int) -> list:
        """The compiled kernels a call with ``n`` rows runs, compiling them if needed (none by default)."""
        return []

    def prepare(self, n: int) -> list:
        """Every kernel any call with ``n`` rows may run, compiled (or loaded) now so that no call pays for it:
        what the compiler and a load call. By default the kernels of ``kernels(n)``."""
        return self.kernels(n)
