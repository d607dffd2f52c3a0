"""sparsec.codegen.triton: Triton GPU kernels for sparse linear layers (BSR, CSR, N:M) with fused epilogues.

The same kernels run compiled on CUDA tensors and in Triton's interpreter on CPU tensors (see
``available.py`` and ``_dual.py``), and compile ahead of time for a ``GPUTarget`` without a GPU
(``compile_target.py``). Layouts and design: docs/triton.md.

Only :mod:`.available` is imported eagerly, so ``triton_available()`` works where triton is not
installed; the rest loads on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from .available import (
    cuda_available,
    get_interpret_override,
    interpret_mode,
    set_interpret,
    should_interpret,
    triton_available,
)

_LAZY = {
    "bsr_linear": "bsr",
    "csr_linear": "csr",
    "nm_linear": "nm",
    "apply_epilogue": "epilogue",
    "LaunchConfig": "launch_config",
    "SemiStructuredWeight": "semi_structured",
    "prepare_semi_structured": "semi_structured",
    "semi_structured_linear": "semi_structured",
    "semi_structured_supported": "semi_structured",
    "compile_for_target": "compile_target",
    "compile_all": "compile_target",
    "kernel_names": "compile_target",
    "kernel_source": "compile_target",
    "kernel_variants": "compile_target",
    "KernelVariant": "compile_target",
}

__all__ = [
    "cuda_available",
    "get_interpret_override",
    "interpret_mode",
    "set_interpret",
    "should_interpret",
    "triton_available",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
