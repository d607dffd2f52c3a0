"""Calibrate the cost model on this machine: a ~2 s run of small kernels, cached per machine and versions.

The selector's predictions are rooflines whose rates (FLOP/s of each kernel family, bandwidth, call
overhead) come from here. The first ``sparse_compile`` in a fresh environment measures them; later
ones read ``<cache>/machine-<key>.json``. ``SPARSEC_CALIBRATE=0`` uses the built-in defaults (measured
on the project's 2-core Zen 4 machine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
import time

import torch

from sparsec.formats.cost import DEFAULT_MACHINE, Machine
from sparsec.runtime.cache import cache_dir, cache_enabled, read_json, write_json

log = logging.getLogger("sparsec")
_MEMO: dict[str, Machine] = {}


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(threads: int) -> str:
    """Everything a calibration depends on: CPU, core count, threads, package versions."""
    import sparsec

    parts = [cpu_name(), str(os.cpu_count()), str(threads), torch.__version__, sparsec.__version__]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _low_time(fn, budget: float = 0.15, min_reps: int = 5) -> float:
    """The lower quartile of repeated timings: a rate is what the machine reaches when nothing else
    runs, and load from other processes only ever adds time (a busy shared machine measured torch's
    2-thread GEMM at 17 GFLOP/s by the median, against ~190 quiet)."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) > 200:
            break
    times.sort()
    return times[len(times) // 4]


def measure(threads: int) -> Machine:
    """Run the calibration kernels and return the measured rates."""
    from sparsec.formats import registry
    from sparsec.runtime.sparse_linear import SparseLinear

    g = torch.Generator().manual_seed(0)

    def weight(rows, cols, density, block=1):
        w = torch.randn(rows, cols, generator=g)
        keep = torch.rand(rows // block, cols // block, generator=g) < density
        return w * keep.repeat_interleave(block, 0).repeat_interleave(block, 1)

    rates = {}
    w, x = torch.randn(1024, 1024, generator=g), torch.randn(256, 1024, generator=g)
    rates["dense_flops"] = 2 * 256 * 1024 * 1024 / _low_time(lambda: torch.nn.functional.linear(x, w))
    w2, x1 = torch.randn(2048, 2048, generator=g), torch.randn(1, 2048, generator=g)
    rates["dense_gemv_bw"] = 4 * 2048 * 2048 / _low_time(lambda: torch.nn.functional.linear(x1, w2))

    def kernel_rate(fmt, w, n, threads_=1):
        layer = SparseLinear("calibrate", registry.get_format(fmt), w, None, None, False, threads=threads_)
        xin = torch.randn(n, w.shape[1], generator=g)
        return 2 * n * layer.stored / _low_time(lambda: layer(xin)), layer, xin

    ws = weight(1024, 1024, 0.1)
    rates["sparse_flops"], _, _ = kernel_rate("csr", ws, 64)
    rates["sparse_dot_flops"], _, _ = kernel_rate("csr", weight(2048, 2048, 0.1), 1)
    rates["block_flops"], _, _ = kernel_rate("bsr16x16", weight(1024, 1024, 0.1, 16), 64)
    aligned = weight(1024, 1024, 0.1, 32)  # 32-aligned blocks: every block size stores the same values
    for b in (8, 16, 32):
        rates[f"block_dot_flops_{b}"], _, _ = kernel_rate(f"bsr{b}x{b}", aligned, 1)
    nm = weight(512, 512, 1.0)
    groups = nm.reshape(512, -1, 4)
    keep = groups.abs().topk(2, dim=2).indices
    nm = (groups * torch.zeros_like(groups).scatter_(2, keep, 1.0)).reshape(512, 512)
    rates["structured_flops"], _, _ = kernel_rate("nm2:4", nm, 64)
    if threads > 1:
        big = weight(2048, 1024, 0.1)
        one, _, _ = kernel_rate("csr", big, 64, 1)
        many, _, _ = kernel_rate("csr", big, 64, threads)
        rates["thread_efficiency"] = min(1.0, max(0.0, (many / one - 1) / (threads - 1)))
    tiny = SparseLinear("calibrate", registry.get_format("csr"), weight(16, 16, 0.5), None, None, False)
    xt = torch.randn(1, 16)
    rates["call_overhead"] = _low_time(lambda: tiny(xt))
    rates["torch_overhead"] = _low_time(lambda: torch.nn.functional.linear(xt, torch.ones(16, 16)))
    rates["bandwidth"] = rates["dense_gemv_bw"]
    return dataclasses.replace(DEFAULT_MACHINE, threads=threads, **rates)


def machine(threads: int) -> Machine:
    """The calibrated Machine for ``threads`` (from memory, disk, or a fresh ~2 s measurement)."""
    if os.environ.get("SPARSEC_CALIBRATE", "1") == "0":
        return dataclasses.replace(DEFAULT_MACHINE, threads=threads)
    key = machine_key(threads)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / f"machine-{key}.json" if cache_enabled() else None
    data = read_json(path) if path else None
    fields = {f.name for f in dataclasses.fields(Machine)}
    if data and set(data) == fields:
        m = Machine(**data)
    else:
        t = time.perf_counter()
        m = measure(threads)
        log.info("sparsec: calibrated the cost model in %.1f s: %s", time.perf_counter() - t, m)
        if path:
            write_json(path, m.as_dict())
    _MEMO[key] = m
    return m
