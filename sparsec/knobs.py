"""Every environment variable and named tuning constant of sparsec, typed, in one table.

Read a knob with ``knobs.get("name")``; override knobs for a block (tests, experiments) with
``with knobs.scope(name=value, ...):``. A knob with an environment variable takes, in order: the innermost
``scope`` value, the environment variable (read at each lookup, so a test's ``setenv`` applies), its
default. The table in docs/knobs.md lists them all (``python -m sparsec.knobs`` prints it).

Per-compile settings a user chooses per model (target, formats, threads...) live in
``sparsec.compiler.options.CompileOptions``; a knob that is also an option (``calibrate``, ``dump_dir``)
only supplies the option's default, so each behaviour has one switch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    """One knob: its type, default (a value or a zero-argument function), environment variable and meaning."""

    name: str
    type: type
    default: Any
    env: str | None
    doc: str

    def default_value(self) -> Any:
        """The default, computed now when it is a function (a path under $HOME, say)."""
        return self.default() if callable(self.default) else self.default


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sparsec")


_TABLE: tuple[Knob, ...] = (
    # --- environment ------------------------------------------------------------------------------------
    Knob("cache_dir", str, _default_cache_dir, "SPARSEC_CACHE_DIR",
         "directory of the on-disk cache (calibration, autotune decisions, compiled kernels); "
         "default $XDG_CACHE_HOME/sparsec or ~/.cache/sparsec"),
    Knob("cache", bool, True, "SPARSEC_CACHE", "read and write the on-disk cache (0: recompute everything)"),
    Knob("graph_cache", bool, True, "SPARSEC_GRAPH_CACHE",
         "reuse a compile of the same model, weights, inputs and options from an earlier process "
         "(sparsec/compiler/graph_cache.py; 0: always compile)"),
    Knob("graph_cache_mb", int, 4096, "SPARSEC_GRAPH_CACHE_MB",
         "the captured-graph cache's size limit; the least recently used entries are evicted above it"),
    Knob("calibrate", bool, True, "SPARSEC_CALIBRATE",
         "default of CompileOptions.calibrate: measure the CPU cost-model rates (~2 s, cached)"),
    Knob("dump_dir", str, None, "SPARSEC_DUMP_DIR", "default of CompileOptions.dump_dir: write every stage here (NN-stage.txt)"),
    Knob("triton_interpret", bool, False, "TRITON_INTERPRET",
         "Triton's own switch: run GPU kernels in the interpreter (target='interpret' sets it per launch)"),
    Knob("progress", bool, True, "SPARSEC_PROGRESS", "progress bars on a terminal's stderr (0: never)"),
    Knob("cc", str, "cc", "CC", "C compiler/linker the MLIR kernels are linked with"),
    # --- tuning constants ---------------------------------------------------------------------------------
    Knob("column_tile", int, 4096, None, "sparse-left kernels: columns per kernel call (kernels are N-specialized)"),
    Knob("conv_block", int, 512, None, "sparse conv: output positions per kernel call"),
    Knob("gather_chunk_elems", int, 1 << 18, None, "gather kernels: largest temporary, in elements"),
    Knob("poison_outputs", bool, False, None, "fill kernel output buffers with NaN first (tests: catch unwritten)"),
    Knob("parallel_min_work", int, 2_000_000, None, "CPU: below this work a call runs on one thread"),
    Knob("omp_dispatch", bool, True, None,
         "CPU: slabs run on torch's libgomp threads (its spinning workers), not on a second thread pool"),
    # off by default: on a quiet machine stealing measured 1.2-1.9x slower per CSR/BSR layer than torch's
    # OpenMP threads (the pool thread competes with torch's spinning worker); on a machine shared with other
    # busy processes it avoids the barrier wait for a descheduled OpenMP thread (16 ms -> 0.5 ms per call)
    Knob("steal_dispatch", bool, False, "SPARSEC_STEAL_DISPATCH",
         "CPU: the caller and pool threads steal slabs off one counter; no wait for a thread that is not running "
         "(for machines shared with other busy processes)"),
    Knob("bsr_vector_kernel", bool, True, None,
         "CPU BSR layers run the hand-scheduled natural-layout kernel (False: the sparsifier's)"),
    # off by default: on 8x8-32x32 blocks at N=64 the widened 16-bit kernel ran 0.76-0.93x the speed of the f32
    # kernel between casts (1-thread CPU time, interleaved; docs/kernels.md); bf16 with vdpbf16ps runs natively
    Knob("bsr_widened_16bit", bool, False, None,
         "16-bit BSR layers without vdpbf16ps (fp16; bf16 without AVX512-BF16) run the widened-FMA 16-bit "
         "kernel instead of the f32 kernel between casts"),
    Knob("hybrid_block_fill", float, 0.5, None,
         "hybrid format: a block at least this full goes to the BSR part, the other nonzeros to the CSR part"),
    Knob("hybrid_rest_row_cost", float, 35.0, None,
         "hybrid format: the CSR remainder's fixed cost per output row, in nonzeros of CSR work (measured)"),
    Knob("hybrid_min_block_share", float, 0.2, None,
         "hybrid format: only when the full blocks hold at least this share of the nonzeros (else CSR alone)"),
    Knob("csr_natural_kernel", bool, True, None,
         "CPU CSR layers at N >= 2 read X [N, in] and write Y [N, out] (False: the Y^T = W X^T kernel)"),
    Knob("slab_row_quantum", int, 64, None,
         "CPU: thread slabs are cut at about equal nonzeros, on multiples of this many rows"),
    Knob("csr_k_tile", int, 128, None,
         "CPU CSR kernel: input columns per tile (X^T rows one walk touches, L1-sized); 0 untiled"),
    Knob("csr_tiles_outer_kb", int, 256, None,
         "CPU natural CSR kernel: input tiles outermost (one X tile transposed at a time) when the [in, 64] X "
         "panel exceeds this many KB and the [out, 64] sums do not; 0: whenever there are 2+ tiles"),
    Knob("diag_max_density", float, 0.5, None, "diag scaling is matched only at or below this density"),
    Knob("autotune_top_k", int, 3, None, "autotune: candidates timed per layer group (dense is always timed)"),
    Knob("dense_conv_speedup", float, 2.0, None, "select: torch's conv2d rate over a GEMM's (operand_kinds.py)"),
    Knob("conv_sparse_slowdown", float, 2.0, None, "select: sparse conv kernels' slowdown vs their GEMM (operand_kinds.py)"),
    Knob("int8_dense_speedup", float, 1.8, None,
         "select, quantize='int8', uncalibrated: oneDNN's int8 GEMM rate over torch's f32 GEMM (AVX2, measured 1.8x)"),
    Knob("int8_dense_split_max_n", int, 16, None,
         "quantize='int8' dense layers: at most this many rows keep 8-bit activations (two exact 7-bit halves "
         "in one GEMM, twice the arithmetic); more rows quantize activations to 7 bits"),
    Knob("int8_vnni", bool, True, "SPARSEC_INT8_VNNI",
         "quantize='int8' CSR layers: the AVX512-VNNI kernel (vpdpbusd) on hosts with avx512_vnni + avx512bw; "
         "off: the 16-bit-lane kernel everywhere"),
    Knob("int8_vnni_min_n", int, 2, None,
         "quantize='int8' CSR layers: the fewest input rows the VNNI kernel runs (its N is padded to 16; at N = 1 "
         "the 16-bit-lane kernel measured 127 vs 174 us, 768x3072 90%, 1-thread CPU time)"),
    Knob("int8_csr_slowdown", float, 1.35, None,
         "select, quantize='int8', uncalibrated: the int8 CSR kernel's time over the f32 CSR kernel's (AVX2, no "
         "VNNI: measured)"),
    Knob("int8_vnni_csr_slowdown", float, 0.6, None,
         "select, quantize='int8', uncalibrated, AVX512-VNNI host: the VNNI int8 CSR layer's time over the f32 CSR "
         "layer's (768x3072 90% N=128, input quantization included: 0.95 vs 1.6 ms, 1-thread CPU time, loaded)"),
    Knob("sddmm_max_density", float, 0.03, None, "gather: SDDMM kernel only at or below this density"),
    Knob("masked_sum_max_density", float, 0.05, None, "gather: masked-sum kernel only at or below this density"),
    Knob("dense_guard", float, 0.5, None,
         "select/autotune: a sparse format for a weight at least this dense is kept only if a measurement "
         "shows it faster (2:4 and dense weights: wins a poisoned calibration can fake)"),
    Knob("close_band", float, 1.5, None,
         "select: a best sparse prediction within this factor of dense (either way) is measured (autotune='auto')"),
    Knob("autotune_rounds", int, 3, None, "autotune: interleaved timing rounds per candidate (wall and 1-thread CPU)"),
    Knob("calibrate_rounds", int, 3, None, "calibration: interleaved rounds of every probe"),
    Knob("calibrate_max_spread", float, 1.5, None,
         "calibration: a probe whose slowest round exceeds its fastest by this factor was disturbed"),
    Knob("calibrate_min_peak_fraction", float, 0.35, None,
         "calibration: the dense GEMM probe must reach this fraction of the CPU's nominal FP32 peak"),
    Knob("calibrate_max_foreign_load", float, 0.5, None,
         "calibration: other runnable processes per core (1-min load average) above which a run is disturbed"),
    Knob("calibrate_retries", int, 1, None, "calibration: re-measurements of a disturbed run before built-in rates"),
    Knob("calibrate_max_age_s", float, 7 * 24 * 3600.0, None, "calibration: a cached one older than this is re-measured"),
    Knob("calibrate_revalidate_faster", float, 1.5, None,
         "calibration: a cached dense rate this many times below a cheap probe's now was taken disturbed"),
    Knob("saved_weight_max_density", float, 0.75, None,
         "artifacts: store a weight zero-compressed when at most this share of its elements is nonzero (the "
         "bitmap costs 1/32 of an fp32 weight; below 75% the smaller file is worth the rebuild)"),
    Knob("sddmm_grad_chunk", int, 16384, None,
         "backward of sparse linears: stored entries per chunk of dW (bounds the temporary to chunk x N)"),
    Knob("gpu_num_sms", int, 132, None, "Triton launch heuristic: SMs of the GPU (H100 SXM) to fill twice over"),
    Knob("gpu_smem_budget", int, 96 * 1024, None,
         "Triton launch heuristic: shared memory per CTA (bytes) the pipeline stages may fill"),
    Knob("pj_per_flop", float, 20.0, None, "energy estimate: picojoules per FLOP (report's estimated energy)"),
    Knob("pj_per_byte", float, 100.0, None, "energy estimate: picojoules per byte moved"),
)
KNOBS: dict[str, Knob] = {k.name: k for k in _TABLE}

_STACK: list[dict[str, Any]] = []
_LOCK = threading.Lock()


def _parse(knob: Knob, text: str) -> Any:
    if knob.type is bool:
        return text.strip().lower() not in ("0", "false", "no", "off", "")
    if knob.type is str:
        return text
    return knob.type(text)


def get(name: str) -> Any:
    """The current value of knob ``name`` (scope override, else environment variable, else default)."""
    for frame in reversed(_STACK):
        if name in frame:
            return frame[name]
    knob = KNOBS.get(name)
    if knob is None:
        raise KeyError(f"unknown knob {name!r}; known knobs: {', '.join(KNOBS)}")
    if knob.env:
        text = os.environ.get(knob.env)
        if text:  # an empty variable means unset, as for SPARSEC_CACHE_DIR= before
            return _parse(knob, text)
    return knob.default_value()


@contextmanager
def scope(**values: Any) -> Iterator[None]:
    """Override knobs inside a ``with`` block: ``with knobs.scope(column_tile=256): ...``."""
    for name, value in values.items():
        knob = KNOBS.get(name)
        if knob is None:
            raise KeyError(f"unknown knob {name!r}; known knobs: {', '.join(KNOBS)}")
        ok = value is None and knob.default is None or isinstance(value, knob.type) or (
            knob.type is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise TypeError(f"knob {name!r} takes {knob.type.__name__}, got {value!r}")
    frame = dict(values)
    with _LOCK:
        _STACK.append(frame)
    try:
        yield
    finally:
        with _LOCK:
            _STACK.remove(frame)


def table() -> str:
    """The knobs as a markdown table (the body of docs/knobs.md)."""
    rows = ["| knob | type | default | environment | meaning |", "|---|---|---|---|---|"]
    for k in _TABLE:
        default = "(computed)" if isinstance(k.default, Callable) else repr(k.default)
        rows.append(f"| `{k.name}` | {k.type.__name__} | {default} | {k.env or '-'} | {k.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
