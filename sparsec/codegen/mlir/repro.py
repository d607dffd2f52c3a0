"""Reproduce a failing kernel pipeline: ``python -m sparsec.codegen.mlir.repro FILE.mlir 'PIPELINE'``.

Runs the pass pipeline on the dumped module and prints the result (or MLIR's diagnostics).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Parse FILE, run PIPELINE on it, print the module."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    from torch_mlir import ir, passmanager

    with open(argv[0]) as f:
        source = f.read()
    with ir.Context(), ir.Location.unknown():
        module = ir.Module.parse(source)
        passmanager.PassManager.parse(argv[1]).run(module.operation)
        print(module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
