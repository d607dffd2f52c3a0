"""What a call's inputs must be for a compiled variant: their structure, dtypes, devices and shapes.

The checks raise an InputError that names the input and what differs before any kernel runs; ``input_specs``
reads each variant's accepted shapes off its exported program and ``fits`` matches a call against them.
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

from sparsec.compiler.capture import Captured
from sparsec.errors import InputError


def explain_structure(example_flat: list, in_spec, flat: list, spec) -> None:
    """Raise an InputError saying how the inputs' structure differs from the example inputs'."""
    ex_args, ex_kwargs = pytree.tree_unflatten(example_flat, in_spec)
    args, kwargs = pytree.tree_unflatten(flat, spec)
    if len(args) != len(ex_args):
        extra = f" and keyword input(s) {sorted(kwargs)}" if kwargs else ""
        raise InputError(
            f"the model was compiled for {len(ex_args)} positional input(s), got {len(args)}{extra} "
            f"(wrong number of inputs; pass them the way the example inputs were passed)"
        )
    if set(kwargs) != set(ex_kwargs):
        raise InputError(f"keyword inputs {sorted(kwargs)} differ from the compiled {sorted(ex_kwargs)}")
    for i, (got, ex) in enumerate(zip(args, ex_args, strict=True)):
        if isinstance(ex, torch.Tensor) and not isinstance(got, torch.Tensor):
            raise InputError(f"input {i}: expected a tensor, got {type(got).__name__}")
    raise InputError("the nested structure of the inputs differs from the example inputs'")


def check_leaves(flat: list, example_flat: list, primary) -> None:
    """Every tensor input's type, dtype, device, rank and fixed dimensions, before any kernel runs."""
    for i, (got, ex) in enumerate(zip(flat, example_flat, strict=True)):
        if isinstance(ex, torch.Tensor):
            if not isinstance(got, torch.Tensor):
                raise InputError(f"input {i}: expected a tensor, got {type(got).__name__}")
            if got.dtype != ex.dtype:
                raise InputError(f"input {i}: dtype {got.dtype}, the model was compiled for {ex.dtype}")
            if got.device != ex.device:
                raise InputError(f"input {i}: on device {got.device}, the model was compiled for {ex.device}")
            if got.dim() != ex.dim():
                raise InputError(
                    f"input {i}: shape {tuple(got.shape)} has rank {got.dim()}, the model was compiled for "
                    f"rank {ex.dim()} (example shape {tuple(ex.shape)})"
                )
            fixed = primary.specs[i]
            if primary.captured.dynamic and fixed is not None:
                for d, (size, want) in enumerate(zip(got.shape, fixed[0], strict=True)):
                    # a size 0/1 in the example is static only because export specializes it: the
                    # model does not fix it, so another size gets its own variant (CompiledModel._new_variant)
                    if want is not None and size != want and ex.shape[d] > 1:
                        raise InputError(
                            f"input {i}: shape {tuple(got.shape)}, but dimension {d} must be {want} "
                            f"(the model fixes it; example shape {tuple(ex.shape)})"
                        )


def input_specs(cap: Captured) -> list:
    """For every flattened user input: (shape with None for dynamic dims, (min, max) per dim), else None."""
    from torch.export.graph_signature import ConstantArgument, InputKind
    from torch.fx.experimental.symbolic_shapes import free_symbols, optimization_hint

    ep = cap.program
    ranges = {str(k): (v.lower, v.upper) for k, v in ep.range_constraints.items()}
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs = []
    for in_spec in ep.graph_signature.input_specs:
        if in_spec.kind != InputKind.USER_INPUT:
            continue
        # A Python int/float/bool/str input is baked into the graph by export: a call must pass the same
        # value (another value compiles its own variant, see fits). graph_signature.user_inputs lists such
        # inputs by value, not name, so they are matched through the input specs.
        if isinstance(in_spec.arg, ConstantArgument):
            specs.append(("const", in_spec.arg.value))
            continue
        val = placeholders[in_spec.arg.name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            specs.append(("const", val))
            continue
        shape, rng = [], []
        for s in val.shape:
            if isinstance(s, int):
                shape.append(s)
                rng.append((s, s))
            else:
                syms = [str(x) for x in free_symbols(s)]
                if len(syms) == 1 and syms[0] in ranges:
                    shape.append(None)
                    rng.append(ranges[syms[0]])
                else:
                    # A symbol export specialized away (a guard pins it): the dimension is fixed.
                    size = int(optimization_hint(s))
                    shape.append(size)
                    rng.append((size, size))
        specs.append((tuple(shape), tuple(rng)))
    return specs


def fits(spec, x) -> bool:
    """Whether input ``x`` fits a variant's ``spec`` (input_specs): rank and dimension ranges, or the value
    export baked in."""
    if spec is None:
        return True
    if spec[0] == "const":
        # the type too: True == 1 == 1.0 in Python, but export specialized the graph on one of them
        return not isinstance(x, torch.Tensor) and type(x) is type(spec[1]) and x == spec[1]
    if not isinstance(x, torch.Tensor) or x.dim() != len(spec[0]):
        return False
    for size, (lo, hi) in zip(x.shape, spec[1], strict=True):
        if size < lo or (hi is not None and finite_bound(hi) and size > hi):
            return False
    return True


def finite_bound(v) -> bool:
    """Whether a dimension's upper bound is a finite number (export gives inf or sympy's oo otherwise)."""
    try:
        return float(v) != float("inf")
    except (TypeError, ValueError):
        return False
