"""Compiled (sparse_compile) vs eager speed of a finalized model: 1-thread CPU time, same process."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter

import torch
from torch import nn

from sparsec import sparse_compile
from sparsec.errors import SparsecError


def cpu_time(fn, x: torch.Tensor, reps: int) -> float:
    """CPU seconds per call (process time: what this process used, whatever else runs on the machine)."""
    t = time.process_time()
    for _ in range(reps):
        fn(x)
    return (time.process_time() - t) / reps


@torch.no_grad()
def measure(model: nn.Module, example: torch.Tensor, rounds: int = 7, reps: int = 3) -> dict:
    """Compile ``model`` for ``example`` (input ids), check it against eager, time both interleaved.

    Returns per-call CPU ms (medians over ``rounds``), eager/compiled ratio, compile wall time, the
    chosen weight formats and the load average; a model that fails to compile gives ``{"error": ...}``.
    """
    model.eval()
    load = os.getloadavg()[0]
    t0 = time.time()
    try:
        cm = sparse_compile(model, (example,), target="cpu")
    except SparsecError as exc:  # reported in the table, not hidden
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", "load": load}
    compile_s = time.time() - t0
    ref, out = model(example).logits, cm(example).logits
    diff = float((ref - out).abs().max())
    eager_t, comp_t = [], []
    for _ in range(rounds):
        eager_t.append(cpu_time(lambda x: model(x), example, reps))
        comp_t.append(cpu_time(lambda x: cm(x), example, reps))
    eager, comp = statistics.median(eager_t), statistics.median(comp_t)
    formats = Counter(r.format for r in cm.report().layers if r.name != "lm_head")
    return {"eager_ms": 1e3 * eager, "compiled_ms": 1e3 * comp, "ratio": eager / comp, "compile_s": compile_s,
            "max_abs_diff": diff, "formats": dict(sorted(formats.items())), "load": load,
            "threads": torch.get_num_threads()}
