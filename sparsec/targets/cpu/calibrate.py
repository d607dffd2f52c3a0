"""Calibrate the cost model on this machine: a ~2 s run of small kernels, cached per machine and versions.

The selector's predictions are rooflines whose rates (FLOP/s of each kernel family, bandwidth, call
overhead) come from here. The first ``sparse_compile`` in a fresh environment measures them; later
ones read ``<cache>/machine-<key>.json``. ``SPARSEC_CALIBRATE=0`` uses the built-in defaults (measured
on the project's 2-core Zen 4 machine).

A calibration taken while another process ran is poison: torch's multi-threaded GEMM slows 5-10x under
load while the sparse kernels barely do, so a cached "dense is slow" made every later compile pick csr
for fully dense weights. So the probes run interleaved, in several rounds, and a result is *disturbed*
when a probe's rounds disagree, when the dense GEMM reaches far below the CPU's nominal peak, or when
the load average says other processes ran. A disturbed result is retried, then replaced by the built-in
rates (with a warning), and never written to disk. A cached result expires, and is re-checked on first
use in a process by one cheap dense probe: a cache that measured dense much slower than it runs now was
taken disturbed and is measured again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time

import torch

from sparsec import knobs
from sparsec.formats.cost import DEFAULT_MACHINE, Machine
from sparsec.host import cpu_name
from sparsec.runtime.cache import cache_dir, cache_enabled, read_json, write_json
from sparsec.runtime.progress import progress
from sparsec.version import __version__

log = logging.getLogger("sparsec")
_MEMO: dict[str, Machine] = {}
#: per machine key: how the Machine in _MEMO was obtained ("measured", "cached", "disturbed: ...")
STATUS: dict[str, str] = {}

# The thresholds that decide whether a calibration run was disturbed (rounds, spread, peak fraction,
# foreign load, retries, cache age, revalidation) are knobs: sparsec/knobs.py, "calibrate_*".
CACHE_VERSION = 2


def nominal_peak_flops(threads: int) -> float | None:
    """A conservative FP32 peak of ``threads`` cores (clock x FLOP/cycle from the ISA flags), or None
    where /proc/cpuinfo does not say. Low on purpose: an underestimate only makes the check laxer."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    mhz, flags = None, set()
    for line in text.splitlines():
        if line.startswith("cpu MHz") and mhz is None:
            mhz = float(line.split(":", 1)[1])
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    if not mhz or not flags:
        return None
    # one 512-bit FMA (Zen 4 runs it as 2x256) or two 256-bit FMAs per cycle: 32 FLOP; AVX2+FMA: at least 16
    per_cycle = 32 if "avx512f" in flags else 16 if {"avx2", "fma"} <= flags else 8
    return threads * mhz * 1e6 * per_cycle


def machine_key(threads: int, dtype: torch.dtype = torch.float32) -> str:
    """Everything a calibration depends on: CPU, core count, threads, package versions, and the dtype
    for 16-bit layers (their rates are measured on their own: torch's bf16/fp16 GEMM and the 16-bit
    sparse kernels run at rates of their own)."""
    parts = [cpu_name(), str(os.cpu_count()), str(threads), torch.__version__, __version__]
    if dtype != torch.float32:
        parts.append(str(dtype))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _low_time(fn, budget: float = 0.05, min_reps: int = 3) -> float:
    """The lower quartile of repeated timings within ``budget`` seconds (load only ever adds time)."""
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


def _foreign_load() -> float:
    try:
        return max(0.0, os.getloadavg()[0] - 1.0) / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _dense_probe(g: torch.Generator, dtype: torch.dtype = torch.float32):
    w, x = torch.randn(1024, 1024, generator=g).to(dtype), torch.randn(256, 1024, generator=g).to(dtype)
    return (lambda: torch.nn.functional.linear(x, w)), 2.0 * 256 * 1024 * 1024


