"""Single-thread executed GFLOP/s of the CSR kernel vs torch dense on BERT-base shapes (issue 10).

CPU time (``time.thread_time``) on one thread survives a busy machine far better than wall time on two,
so this is the figure to compare across runs. Per case it reports the median over interleaved rounds of:
torch dense ``F.linear``, sparsec's CSR ``SparseLinear`` forward (which transposes X into [in, N] and hands
back a transposed view), and the two layout copies alone (X -> X^T contiguous, Y^T -> Y contiguous), i.e.
what a kernel reading X as [N, in] and writing Y as [N, out] would save.

    python benchmarks/csr_kernel_rates.py [--quick]      # --quick: N=64/128 at 90%, fewer rounds (< 60 s)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparsec.bench.sections import write_section
from sparsec.formats.registry import get_format
from sparsec.targets.cpu.sparse_linear import SparseLinear

SHAPES = ((768, 768), (3072, 768), (768, 3072))  # (out, in) of BERT-base's encoder linears


def cpu_time(fn, reps: int) -> float:
    """Median thread CPU seconds of one call over ``reps`` calls (after one warm-up call)."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    return statistics.median(ts)


def gemm_1024() -> float:
    """Thread CPU ms of a fixed 1024^3 GEMM: a probe of how disturbed the machine is."""
    a = torch.randn(1024, 1024)
    return 1e3 * cpu_time(lambda: a @ a, 5)


def measure(out_f: int, in_f: int, n: int, density: float, rounds: int, reps: int) -> dict:
    """Interleaved rounds of dense, sparse and the layout copies for one case; medians in ms."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(out_f, in_f, generator=g) * (torch.rand(out_f, in_f, generator=g) < density)
    b = torch.randn(out_f, generator=g)
    x = torch.randn(n, in_f, generator=g)
    sl = SparseLinear("bench", get_format("csr"), w, b, None, False, threads=1)
    y = sl(x)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-3, atol=1e-3)
    runs = {
        "dense": lambda: F.linear(x, w, b),
        "csr": lambda: sl(x),
        "x_t": lambda: x.t().contiguous(),
        "y_t": lambda: y.contiguous(),
    }
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(cpu_time(fn, reps))
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    nnz = int((w != 0).sum())
    med["gflops_csr"] = 2 * nnz * n / (med["csr"] * 1e-3) / 1e9
    med["gflops_dense"] = 2 * out_f * in_f * n / (med["dense"] * 1e-3) / 1e9
    return med


def main() -> None:
    """Run the cases, print a table and write the ``csr-kernel-rates`` section of RESULTS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=64/128 at 90%% only, fewer rounds (< 60 s)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0, g0 = os.getloadavg(), gemm_1024()
    ns, dens = ((64, 128), (0.1,)) if args.quick else ((16, 64, 128, 256), (0.1, 0.3))
    rounds, reps = (3, 5) if args.quick else (7, 10)
    rows = []
    for d in dens:
        for n in ns:
            for out_f, in_f in SHAPES:
                m = measure(out_f, in_f, n, d, rounds, reps)
                rows.append(
                    f"| {out_f}x{in_f} | {n} | {1 - d:.0%} | {m['dense']:.3f} | {m['csr']:.3f} | "
                    f"{m['dense'] / m['csr']:.2f}x | {m['gflops_dense']:.0f} | {m['gflops_csr']:.0f} | "
                    f"{m['x_t']:.3f} + {m['y_t']:.3f} |"
                )
                print(rows[-1], flush=True)
    load1, g1 = os.getloadavg(), gemm_1024()
    md = "\n".join([
        "## CSR kernel rates, 1 thread, CPU time (`benchmarks/csr_kernel_rates.py"
        + (" --quick`)" if args.quick else "`)"),
        "",
        f"Load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; 1024^3 GEMM {g0:.1f} / {g1:.1f} ms "
        "thread CPU time before/after (quiet: ~22 ms). Medians of interleaved rounds, one process. "
        "GFLOP/s are executed FLOPs (2 x nnz x N for CSR). The last column is the CPU time of the two "
        "layout copies around today's Y^T = W X^T kernel (X^T contiguous, Y contiguous).",
        "",
        "| W (out x in) | N | sparsity | dense ms | csr ms | speedup | dense GFLOP/s | csr GFLOP/s | "
        "layout copies ms |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    write_section(Path(__file__).with_name("RESULTS.md"), "csr-kernel-rates", md)
    print(md)


if __name__ == "__main__":
    main()
