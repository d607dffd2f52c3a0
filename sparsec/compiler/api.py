"""``sparse_compile``: the entry point."""

from __future__ import annotations

import torch

from sparsec.compiler.options import CompileOptions
from sparsec.errors import UnsupportedError
from sparsec.runtime.compiled_model import CompiledModel


def resolve_target(target: str) -> str:
    """'auto' means the GPU when one is present, else the CPU."""
    if target == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
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
    resolved = resolve_target(opts.target)
    if resolved != "cpu":
        raise UnsupportedError(
            f"target {resolved!r} is not available in this build yet; use target='cpu' "
            "(the Triton GPU path is tracked separately)"
        )
    return CompiledModel(model, tuple(example_inputs), example_kwargs, opts)