def _probes_16bit(threads: int, dtype: torch.dtype) -> dict:
    """The probes of a 16-bit calibration: torch's dense GEMM/GEMV and the CSR, BSR and N:M (run as CSR)
    kernels in ``dtype``.

    Bandwidths count 4 bytes per element (fp32-equivalent), so the cost model's fp32 byte counts
    divided by them give 16-bit times: the halved bytes are in the rate."""
    from sparsec.codegen.mlir import emit_bitmap
    from sparsec.formats import registry
    from sparsec.targets.cpu.compact_linear import CompactLinear
    from sparsec.targets.cpu.sparse_linear import SparseLinear

    g = torch.Generator().manual_seed(0)

    def kernel(w, n, fmt="csr"):
        layer = SparseLinear("calibrate", registry.get_format(fmt), w.to(dtype), None, None, False,
                             threads=threads)
        xin = torch.randn(n, w.shape[1], generator=g).to(dtype)
        return (lambda: layer(xin)), 2.0 * n * layer.stored

    def compact(fmt, w):  # the bitmap formats' rates at N = 1 and 8: packed bytes per second
        layer = CompactLinear("calibrate", registry.get_format(fmt), w.to(dtype), None, None, False, threads=threads)
        xs = [torch.randn(n, w.shape[1], generator=g).to(dtype) for n in (1, 8)]
        return [((lambda x=x: layer(x)), float(layer.nbytes)) for x in xs]

    # N = 1 streams the weight: the GEMV probe (32 MB) is larger than the L3 (16 MB on the project's
    # machine), as decode-sized layers are; a 2048 x 2048 bf16 GEMV (8 MB) ran from L3, 2x faster
    big = (4096, 4096)
    w2, x1 = torch.randn(*big, generator=g).to(dtype), torch.randn(1, big[1], generator=g).to(dtype)
    sparse = torch.randn(1024, 1024, generator=g) * (torch.rand(1024, 1024, generator=g) < 0.1)
    sparse2 = torch.randn(2048, 2048, generator=g) * (torch.rand(2048, 2048, generator=g) < 0.1)
    # the fp32 calibration's BSR weights (_probes): 10% of 16x16 blocks; 32-aligned blocks for the N = 1 rates
    keep = torch.rand(64, 64, generator=g) < 0.1
    blocks = torch.randn(1024, 1024, generator=g) * keep.repeat_interleave(16, 0).repeat_interleave(16, 1)
    keep = torch.rand(32, 32, generator=g) < 0.1
    aligned = torch.randn(1024, 1024, generator=g) * keep.repeat_interleave(32, 0).repeat_interleave(32, 1)
    one = torch.ones(16, 16, dtype=dtype)
    xt = torch.randn(1, 16, generator=g).to(dtype)
    probes = {}
    if emit_bitmap.available():
        half = torch.randn(*big, generator=g) * (torch.rand(*big, generator=g) < 0.5)
        # a random 2:4 pattern per group (one of the six), without sorting 32M values
        pairs = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]])
        pick = torch.randint(6, (big[0], big[1] // 4), generator=g)
        nm = torch.randn(*big, generator=g) * pairs[pick].reshape(big)
        probes["bitmap_bw"], probes["bitmap_bw8"] = compact("bitmap", half)
        probes["nm24c_bw"], probes["nm24c_bw8"] = compact("nm2:4c", nm)
    return probes | {
        "dense_flops": _dense_probe(g, dtype),
        "dense_gemv_bw": ((lambda: torch.nn.functional.linear(x1, w2)), 4.0 * w2.numel()),
        "sparse_flops": kernel(sparse, 64),
        "sparse_dot_flops": kernel(sparse2, 1),
        "block_flops": kernel(blocks, 64, "bsr16x16"),
        **{f"block_dot_flops_{b}": kernel(aligned, 1, f"bsr{b}x{b}") for b in (8, 16, 32)},
        "structured_flops": kernel(two_four(512, 512, g), 64, "nm2:4"),
        "torch_overhead": ((lambda: torch.nn.functional.linear(xt, one)), 1.0),
    }


def two_four(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    """A random weight keeping the 2 largest of every 4 inputs."""
    w = torch.randn(rows, cols, generator=g)
    groups = w.reshape(rows, -1, 4)
    keep = groups.abs().topk(2, dim=2).indices
    return (groups * torch.zeros_like(groups).scatter_(2, keep, 1.0)).reshape(rows, cols)


def _probes(threads: int) -> dict:
    """name -> (callable, work): the rate is work / time (FLOP/s, B/s, or 1 for an overhead in s)."""
    from sparsec.formats import registry
    from sparsec.targets.cpu.sparse_linear import SparseLinear

    g = torch.Generator().manual_seed(0)

    def weight(rows, cols, density, block=1):
        w = torch.randn(rows, cols, generator=g)
        keep = torch.rand(rows // block, cols // block, generator=g) < density
        return w * keep.repeat_interleave(block, 0).repeat_interleave(block, 1)

    def kernel(fmt, w, n, threads_=1):
        layer = SparseLinear("calibrate", registry.get_format(fmt), w, None, None, False, threads=threads_)
        xin = torch.randn(n, w.shape[1], generator=g)
        return (lambda: layer(xin)), 2.0 * n * layer.stored

    probes = {"dense_flops": _dense_probe(g)}
    w2, x1 = torch.randn(2048, 2048, generator=g), torch.randn(1, 2048, generator=g)
    probes["dense_gemv_bw"] = (lambda: torch.nn.functional.linear(x1, w2)), 4.0 * 2048 * 2048
    probes["sparse_flops"] = kernel("csr", weight(1024, 1024, 0.1), 64)
    probes["sparse_dot_flops"] = kernel("csr", weight(2048, 2048, 0.1), 1)
    probes["block_flops"] = kernel("bsr16x16", weight(1024, 1024, 0.1, 16), 64)
    aligned = weight(1024, 1024, 0.1, 32)  # 32-aligned blocks: every block size stores the same values
    for b in (8, 16, 32):
        probes[f"block_dot_flops_{b}"] = kernel(f"bsr{b}x{b}", aligned, 1)
    probes["structured_flops"] = kernel("nm2:4", two_four(512, 512, g), 64)
    if threads > 1:
        big = weight(2048, 1024, 0.1)
        probes["csr_one_thread"] = kernel("csr", big, 64, 1)
        probes["csr_all_threads"] = kernel("csr", big, 64, threads)
    probes.update(_probes_int8(g, weight(1024, 1024, 0.1)))
    tiny = SparseLinear("calibrate", registry.get_format("csr"), weight(16, 16, 0.5), None, None, False)
    xt, ones = torch.randn(1, 16), torch.ones(16, 16)
    probes["call_overhead"] = (lambda: tiny(xt)), 1.0
    probes["torch_overhead"] = (lambda: torch.nn.functional.linear(xt, ones)), 1.0
    return probes


def _probes_int8(g: torch.Generator, sparse: torch.Tensor) -> dict:
    """The quantize="int8" layers on the f32 probes' shapes and work counts (so select can scale the f32
    rates by the measured ratio): CSR (one thread, N = 64, the VNNI kernel where the host has it) and
    oneDNN's dense int8 GEMM, each with its per-call input quantization."""
    from sparsec.formats import registry
    from sparsec.targets.cpu.int8_linear import Int8DenseLinear, Int8SparseLinear

    layer = Int8SparseLinear("calibrate", registry.get_format("csr"), sparse, None, None, False, threads=1)
    x64 = torch.randn(64, sparse.shape[1], generator=g)
    dense = Int8DenseLinear("calibrate", torch.randn(1024, 1024, generator=g), None, None, False)
    x256 = torch.randn(256, 1024, generator=g)

    def run(mod, x):
        with torch.no_grad():
            mod(x)

    return {"int8_sparse_flops": ((lambda: run(layer, x64)), 2.0 * 64 * int((sparse != 0).sum())),
            "int8_dense_flops": ((lambda: run(dense, x256)), 2.0 * 256 * 1024 * 1024)}


#: probes long enough (~0.1-1 ms) that disagreeing rounds mean a disturbance rather than timer noise
_CHECKED = ("dense_flops", "sparse_flops", "block_flops", "structured_flops")


def measure(threads: int, dtype: torch.dtype = torch.float32) -> tuple[Machine, list[str]]:
    """Run the calibration probes interleaved in ``calibrate_rounds`` rounds; return the rates and the list of signs
    that the run was disturbed (empty when it looks clean). A 16-bit ``dtype`` measures the rates its
    layers are priced with (dense, csr, bandwidth, overhead); the other rates keep the built-in values."""
    load_before = _foreign_load()
    wide = dtype == torch.float32
    probes = _probes(threads) if wide else _probes_16bit(threads, dtype)
    times: dict[str, list[float]] = {k: [] for k in probes}
    for _ in progress(range(knobs.get("calibrate_rounds")), "sparsec calibrate"):
        for name, (fn, _work) in probes.items():
            times[name].append(_low_time(fn))
    problems = []
    for name in (_CHECKED if wide else ("dense_flops", "sparse_flops")):
        spread = max(times[name]) / min(times[name])
        if spread > knobs.get("calibrate_max_spread"):
            problems.append(f"{name} rounds spread {spread:.2f}x (> {knobs.get('calibrate_max_spread')})")
    rates = {}
    for name, (_fn, work) in probes.items():
        best = min(times[name])
        rates[name] = best if work == 1.0 else work / best
    if threads > 1 and wide:
        one, many = rates.pop("csr_one_thread"), rates.pop("csr_all_threads")
        rates["thread_efficiency"] = min(1.0, max(0.0, (many / one - 1) / (threads - 1)))
    rates["bandwidth"] = rates["dense_gemv_bw"]
    peak = nominal_peak_flops(threads)
    if peak and wide and rates["dense_flops"] < knobs.get("calibrate_min_peak_fraction") * peak:
        problems.append(
            f"dense GEMM {rates['dense_flops'] / 1e9:.0f} GFLOP/s is below "
            f"{knobs.get('calibrate_min_peak_fraction'):.0%} of the CPU's nominal {peak / 1e9:.0f}"
        )
    load = max(load_before, _foreign_load())
    if load > knobs.get("calibrate_max_foreign_load"):
        problems.append(f"other processes ran: load average {load:.2f} per core beyond this one")
    return dataclasses.replace(DEFAULT_MACHINE, threads=threads, **rates), problems


def _calibrate(threads: int, dtype: torch.dtype) -> tuple[Machine, list[str]]:
    """Measure, retrying a disturbed run ``calibrate_retries`` times."""
    for attempt in range(knobs.get("calibrate_retries") + 1):
        t = time.perf_counter()
        m, problems = measure(threads) if dtype == torch.float32 else measure(threads, dtype)
        log.info("sparsec: calibration %d took %.1f s: %s", attempt + 1, time.perf_counter() - t, m)
        if not problems:
            return m, []
    return m, problems


def _still_valid(data: dict, dtype: torch.dtype) -> bool:
    """A cached calibration is used while it is young and its dense rate is not far below today's."""
    age = time.time() - float(data.get("measured_at", 0))
    if data.get("version") != CACHE_VERSION or age > knobs.get("calibrate_max_age_s"):
        return False
    fn, work = _dense_probe(torch.Generator().manual_seed(0), dtype)
    now = work / min(_low_time(fn, budget=0.01) for _ in range(2))
    return now <= knobs.get("calibrate_revalidate_faster") * data["machine"]["dense_flops"]


def machine(threads: int, dtype: torch.dtype = torch.float32) -> Machine:
    """The calibrated Machine for ``threads`` (from memory, disk, or a fresh ~2 s measurement); for a
    16-bit ``dtype``, the rates of that dtype's layers (measured on first use, cached under its own key)."""
    key = machine_key(threads, dtype)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / f"machine-{key}.json" if cache_enabled() else None
    data = read_json(path) if path else None
    fields = {f.name for f in dataclasses.fields(Machine)}
    cached = data.get("machine") if isinstance(data, dict) else None
    if isinstance(cached, dict) and set(cached) == fields and _still_valid(data, dtype):
        m, STATUS[key] = Machine(**cached), "cached"
    else:
        m, problems = _calibrate(threads, dtype)
        if problems:
            # the measured rates are unreliable: the built-in ones at least keep dense weights dense
            log.warning(
                "sparsec: calibration disturbed (%s); using the built-in rates, not caching it", "; ".join(problems)
            )
            m = dataclasses.replace(DEFAULT_MACHINE, threads=threads)
            STATUS[key] = "disturbed: " + "; ".join(problems) + " (built-in rates used, nothing cached)"
        else:
            STATUS[key] = "measured"
            if path:
                write_json(path, {"version": CACHE_VERSION, "measured_at": time.time(), "machine": m.as_dict()})
    _MEMO[key] = m
    return m


def describe(threads: int) -> str:
    """One line: how this process got its calibration for ``threads`` (for the report and logs)."""
    return STATUS.get(machine_key(threads), "built-in rates")


__all__ = ["machine", "measure", "describe", "cpu_name", "machine_key", "nominal_peak_flops"]
