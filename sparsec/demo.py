"""``sparsec demo``: prune the built-in models to 90% by magnitude, compile, check, report, time."""

from __future__ import annotations

import time

import torch

from sparsec.compiler.api import sparse_compile
from sparsec.models import demo_models


def prune_linears(model: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """Zero ``sparsity`` of every Linear weight by magnitude (sparsec.prune), baked into plain weights."""
    from sparsec.prune import MagnitudePruner

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    pruner = MagnitudePruner(sparsity)
    pruner.prepare(model, linears)
    pruner.step()
    return pruner.finalize()


def timings(fn, *args, repeats: int = 30, warmup: int = 3) -> list[float]:
    """Sorted wall times (s) of ``repeats`` calls of ``fn(*args)`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return sorted(times)


def median_seconds(fn, *args, repeats: int = 30, warmup: int = 3) -> float:
    """Median wall time of ``fn(*args)``."""
    times = timings(fn, *args, repeats=repeats, warmup=warmup)
    return times[len(times) // 2]


def run_demo(sparsity: float = 0.9, repeats: int = 30, out=print) -> dict[str, dict]:
    """Run the demo; returns per model the max error, speedup and compile time."""
    results = {}
    for name, (model, inputs) in demo_models().items():
        prune_linears(model, sparsity)
        t0 = time.perf_counter()
        cm = sparse_compile(model, inputs, target="cpu")
        compile_s = time.perf_counter() - t0
        with torch.no_grad():
            ref = model(*inputs)
            got = cm(*inputs)
        err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        if err > 1e-4:
            raise AssertionError(f"{name}: compiled output differs from eager (relative error {err:.2e})")
        with torch.no_grad():
            t_eager = median_seconds(model, *inputs, repeats=repeats)
            t_comp = median_seconds(cm, *inputs, repeats=repeats)
        out(f"\n== {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
            f"{sparsity:.0%} of Linear weights zeroed by magnitude, input {[tuple(x.shape) for x in inputs]}")
        out(str(cm.report()))
        out(f"max relative error vs eager: {err:.2e} (tolerance 1e-4)")
        out(f"compile: {compile_s:.2f} s   eager: {t_eager * 1e3:.2f} ms   sparsec: {t_comp * 1e3:.2f} ms   "
            f"speedup: {t_eager / t_comp:.2f}x (median of {repeats}, torch threads={torch.get_num_threads()})")
        results[name] = {"error": err, "speedup": t_eager / t_comp, "compile_s": compile_s}
    return results


def demo_compiled(stage_model: str = "mlp", sparsity: float = 0.9):
    """The demo's compiled model (for ``sparsec inspect``)."""
    model, inputs = demo_models()[stage_model]
    prune_linears(model, sparsity)
    return sparse_compile(model, inputs, target="cpu")
