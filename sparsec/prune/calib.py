"""Calibration for one-shot LM pruning (Wanda, SparseGPT): layer selection, input hooks, weight layout."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import InputError


def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's transformers Conv1D: a Linear whose weight is stored [in, out]."""
    return any(c.__name__ == "Conv1D" for c in type(module).__mro__) and hasattr(module, "nf")  # also parametrized


def prunable(model: nn.Module, modules: Iterable[str | nn.Module] | None) -> dict[str, nn.Module]:
    """Target layers: given names/modules, or every Linear / Conv1D except ``lm_head`` and tied weights."""
    by_name = dict(model.named_modules())
    if modules is not None:
        by_id = {id(m): n for n, m in by_name.items()}
        out = {}
        for item in modules:
            name = item if isinstance(item, str) else by_id.get(id(item))
            if name is None or name not in by_name:
                raise InputError(f"{item!r} is not a submodule of {type(model).__name__}")
            if not (isinstance(by_name[name], nn.Linear) or is_conv1d(by_name[name])):
                raise InputError(f"{name!r} is a {type(by_name[name]).__name__}; only Linear/Conv1D are pruned")
            out[name] = by_name[name]
        if not out:
            raise InputError("modules is empty: nothing to prune")
        return out
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    out = {n: m for n, m in by_name.items()
           if (isinstance(m, nn.Linear) or is_conv1d(m)) and n.split(".")[-1] != "lm_head"
           and owners.get(id(m.weight), 0) == 1}  # a tied weight is also an embedding: leave it
    if not out:
        raise InputError(f"{type(model).__name__} has no Linear/Conv1D layers to prune")
    return out


def weight_2d(module: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (a transposed view for Conv1D)."""
    w = module.weight
    return w.t() if is_conv1d(module) else w


def run_batch(model: nn.Module, batch) -> None:
    """Call the model on one calibration batch: a tensor, a tuple/list of args, or a dict of kwargs."""
    if isinstance(batch, torch.Tensor):
        model(batch)
    elif isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        raise InputError(f"calibration batches must be tensors, tuples or dicts, got {type(batch).__name__}")


def as_batches(calib_batches) -> list:
    """Materialize the calibration batches (sequential pruning iterates them several times)."""
    if calib_batches is None or isinstance(calib_batches, (torch.Tensor, dict)):
        raise InputError("calib_batches must be an iterable of model inputs (e.g. a list of tensors)")
    batches = list(calib_batches)
    if not batches:
        raise InputError("calib_batches is empty: one-shot pruning needs calibration data")
    return batches


def collect(model: nn.Module, layers: dict[str, nn.Module], batches: list, stat) -> dict[str, torch.Tensor]:
    """Run the batches and accumulate ``stat(x2d)`` (x2d: [tokens, in] float64) per layer's input."""
    acc: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            s = stat(x)
            acc[name] = s if name not in acc else acc[name] + s
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            for b in batches:
                run_batch(model, b)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in acc]
    if missing:
        raise InputError(f"layers {missing} were never called by the calibration batches")
    return acc


def call_order(model: nn.Module, layers: dict[str, nn.Module], batch) -> list[str]:
    """Layer names in the order of their first call on one batch (the order sequential pruning follows)."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=n: order.append(n) if n not in order else None)
               for n, m in layers.items()]
    try:
        with torch.no_grad():
            run_batch(model, batch)
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in layers if n not in order]


def parse_pattern(sparsity: float | None, pattern: str | None) -> tuple[float, tuple[int, int] | None]:
    """Validate ``sparsity`` xor ``pattern="N:M"``; returns (sparsity, (n, m) or None)."""
    from .nm import _check_nm
    from .schedule import check_sparsity
    if pattern is None:
        return check_sparsity(0.5 if sparsity is None else sparsity), None
    if sparsity is not None:
        raise InputError("give either sparsity or pattern, not both")
    try:
        n, m = (int(p) for p in str(pattern).split(":"))
    except ValueError:
        raise InputError(f"pattern must look like '2:4', got {pattern!r}") from None
    _check_nm(n, m)
    return 1.0 - n / m, (n, m)
