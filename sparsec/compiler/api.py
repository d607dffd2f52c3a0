"""``sparse_compile``: the entry point."""

from __future__ import annotations

import dataclasses

import torch

from sparsec.compiler.compiled_model import CompiledModel
from sparsec.compiler.options import CompileOptions
from sparsec.errors import UnsupportedError
from sparsec.targets import get_target


def resolve_target(target: str) -> str:
    """'auto' means the GPU when one is present (and Triton is installed), else the CPU.

    A target that cannot run here ("gpu" without a CUDA GPU, "gpu"/"interpret" without Triton) raises
    UnsupportedError saying why (``Target.unavailable``).
    """
    if target == "auto":
        return "gpu" if get_target("gpu").unavailable() is None else "cpu"
    why = get_target(target).unavailable()
    if why is not None:
        raise UnsupportedError(why)
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
    dump_dir, max_variants, quantize).
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    opts = CompileOptions(target=target, **options)
    opts = dataclasses.replace(opts, target=resolve_target(opts.target))  # "auto" says what it resolved to
    return CompiledModel(model, tuple(example_inputs), example_kwargs, opts, opts.target)
