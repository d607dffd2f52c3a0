"""sparsec: a sparse compiler for PyTorch.

    cm = sparsec.sparse_compile(model, (x,), target="cpu")
    y = cm(x); print(cm.report()); print(cm.ir("mlir"))
    cm.save("model.sparsec"); cm = sparsec.load("model.sparsec")
    sparsec.register_format(MyFormat)
"""

from __future__ import annotations

from sparsec.compiler.api import sparse_compile
from sparsec.compiler.compiled_model import CompiledModel, load
from sparsec.compiler.options import CompileOptions
from sparsec.compiler.pipeline import STAGES
from sparsec.errors import (
    CaptureError,
    FormatError,
    InputError,
    KernelCompileError,
    SparsecError,
    UnsupportedError,
)
from sparsec.formats.base import PackedWeight, SparseFormat
from sparsec.formats.registry import formats, get_format, register_format, unregister_format
from sparsec.report.profile import ProfileReport, profile
from sparsec.runtime.training import dense_weight_grads
from sparsec.version import __version__ as __version__

__all__ = [
    "sparse_compile", "load", "profile", "ProfileReport", "dense_weight_grads", "CompileOptions", "CompiledModel", "STAGES",
    "SparseFormat", "PackedWeight", "register_format", "unregister_format", "formats", "get_format",
    "SparsecError", "CaptureError", "InputError", "KernelCompileError", "FormatError", "UnsupportedError",
]


def __getattr__(name: str):
    # sparsec.prune imports only torch; load it on first use so `import sparsec` stays light.
    if name == "prune":
        import importlib

        return importlib.import_module("sparsec.prune")
    if name == "backend":  # torch.compile(model, backend=sparsec.backend)
        from sparsec.compiler.backend import sparsec_backend

        return sparsec_backend
    raise AttributeError(f"module 'sparsec' has no attribute {name!r}")
