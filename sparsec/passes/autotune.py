"""autotune: time candidate formats of a layer on its real weights and keep the measured fastest.

``autotune=True`` times every distinct layer; the default ``"auto"`` times only the layers select
marked (``layer.verify``): a sparse choice for a weight of density >= 0.5, or a prediction close to
dense. ``False`` times nothing, and a marked implausible sparse choice then falls back to dense.

Layers are grouped by shape, row count and pattern summary (density, N:M, block fill), so a model with
72 equal-shaped layers pays for a handful of measurements. Each candidate is timed in interleaved rounds
two ways: wall time at the compile's thread count, and CPU time on one thread. A sparse format replaces
dense only if it wins both, the first by ``min_speedup``: under load torch's multi-threaded GEMM slows
5-10x while the sparse kernels barely do, so wall time alone can crown a kernel that is slower on a
quiet machine, whereas one thread's CPU time hardly moves with load. The candidates are the modules the
compile's target runs (``ctx.target.time``: SparseLinear's MLIR kernels on the CPU, TritonLinear's Triton
kernels on "gpu" and "interpret"), and decisions are cached on disk under that target's machine key
(device, dtype, package versions); the report shows predicted and measured times side by side.
"""

from __future__ import annotations

import hashlib

from torch.fx import GraphModule

from sparsec import knobs
from sparsec.compiler.context import CompileContext
from sparsec.passes.analyze import effective_weight
from sparsec.runtime.cache import cache_dir, cache_enabled, read_json, write_json
from sparsec.runtime.progress import progress
from sparsec.targets.cpu.threads import default_threads


def _group_key(layer, threads: int, target) -> str:
    """The cache key of a layer group's measurement: its pattern, and where it was measured
    (``target``'s name and machine key, so the CPU, a GPU and the interpreter never share a decision)."""
    f = layer.facts
    pattern = (
        f.shape, layer.n, round(f.density, 2), tuple(sorted(f.nm.items())),
        tuple((b, round(v, 2)) for b, v in sorted(f.block_fill.items())), threads,
    )
    where = f"{target.name}|{target.machine_key(threads, layer.dtype)}"
    return hashlib.sha1(f"v3|{pattern}|{where}".encode()).hexdigest()[:20]


def _decide(measured: dict, min_speedup: float, threads: int, thread_efficiency: float) -> tuple[str, str]:
    """The measured winner and why: the fastest sparse format by wall time, if it beats dense both ways.

    Wall time by ``min_speedup``; and one thread's CPU time by ``min_speedup`` times how much better
    torch's GEMM may scale over ``threads`` than the sparse kernel (taken as ideal for dense, and as
    ``thread_efficiency`` for sparse), so a load that slowed only the dense wall time cannot decide.
    """
    wall, cpu1 = measured["wall"], measured["cpu1"]
    sparse = [k for k in wall if k != "dense"]
    if not sparse:
        return "dense", "only dense was timed"
    best = min(sparse, key=wall.get)
    gain, gain1 = wall["dense"] / wall[best], cpu1["dense"] / cpu1[best]
    need1 = min_speedup * threads / (1 + (threads - 1) * thread_efficiency)
    figures = (
        f"{best} {wall[best] * 1e6:.0f} us vs dense {wall['dense'] * 1e6:.0f} us ({gain:.2f}x; "
        f"1-thread CPU time {gain1:.2f}x)"
    )
    if gain >= min_speedup and gain1 >= need1:
        return best, figures
    return "dense", f"{figures}: sparse must win {min_speedup:.2f}x, and {need1:.2f}x on one thread"


def _wanted(layer, ctx: CompileContext) -> bool:
    mode = ctx.options.autotune
    if layer.quantize:  # the measurement times the float kernels, not the int8 ones
        return False
    if mode is True:
        return True
    # the measurement times F.linear shapes: other kinds keep predictions, as do targets whose rates are
    # not calibrated (the GPU ones: their predictions are not marked by a poisoned calibration)
    return mode == "auto" and bool(layer.verify) and ctx.target.tunes_marked_layers and layer.m.kind == "linear"


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Replace the cost model's choice by the measured fastest candidate, per layer group."""
    threads = ctx.target.tune_threads(ctx.options.threads or default_threads())
    layers = [n.meta["sparsec"] for n in gm.graph.nodes if "sparsec" in n.meta and n.meta["sparsec"].costs]
    groups: dict[str, list] = {}
    lines = []
    for layer in layers:
        if layer.name in ctx.pinned_formats:
            continue  # a saved artifact's choice is kept as it was measured then
        if _wanted(layer, ctx):
            groups.setdefault(_group_key(layer, threads, ctx.target), []).append(layer)
        elif layer.verify and layer.format != "dense" and layer.facts.density >= knobs.get("dense_guard"):
            layer.reason = f"dense: {layer.verify}, but no measurement confirmed it (autotune={ctx.options.autotune})"
            layer.format = "dense"
            lines.append(f"{layer.name}: {layer.reason}")
    bar = progress(groups.items(), "sparsec autotune", total=len(groups))
    for key, members in bar:
        first = members[0]
        bar.set_postfix_str(first.name[-40:])
        path = cache_dir() / f"autotune-{key}.json" if cache_enabled() else None
        measured = read_json(path) if path else None
        if not _valid(measured):
            ranked = sorted(first.costs, key=first.costs.get)
            labels = list(dict.fromkeys(["dense", *ranked[:knobs.get("autotune_top_k")]]))
            weight = effective_weight(gm, first.m).detach()
            measured = ctx.target.time(first, labels, weight, threads)
            if path:
                write_json(path, measured)
            source = f"timed {', '.join(labels)}"
        else:
            source = "measurement read from the cache"
        # an implausible win (dense, 2:4 weights) is trusted only if it holds with no sparse thread scaling
        efficiency = 0.0 if first.facts.density >= knobs.get("dense_guard") else ctx.machine.thread_efficiency
        best, why = _decide(measured, ctx.options.min_speedup, threads, efficiency)
        for layer in members:
            layer.measured = dict(measured["wall"])
            if best in layer.costs and ctx.options.force_format is None:  # a forced selection still applies
                layer.format = best
                because = f" (measured because {layer.verify})" if layer.verify else ""
                layer.reason = f"autotuned: {why} at N={layer.n}{because}"
        lines.append(f"group of {len(members)} ({', '.join(x.name for x in members)}): {source} -> {best}: {why}")
    bar.close()
    if not groups:
        where = "" if ctx.target.tunes_marked_layers else f", on the CPU target (this is {ctx.target.name!r})"
        lines.append(f"no layer timed (autotune={ctx.options.autotune!r}"
                     + (f": 'auto' times only layers select marked to verify{where})" if
                        ctx.options.autotune == "auto" else ")"))
    ctx.summaries["autotune"] = "\n".join(lines)
    return gm


def _valid(measured) -> bool:
    return (
        isinstance(measured, dict) and set(measured) == {"wall", "cpu1"}
        and all(isinstance(d, dict) and "dense" in d and all(isinstance(v, float) for v in d.values())
                for d in measured.values())
    )
