"""autotune (opt-in, ``autotune=True``): time the leading candidates of each distinct layer, keep the fastest.

Layers are grouped by shape, row count and pattern summary (density, N:M, block fill), so a model with
72 equal-shaped layers pays for a handful of measurements. Decisions are cached on disk per machine
and package versions; the report then shows predicted and measured times side by side.
"""

from __future__ import annotations

import hashlib
import time

import torch
from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.formats import registry
from sparsec.passes.analyze import effective_weight
from sparsec.runtime.cache import cache_dir, cache_enabled, read_json, write_json
from sparsec.runtime.calibrate import machine_key
from sparsec.runtime.progress import progress
from sparsec.runtime.sparse_linear import SparseLinear
from sparsec.runtime.threads import default_threads

#: candidates timed per layer group, in predicted order (dense is always timed too)
TOP_K = 3


def _group_key(layer, threads: int) -> str:
    f = layer.facts
    pattern = (
        f.shape, layer.n, round(f.density, 2), tuple(sorted(f.nm.items())),
        tuple((b, round(v, 2)) for b, v in sorted(f.block_fill.items())), threads,
    )
    return hashlib.sha1(f"{pattern}|{machine_key(threads)}".encode()).hexdigest()[:20]


def _time(fn, budget: float = 0.1) -> float:
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 100):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _measure(gm: GraphModule, layer, labels: list[str], threads: int) -> dict[str, float]:
    w = effective_weight(gm, layer.m).detach().float()
    x = torch.randn(layer.n, w.shape[1], generator=torch.Generator().manual_seed(0))
    out = {}
    for label in labels:
        if label == "dense":
            out[label] = _time(lambda: torch.nn.functional.linear(x, w))
        else:
            mod = SparseLinear(layer.name, registry.get_format(label), w, None, None, False, threads=threads)
            out[label] = _time(lambda m=mod: m(x))
    return out


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Replace the cost model's choice by the measured fastest candidate, per layer group."""
    if not ctx.options.autotune:
        return gm
    threads = ctx.options.threads or default_threads()
    layers = [n.meta["sparsec"] for n in gm.graph.nodes if "sparsec" in n.meta and n.meta["sparsec"].costs]
    groups: dict[str, list] = {}
    for layer in layers:
        groups.setdefault(_group_key(layer, threads), []).append(layer)
    bar = progress(groups.items(), "sparsec autotune", total=len(groups))
    for key, members in bar:
        first = members[0]
        bar.set_postfix_str(first.name[-40:])
        path = cache_dir() / f"autotune-{key}.json" if cache_enabled() else None
        measured = read_json(path) if path else None
        if not measured or not all(isinstance(v, float) for v in measured.values()):
            ranked = sorted(first.costs, key=first.costs.get)
            labels = list(dict.fromkeys(["dense", *ranked[:TOP_K]]))
            measured = _measure(gm, first, labels, threads)
            if path:
                write_json(path, measured)
        best = min(measured, key=measured.get)
        for layer in members:
            layer.measured = dict(measured)
            if best in layer.costs:  # a forced or restricted selection still applies
                layer.format = best
                layer.reason = (
                    f"autotuned: {best} measured {measured[best] * 1e6:.0f} us vs dense "
                    f"{measured['dense'] * 1e6:.0f} us at N={layer.n}"
                )
    bar.close()
    return gm
