"""The CompiledModel side of ``sparsec.profile``: the same metrics read off the lowered graph.

Executed FLOPs and weight bytes are the chosen kernel's (stored entries, packed values + indices); sparse
layers are timed by hooks on their runtime modules; layers left dense run as torch ops inside the graph
(no per-layer time, executed = dense FLOPs, weight bytes in the weight's dtype).
"""

from __future__ import annotations

import torch

from sparsec.report import energy
from sparsec.report.hwfit import mask_fit
from sparsec.report.layer_profile import LayerProfile, ProfileReport, Timer, numel, timed_calls


def _source_weight(cm, layer) -> tuple[torch.Tensor | None, bool]:
    """The layer's weight in the model the graph was compiled from, and whether it is stored [in, out]."""
    from sparsec.compiler.frozen import Frozen

    src = cm._model[0]
    target = getattr(layer.m, "weight", None) or f"{layer.name}.weight"
    try:
        w = src.saved_tensor(target) if isinstance(src, Frozen) else src.get_parameter(target)
    except (AttributeError, KeyError):
        return None, False
    out_f, in_f = layer.facts.shape
    return w, w.dim() == 2 and tuple(w.shape) == (in_f, out_f) and in_f != out_f


def profile_compiled(cm, inputs: tuple, kwargs: dict, repeats: int) -> ProfileReport:
    """Profile a CompiledModel's example-shape variant on ``inputs``."""
    from sparsec.compiler.pipeline import layers_of

    cm(*inputs, **kwargs)  # compile the variant these inputs need before reading its layers
    variant = cm._find_variant(list(torch.utils._pytree.tree_leaves((inputs, kwargs))), cm._mode()) or cm._primary
    layers = layers_of(variant.module)
    mods = {x.name: x.module for x in layers if x.module is not None}
    timer = Timer(mods)
    try:
        total_us, rapl = timed_calls(cm, inputs, kwargs, repeats)
    finally:
        timer.close()
    by_name = {r.name: r for r in variant.report.layers}
    rows = []
    for layer in layers:
        rep = by_name.get(layer.name)
        if rep is None:
            continue
        w, transposed = _source_weight(cm, layer)
        el = torch.empty((), dtype=layer.dtype).element_size()
        out_f, in_f = layer.facts.shape
        executed = rep.sparse_flops if rep.format != "dense" else rep.dense_flops
        wbytes = rep.sparse_bytes if rep.format != "dense" else out_f * in_f * el
        abytes = layer.n * (in_f + out_f) * el
        io = timer.io.get(layer.name)
        if io is not None:
            abytes = numel(io[0]) * io[2] + numel(io[1]) * io[3]
        rows.append(LayerProfile(
            name=layer.name, kind=rep.format, shape=(out_f, in_f), n=layer.n, dtype=str(layer.dtype).replace(
                "torch.", ""), dense_flops=rep.dense_flops, executed_flops=executed, weight_bytes=int(wbytes),
            activation_bytes=int(abytes), time_us=timer.median_us(layer.name),
            energy_uj=energy.estimate_uj(executed, wbytes + abytes),
            fit=mask_fit(w, transposed) if w is not None else {},
        ))
    return ProfileReport(rows, total_us, rapl, compiled=True)
