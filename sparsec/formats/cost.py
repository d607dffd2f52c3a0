"""The cost model: predicted seconds of one [out, in] linear on N rows, dense or in a sparse format.

Each prediction is a roofline: the larger of compute time (executed FLOPs over the rate a kernel
family reaches) and memory time (bytes moved over bandwidth), plus a fixed per-call overhead. The rates
are a ``Machine`` value: defaults measured on the project's 2-core Zen 4 machine (see
benchmarks/RESULTS.md), replaced by ``sparsec.targets.cpu.calibrate`` with figures measured on the user's
machine. Keeping it this small makes the selector's choice explainable in one line of the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sparsec import knobs


@dataclass(frozen=True)
class Machine:
    """Rates (FLOP/s, B/s) and overheads (s) the cost model uses."""

    dense_flops: float = 150e9  # torch sgemm on all threads, large shapes
    dense_gemv_bw: float = 24e9  # torch at N=1 streams the weight
    sparse_flops: float = 60e9  # MLIR scatter-form kernel (CSR-like) per thread, N >= 16
    sparse_dot_flops: float = 8e9  # gather/dot form at N = 1
    block_flops: float = 90e9  # MLIR BSR (dense inner blocks vectorize)
    # BSR at N = 1 (the dot form) depends strongly on the block: 8x8 ran 2-6x faster than 16x16/32x32
    block_dot_flops_8: float = 10e9
    block_dot_flops_16: float = 4e9
    block_dot_flops_32: float = 2e9
    structured_flops: float = 15e9  # MLIR structured[n, m] level: its inner loop stays scalar
    # 16-bit bitmap / compact 2:4 kernels (formats/bitmap.py): packed bytes streamed per second, all threads,
    # at N = 1 and N = 8 (only 16-bit layers use them; calibrate measures them per dtype)
    bitmap_bw: float = 14e9
    bitmap_bw8: float = 5e9
    nm24c_bw: float = 15e9
    nm24c_bw8: float = 5e9
    bandwidth: float = 20e9
    # quantize="int8" layers (FLOP/s counted as the f32 kernels' are): the int8 CSR layer per thread, its input
    # quantization included, and the dense int8 layer (oneDNN) on all threads; 0: not measured (select
    # scales the f32 rates by knobs int8_csr_slowdown / int8_vnni_csr_slowdown / int8_dense_speedup)
    int8_sparse_flops: float = 0.0
    int8_dense_flops: float = 0.0
    threads: int = 2
    thread_efficiency: float = 0.85
    call_overhead: float = 8e-6  # Python + ctypes per kernel call
    torch_overhead: float = 4e-6

    def as_dict(self) -> dict:
        """Plain dict (for the calibration cache)."""
        return asdict(self)


DEFAULT_MACHINE = Machine()

# Knob parallel_min_work (default 2M): below that much work a kernel call runs on one thread: a handoff to
# the runtime's pool costs 20-40 us, about what a kernel does with 2M multiply-adds at N >= 8 (99%-sparse
# 3072x768 at N=64 ran 9.8x dense with two threads, 15.9x with one). The runtime (SparseLinear) and the
# cost model share it.


def parallel_work(stored: int, n: int) -> int:
    """Work of one call in the units of knob ``parallel_min_work``. Below N = 8 a stored value costs about as
    much as 8 columns (the gather form is memory-bound: 4096^2 at 90%, N=1, ran 7.7x dense on two
    threads and 5.4x on one), so small N counts as 8."""
    return stored * max(n, 8)


def dense_time(out_f: int, in_f: int, n: int, m: Machine = DEFAULT_MACHINE) -> float:
    """Predicted seconds of torch's dense F.linear."""
    flops = 2.0 * n * out_f * in_f
    bytes_ = 4.0 * (out_f * in_f + n * (out_f + in_f))
    if n == 1:  # torch's GEMV, whose measured rate (dense_gemv_bw) includes its compute: bf16's GEMM rate
        return bytes_ / m.dense_gemv_bw + m.torch_overhead  # (6 GFLOP/s) does not apply to it (12 measured)
    return max(flops / m.dense_flops, bytes_ / (m.dense_gemv_bw if n <= 4 else m.bandwidth)) + m.torch_overhead


