"""Where the hybrid format (dense-ish blocks as BSR + the remainder as CSR) wins: hybrid vs csr vs bsr vs dense.

One float32 Linear of the BERT-base shapes 3072x768 and 768x3072 at 90% sparsity, three patterns:

- ``random``: magnitude-pruned random weight (uniformly scattered nonzeros: no full block; the selector
  should not choose hybrid, which rejects the weight);
- ``blocks+outliers``: 16x16 blocks at 90% block sparsity plus 1.5% scattered outliers (BSR alone must
  store a whole block per outlier and is refused past 2x padding);
- ``blocks+0.1%``: the same blocks with only 0.1% outliers (hybrid's best case: a tiny remainder);
- ``50/50``: half the nonzeros in full 16x16 blocks, half scattered (10% density in all).

Each format is forced (``force_format``) so its kernels are measured; ``auto`` is the selector's choice
(calibrated rates, autotune of close calls), with the format it chose. Every row is checked against torch's
dense ``F.linear`` on the same pruned weight. The parameters are frozen (``requires_grad_(False)``): the
hybrid format has no training path and is not chosen for weights that require grad.

    python benchmarks/bench_hybrid.py [--cpu-time] [--threads 2] [--rounds 7] [--n 1 64] [--quick]

``--cpu-time``: one thread, process CPU time (robust on a loaded machine). Otherwise wall clock on
``--threads`` threads (take those figures on a quiet machine only). Rounds are interleaved in rotating
order, medians. Prints the load average at start and end; figures are flagged "(loaded)" when the 1-minute
load at the start was above 1. Writes section ``hybrid`` of benchmarks/RESULTS.md. About 3 min on the
2-core machine (compiles ~1 min with a cold kernel cache, calibration ~30 s the first time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_lowp import _time_pair as time_interleaved  # noqa: E402
from sparsec import sparse_compile  # noqa: E402
from sparsec.bench.sections import write_section  # noqa: E402

FORMATS = ("csr", "bsr16x16", "bsr8x8", "hybrid16x16")


def magnitude(w: torch.Tensor, density: float) -> torch.Tensor:
    """``w`` with all but its ``density`` largest-magnitude entries zeroed."""
    k = int(w.numel() * (1 - density))
    thresh = w.abs().flatten().kthvalue(k).values if k else -1.0
    return w * (w.abs() > thresh)


def weight(pattern: str, out_f: int, in_f: int, seed: int) -> torch.Tensor:
    """A 90%-sparse [out, in] weight of ``pattern`` (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g)
    if pattern == "random":
        return magnitude(w, 0.1)
    block_share = 0.05 if pattern == "50/50" else 0.1
    stray = {"blocks+outliers": 0.015, "blocks+0.1%": 0.001}.get(pattern, 0.05)
    blocks = torch.rand(out_f // 16, in_f // 16, generator=g) < block_share
    mask = blocks.repeat_interleave(16, 0).repeat_interleave(16, 1)
    mask |= torch.rand(out_f, in_f, generator=g) < stray
    return w * mask


def case(pattern: str, out_f: int, in_f: int, n: int, threads: int, rounds: int, reps: int, cpu_time: bool) -> dict:
    """Seconds per call of torch dense, each forced format and the selector's choice, and that choice."""
    w = weight(pattern, out_f, in_f, out_f + in_f)
    model = nn.Sequential(nn.Linear(in_f, out_f)).eval().requires_grad_(False)
    with torch.no_grad():
        model[0].weight.copy_(w)
    x = torch.randn(n, in_f)
    with torch.no_grad():
        ref = model(x)
    fns, chosen = {"torch": lambda: model(x)}, {}
    for fmt in (*FORMATS, "auto"):
        opts = {} if fmt == "auto" else {"force_format": fmt, "calibrate": False}
        cm = sparse_compile(model, (x,), threads=threads, **opts)
        (layer,) = cm.report().layers
        chosen[fmt] = layer.format
        if fmt != "auto" and layer.format != fmt:  # the format refused the weight (its reason says why)
            continue
        with torch.no_grad():
            got = cm(x)
        err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1.0))
        if err > 1e-4:
            raise AssertionError(f"{pattern} {out_f}x{in_f} N={n} {fmt}: differs from torch by {err:.2e}")
        fns[fmt] = lambda c=cm: c(x)
    with torch.no_grad():
        t = time_interleaved(fns, rounds, reps, cpu_time)
    return {"times": t, "chosen": chosen["auto"], "refused": [f for f in FORMATS if f not in t]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-time", action="store_true", help="1 thread, process CPU time (robust under load)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--n", type=int, nargs="+", default=[1, 64])
    p.add_argument("--quick", action="store_true", help="3 rounds, N = 64 only (a smoke run)")
    p.add_argument("--out", default="benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    threads = 1 if args.cpu_time else args.threads
    rounds, ns = (3, [64]) if args.quick else (args.rounds, args.n)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    head = "| case | N | torch dense | " + " | ".join(FORMATS) + " | auto (chosen) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for pattern in ("random", "blocks+outliers", "blocks+0.1%", "50/50"):
        for out_f, in_f in ((3072, 768), (768, 3072)):
            for n in ns:
                r = case(pattern, out_f, in_f, n, threads, rounds, 20 if n == 1 else 5, args.cpu_time)
                t = r["times"]
                dense = t["torch"]

                def cell(k, t=t, dense=dense):
                    return f"{t[k] * 1e3:.3f} ms ({dense / t[k]:.2f}x)" if k in t else "refused"

                row = (f"| {out_f}x{in_f} 90% {pattern} | {n} | {dense * 1e3:.3f} ms | "
                       + " | ".join(cell(k) for k in FORMATS) + f" | {cell('auto')} {r['chosen']} |")
                print(row, flush=True)
                lines.append(row)
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}", flush=True)
    flags = (" (loaded)" if load0[0] > 1.0 else "") + (" (--quick smoke run)" if args.quick else "")
    clock = "1 thread, process CPU time" if args.cpu_time else f"{threads} threads, wall clock"
    cmd = "python benchmarks/bench_hybrid.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = "\n".join([
        "### Hybrid format (BSR blocks + CSR remainder) vs csr, bsr and torch dense",
        "",
        f"{clock}; medians of {rounds} interleaved rounds; ratios are torch dense / format (higher is faster); "
        "'refused': the format does not accept the weight (forced, it stays dense). 'auto' is the selector's "
        f"choice. Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end{flags}; "
        f"{time.perf_counter() - start:.0f} s. `{cmd.strip()}`",
        "",
        *lines,
    ])
    write_section(args.out, "hybrid", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
