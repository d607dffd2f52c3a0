"""``sparsec.profile(model, inputs)``: what each layer really executes, moves, costs in time and energy, and how
well its mask fits sparse hardware — for an eager model and for a CompiledModel alike.

Per layer: dense FLOPs (``2 N out in``, conv: per output pixel), executed FLOPs (eager runs every one; a
compiled sparse layer runs its kernel's stored entries), effective sparsity (``1 - executed / dense``: zeros
actually skipped), bytes moved (weight values + indices as stored, input and output activations, each in its
real dtype), measured time (median over ``repeats`` calls, by forward hooks; a compiled model's dense layers
run inside the graph and have no per-layer time), the energy estimate (sparsec/report/energy.py) and the mask
fit (sparsec/report/hwfit.py).
"""

from __future__ import annotations

import torch

from sparsec.report import energy
from sparsec.report.hwfit import mask_fit
from sparsec.report.layer_profile import LayerProfile, ProfileReport, Timer, numel, timed_calls


def _weight_layers(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str, bool]]:
    """name -> (module, kind, weight stored [in, out]) for every Linear, Conv2d and HF Conv1D."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out[name] = (mod, "linear", False)
        elif isinstance(mod, torch.nn.Conv2d):
            out[name] = (mod, "conv2d", False)
        elif type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None:
            out[name] = (mod, "conv1d-hf", True)
    return out


def profile(model: torch.nn.Module, inputs, kwargs: dict | None = None, repeats: int = 5) -> ProfileReport:
    """Profile ``model`` (an nn.Module or a CompiledModel) on ``inputs``; see the module docstring."""
    from sparsec.compiler.compiled_model import CompiledModel

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    inputs, kwargs = tuple(inputs), kwargs or {}
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if isinstance(model, CompiledModel):
        from sparsec.report.profile_compiled import profile_compiled

        return profile_compiled(model, inputs, kwargs, repeats)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"profile needs a torch.nn.Module or a CompiledModel, got {type(model).__name__}")
    layers = _weight_layers(model)
    timer = Timer({k: v[0] for k, v in layers.items()})
    try:
        total_us, rapl = timed_calls(model, inputs, kwargs, repeats)
    finally:
        timer.close()
    rows = []
    for name, (mod, kind, transposed) in layers.items():
        if name not in timer.io:
            continue  # not called on these inputs
        in_shape, out_shape, in_el, out_el = timer.io[name]
        w = mod.weight
        fit = mask_fit(w, transposed)
        if kind == "conv2d":
            n = out_shape[0] * out_shape[2] * out_shape[3] if len(out_shape) == 4 else out_shape[1] * out_shape[2]
            per_row = w[0].numel()
            dense = 2 * n * w.shape[0] * per_row
        else:
            out_f, in_f = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
            n = max(1, numel(in_shape) // in_f)
            dense = 2 * n * out_f * in_f
        wbytes = w.numel() * w.element_size() + (mod.bias.numel() * mod.bias.element_size()
                                                  if getattr(mod, "bias", None) is not None else 0)
        abytes = numel(in_shape) * in_el + numel(out_shape) * out_el
        rows.append(LayerProfile(
            name=name, kind=kind, shape=tuple(w.shape), n=n, dtype=str(w.dtype).replace("torch.", ""),
            dense_flops=dense, executed_flops=dense, weight_bytes=wbytes, activation_bytes=abytes,
            time_us=timer.median_us(name), energy_uj=energy.estimate_uj(dense, wbytes + abytes), fit=fit,
        ))
    return ProfileReport(rows, total_us, rapl, compiled=False)


__all__ = ["LayerProfile", "ProfileReport", "profile"]
