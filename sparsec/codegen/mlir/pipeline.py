"""The lowering pipeline from sparse linalg to the LLVM dialect, spelled out pass by pass.

It is MLIR's stock ``sparsifier`` pipeline minus ``linalg-fuse-elementwise-ops`` (which folds the
output's zero fill into a constant and so makes every call malloc and copy a fresh result) (the epilogue's
activations are expanded to arith ops before they get here, see mathfn.py). A failing run writes its input to a file and names the one command that reproduces it.
"""

from __future__ import annotations

import os
import tempfile

from sparsec.errors import KernelCompileError


def pipeline_text(vl: int, index32: bool = True) -> str:
    """The pass pipeline for vector length ``vl`` (0 disables vectorization)."""
    sparsify = f"sparsification-and-bufferization{{vl={vl} enable-simd-index32={'true' if index32 and vl else 'false'}}}"
    passes = [
        "sparse-assembler{direct-out=true}",
        "func.func(linalg-generalize-named-ops)",
        sparsify,
        "sparse-storage-specifier-to-llvm",
        "func.func(canonicalize)",
        "func.func(convert-linalg-to-loops)",
        "func.func(convert-vector-to-scf)",
        "func.func(expand-realloc)",
        "expand-strided-metadata",
        "lower-affine",
        "func.func(convert-scf-to-cf)",
        "convert-vector-to-llvm",
        "func.func(arith-expand)",
        "func.func(convert-math-to-llvm)",
        "convert-math-to-libm",
        "convert-vector-to-llvm",
        "convert-to-llvm",
        "reconcile-unrealized-casts",
    ]
    return "builtin.module(" + ", ".join(passes) + ")"


def vector_pipeline_text() -> str:
    """Lowering for kernels written directly in scf/vector/memref (no sparse_tensor types)."""
    return "builtin.module(convert-scf-to-cf, convert-vector-to-llvm, convert-to-llvm, reconcile-unrealized-casts)"


def run_pipeline(module, pipeline: str, source: str, name: str) -> None:
    """Run ``pipeline`` on ``module`` in place; on failure dump ``source`` and raise with a repro command."""
    from torch_mlir import passmanager

    try:
        pm = passmanager.PassManager.parse(pipeline)
        pm.run(module.operation)
    except Exception as exc:  # MLIR raises MLIRError or ValueError; both carry the diagnostics
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".mlir")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        # torch-mlir-opt does not register the sparse passes, so the repro runs the same Python bindings.
        raise KernelCompileError(
            f"MLIR pipeline failed for kernel {name}: {exc}\n"
            f"The input is in {path}; reproduce with:\n"
            f"  python -m sparsec.codegen.mlir.repro {path} '{pipeline}'"
        ) from exc
