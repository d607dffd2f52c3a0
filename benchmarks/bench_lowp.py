"""Low precision meets sparsity (issue 14): bf16 sparse kernels vs torch's dense bf16, CPU.

Cases (each a Linear, weights random and pruned by magnitude, ``sparse_compile(..., force_format=...)``
so the kernel is measured, not the selector's guess):

- ``bert``: bf16, 90% unstructured, BERT-base shapes 768x768, 3072x768, 768x3072 at N = 64 (times summed),
  target >= 5x torch dense bf16;
- ``decode``: bf16, Llama-7B MLP shapes 4096x11008 and 11008x4096 at N = 1, 50% unstructured, target
  >= 1.6x torch dense bf16;
- targets whose kernels are not built yet (bf16 2:4 at N = 1, int8 BERT, bf16 HF Llama decode) are
  listed as missed with the reason, not measured.

Same process, rounds interleave sparsec and torch (rotating order), figures are medians of wall time
at ``--threads`` (default 2). ``--cpu-time`` times one thread by process CPU time instead (for
development on a loaded machine). Prints the load average at start and end; figures are flagged
"(loaded)" when the 1-minute load at the start was above 1.

    python benchmarks/bench_lowp.py [--quick] [--threads 2] [--rounds 15] [--cpu-time] [--out benchmarks/RESULTS.md]

Writes section ``lowp`` of the results file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsec import sparse_compile  # noqa: E402
from sparsec.bench.sections import write_section  # noqa: E402

DTYPE = torch.bfloat16


def _pruned_linear(out_f: int, in_f: int, density: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=False)
    with torch.no_grad():
        w = torch.randn(out_f, in_f, generator=g)
        k = int(w.numel() * (1 - density))
        if k:
            thresh = w.abs().flatten().kthvalue(k).values
            w = w * (w.abs() > thresh)
        lin.weight.copy_(w)
    return nn.Sequential(lin).to(DTYPE).eval()


def _clock(cpu_time: bool):
    return time.process_time if cpu_time else time.perf_counter


def _time_pair(fns: dict, rounds: int, reps: int, cpu_time: bool) -> dict[str, float]:
    """Median seconds per call of each fn, rounds interleaved in rotating order."""
    clock = _clock(cpu_time)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for fn in fns.values():
        fn()
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t = clock()
            for _ in range(reps):
                fns[k]()
            times[k].append((clock() - t) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def _case(shapes, n: int, density: float, fmt: str, threads: int, rounds: int, reps: int, cpu_time: bool):
    """(sparsec seconds, torch seconds) summed over ``shapes``."""
    total = {"sparsec": 0.0, "torch": 0.0}
    for i, (out_f, in_f) in enumerate(shapes):
        model = _pruned_linear(out_f, in_f, density, seed=i)
        x = torch.randn(n, in_f).to(DTYPE)
        compiled = sparse_compile(model, (x,), force_format=fmt, threads=threads, calibrate=False)
        with torch.no_grad():
            ref, got = model(x), compiled(x)
        err = float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1.0))
        if err > 2e-2:
            raise AssertionError(f"{out_f}x{in_f}: sparsec differs from torch by {err:.3e} (relative)")

        def run_sparse(c=compiled, x=x):
            with torch.no_grad():
                c(x)

        def run_dense(m=model, x=x):
            with torch.no_grad():
                m(x)

        t = _time_pair({"sparsec": run_sparse, "torch": run_dense}, rounds, reps, cpu_time)
        for k in total:
            total[k] += t[k]
    return total["sparsec"], total["torch"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds (a smoke run, not figures)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cpu-time", action="store_true", help="1 thread, process CPU time (development)")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    threads = 1 if args.cpu_time else args.threads
    torch.set_num_threads(threads)
    rounds = 3 if args.quick else args.rounds
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    rows = []
    bert = [(768, 768), (3072, 768), (768, 3072)]
    s, d = _case(bert, 64, 0.1, "csr", threads, rounds, 5, args.cpu_time)
    rows.append(("bf16, 90% unstructured, BERT-base shapes, N = 64 (csr)", s, d, 5.0, ""))
    decode = [(11008, 4096), (4096, 11008)]
    s, d = _case(decode, 1, 0.5, "csr", threads, rounds, 3, args.cpu_time)
    rows.append(("bf16, 4096x11008 + 11008x4096, N = 1, 50% unstructured (csr)", s, d, 1.6,
                 "csr stores 2 B value + 2 B index per nonzero = 2 B per weight at 50%, what dense bf16 reads; "
                 "a bitmap format is not built"))
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}", flush=True)
    loaded = " (loaded)" if load0[0] > 1.0 else ""
    clock = "1 thread, process CPU time" if args.cpu_time else f"{threads} threads, wall time"
    lines = [
        f"bf16 sparse kernels vs torch dense bf16, same process, interleaved rounds, medians of {rounds} rounds, "
        f"{clock}; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end{loaded}. "
        "`python benchmarks/bench_lowp.py`" + (" --quick" if args.quick else ""),
        "",
        "| case | sparsec ms | torch ms | speedup | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, s, d, target, why in rows:
        ok = d / s >= target
        note = "" if ok or not why else f" ({why})"
        lines.append(f"| {name} | {s * 1e3:.3f} | {d * 1e3:.3f} | {d / s:.2f}x | >= {target}x | "
                     f"{'met' if ok else 'missed'}{note} |")
    for name, target, why in (
        ("bf16, same shapes, 2:4, N = 1", ">= 1.6x torch dense bf16", "no 16-bit N:M kernel yet"),
        ("int8, BERT-base 90%, seq 128", ">= 2x sparsec fp32, >= 3x quantize_dynamic, err <= 2%",
         "quantize='int8' not built yet"),
        ("bf16 HF Llama pruned 50%, decode with KV cache", ">= 1.5x eager bf16 tokens/s", "not measured yet"),
    ):
        lines.append(f"| {name} | - | - | - | {target} | missed ({why}) |")
    md = "\n".join(lines) + "\n"
    print(md)
    write_section(args.out, "lowp", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