def sparse_time(
    stored: int, index_bytes: int, out_f: int, in_f: int, n: int, rate: float, m: Machine = DEFAULT_MACHINE
) -> float:
    """Predicted seconds of a compiled sparse kernel that executes ``2 * n * stored`` FLOPs.

    ``rate`` is the per-thread FLOP/s of the kernel family; rows are split across ``m.threads``.
    The transposes of the activation in and out of the kernel's layout count as memory traffic.
    """
    threads = m.threads if parallel_work(stored, n) > knobs.get("parallel_min_work") else 1  # small calls skip the handoff
    speedup = 1 + (threads - 1) * m.thread_efficiency
    flops = 2.0 * n * stored
    moved = 4.0 * stored + index_bytes + 8.0 * n * (out_f + in_f)
    return max(flops / (rate * speedup), moved / m.bandwidth) + m.call_overhead * threads


#: Uncalibrated rates for the GPU target (H100-class, fp16 tensor cores for dense and BSR; CSR and
#: N:M kernels gather and run well below peak). No GPU was available to measure them: use
#: ``autotune=True`` on the device for decisions from measurements. See benchmarks/bench_gpu.py.
GPU_MACHINE = Machine(
    dense_flops=400e12, dense_gemv_bw=2.5e12, sparse_flops=20e12, sparse_dot_flops=1e12,
    block_flops=200e12, structured_flops=60e12, bandwidth=2.5e12, threads=1, thread_efficiency=0.0,
    call_overhead=10e-6, torch_overhead=8e-6,
)


#: Built-in rates of 16-bit CPU layers (used when calibration is off): torch's dense bf16/fp16 GEMM
#: and the 16-bit CSR kernels, measured by ``calibrate.measure(threads, dtype)`` on the project's
#: 2-core machine (AVX2 + F16C, no AVX512-BF16), 2 threads, load 1.4-1.8 (loaded: rough). Torch's
#: bf16 GEMM ran at 6 GFLOP/s there (fp32: 34): without AVX512-BF16 it converts. Bandwidths are
#: fp32-equivalent (4 bytes per element), so the 16-bit bytes saved are in the rate.
#: The GEMV rates are of a weight larger than the L3 (decode-sized; calibrate's probe is 4096 x 4096): the
#: quiet benchmark's bf16 Llama-MLP GEMVs ran at 12 GB/s of bf16 bytes (24e9 fp32-equivalent). The bitmap /
#: compact 2:4 rates (packed bytes/s) come from 1-thread CPU-time ratios to torch's GEMV under load (~2x at 50%
#: on 4096 x 11008): rough; ``calibrate`` measures them. 16-bit N:M layers run CSR's 16-bit kernel
#: (sparse_linear.runs_as_csr), so their built-in rate is CSR's; 16-bit BSR keeps the fp32 BSR rates (its
#: bf16 kernel measured at least as fast as the fp32 one); ``calibrate`` measures both in the dtype.
LOWP_RATES: dict[str, dict[str, float]] = {
    "torch.bfloat16": {"dense_flops": 6e9, "dense_gemv_bw": 24e9, "sparse_flops": 26e9, "sparse_dot_flops": 2.1e9,
                       "structured_flops": 26e9,
                       "bitmap_bw": 12e9, "bitmap_bw8": 4e9, "nm24c_bw": 14e9, "nm24c_bw8": 4e9},
    "torch.float16": {"dense_flops": 8.7e9, "dense_gemv_bw": 20e9, "sparse_flops": 25e9, "sparse_dot_flops": 2.7e9,
                      "structured_flops": 25e9,
                      "bitmap_bw": 12e9, "bitmap_bw8": 3e9, "nm24c_bw": 12e9, "nm24c_bw8": 3e9},
}


def lowp_default_machine(dtype, threads: int) -> Machine:
    """The built-in Machine of a 16-bit dtype's CPU layers (``LOWP_RATES``) for ``threads``."""
    from dataclasses import replace

    return replace(DEFAULT_MACHINE, threads=threads, **LOWP_RATES[str(dtype)])
