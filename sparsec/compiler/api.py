"""``sparse_compile``: the entry point."""

from __future__ import annotations

import torch

from sparsec.compiler.compiled_model import CompiledModel
from sparsec.compiler.options import CompileOptions
from sparsec.errors import UnsupportedError


def resolve_target(target: str) -> str:
    """'auto' means the GPU when one is present (and Triton is installed), else the CPU.

    "gpu" without a CUDA GPU, or "gpu"/"interpret" without Triton, raise UnsupportedError.
    """
    from sparsec.codegen.triton import cuda_available, triton_available

    if target == "auto":
        return "gpu" if cuda_available() and triton_available() else "cpu"
    if target in ("gpu", "interpret") and not triton_available():
        raise UnsupportedError(f"target={target!r} needs the triton package (pip install triton)")
    if target == "gpu" and not cuda_available():
        raise UnsupportedError("target='gpu' needs a CUDA GPU and none is visible; use target='cpu' or 'interpret'")
    return target


def sparse_compile(
    model: torch.nn.Module,
    example_inputs: tuple,
    example_kwargs: dict | None = None,
    *,
    target: str = "auto",
    **options,
) -> CompiledModel:
    """Compile ``model`` for inputs like ``example_inputs``; returns a module computing the same outputs.

    ``target``: "auto" | "cpu" | "gpu" | "interpret". Other keyword options are the fields of
    :class:`sparsec.CompileOptions` (formats, force_format, threads, dynamic, min_weight_numel, fuse,
    dump_dir, max_variants).
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    opts = CompileOptions(target=target, **options)
    return CompiledModel(model, tuple(example_inputs), example_kwargs, opts, resolve_target(opts.target))
