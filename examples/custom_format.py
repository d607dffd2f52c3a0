"""A custom sparse format in a few lines: CSC, defined by nothing but its MLIR level map.

Packing, unpacking, the cost estimate and the CPU kernel all follow from the map.
Run: python examples/custom_format.py
"""

import torch

import sparsec
from sparsec.demo import prune_linears
from sparsec.models import MLP


class CSC(sparsec.SparseFormat):
    """Compressed sparse columns of the [out, in] weight."""

    name = "csc"
    priority = 15
    level_map = "(i, j) -> (j : dense, i : compressed)"


def main() -> None:
    """Register CSC, compile an MLP with it, compare with eager."""
    sparsec.register_format(CSC)
    torch.manual_seed(0)
    model = prune_linears(MLP(256, 1024, 256).eval(), 0.9)
    x = torch.randn(32, 256)
    cm = sparsec.sparse_compile(model, (x,), target="cpu", force_format="csc")
    print(cm.report())
    print("max abs error vs eager:", float((cm(x) - model(x)).abs().max()))


if __name__ == "__main__":
    main()
