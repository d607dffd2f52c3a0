"""The CPU benchmark harness behind ``sparsec bench`` (see benchmarks/README.md).

``run_bench(config, out, command)`` runs the grid (shapes x N x sparsity x pattern against torch dense,
torch.sparse CSR/BSR and scipy CSR, every row checked) and the end-to-end models (demo MLP, HF BERT-base),
computes the issue's targets from the records and writes the report, the JSON and the plot.
"""

from __future__ import annotations

from sparsec.bench.cli import main

__all__ = ["main"]
