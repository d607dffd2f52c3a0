"""Every model kind of docs/models.md, compiled, checked against eager and timed in one process.

The builders are the model tests' (tests/models/zoo.py), at somewhat larger sizes. For each model: the
formats chosen, the max error relative to the output's scale, eager and compiled time (median and best of
``--repeats`` calls under torch.no_grad) and their ratio. The machine is shared: timings are noisy.

    python examples/time_models.py [--repeats 20] [--only bert,cnn] [--calibrated]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from sparsec.demo import timings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.models import zoo  # noqa: E402


def models() -> dict:
    """name -> (builder of (model, inputs), compile options)."""
    s = zoo.sparse_matrix

    def shrink_mlp():
        x = torch.randn(64, 512)
        return zoo.channel_pruned(zoo.ResMLP(512, 2048, 10), (x,), 0.5), (x,)

    def shrink_cnn():
        x = torch.randn(8, 3, 32, 32)
        return zoo.channel_pruned(zoo.randomize_bn(zoo.FlattenCNN(32, 32)), (x,), 0.5), (x,)

    return {
        "bert (256/4/4/1024, seq 64, batch 2)": (lambda: zoo.bert(256, 4, 4, 1024, 64, 2), {}),
        "gpt2 (256/4/4, seq 64, batch 2)": (lambda: zoo.gpt2(256, 4, 4, 64, 2), {}),
        "cnn (width 64, 8x3x32x32, convs 90%)": (lambda: zoo.cnn(64, 8, 32, 0.9), {}),
        "moe (d 256, 8 experts x 1024, top-2, 256 tokens)": (lambda: zoo.moe(256, 1024, 8, 2, 4, 64), {}),
        "spmv (4096x4096, 1%)": (lambda: (zoo.SpMV(s(4096, 4096, 0.01, 1)), (torch.randn(4096),)), {}),
        "spmm (A 2048x2048 1% @ H [2048, 64]; H^T @ B)": (
            lambda: (zoo.SpMM(s(2048, 2048, 0.01, 2), s(2048, 512, 0.01, 3)), (torch.randn(2048, 64),)), {}),
        "gcn (2048 nodes, 2% adjacency)": (lambda: (zoo.GCN(2048, 64, 128, 32), (torch.randn(2048, 64),)), {}),
        "sddmm (1024x1024 1%, K 64)": (
            lambda: (zoo.SDDMM(s(1024, 1024, 0.01, 4)), (torch.randn(1024, 64), torch.randn(1024, 64))), {}),
        "row scaling (4096 rows, 10% nonzero, N 256)": (
            lambda: (zoo.RowScale(s(4096, 1, 0.1, 5).reshape(-1)), (torch.randn(4096, 256),)), {}),
        "masked sums (1024x1024 2%, batch 8)": (
            lambda: (zoo.MaskedReduce(s(1024, 1024, 0.02, 6)), (torch.randn(8, 1024, 1024),)), {}),
        "shrink: ResMLP 512-2048-10, half the channels": (shrink_mlp, {}),
        "shrink: conv-bn-flatten CNN, half the channels": (shrink_cnn, {}),
    }


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of ``fn()`` after two warm-up calls."""
    times = timings(fn, repeats=repeats, warmup=2)
    return times[len(times) // 2], times[0]


def error(got, want) -> float:
    """Max |got - want| over all outputs, relative to each output's scale (at least 1)."""
    if hasattr(want, "last_hidden_state"):
        got, want = got.last_hidden_state, want.last_hidden_state
    if isinstance(want, torch.Tensor):
        return float((got - want).abs().max() / want.abs().max().clamp_min(1.0))
    return max(error(g, w) for g, w in zip(got, want, strict=True))


def main(argv: list[str] | None = None) -> int:
    import sparsec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated name prefixes")
    ap.add_argument("--calibrated", action="store_true",
                    help="use the cost-model rates calibrated on this machine (default: the built-in rates, so "
                         "format choices do not depend on how busy the machine was when it calibrated)")
    args = ap.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    print(f"torch threads={torch.get_num_threads()}; median (best) of {args.repeats} calls; shared machine: noisy")
    worst = 0.0
    for name, (build, opts) in models().items():
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        torch.manual_seed(0)
        model, inputs = build()
        model.eval()
        t0 = time.perf_counter()
        cm = sparsec.sparse_compile(model, inputs, target="cpu", calibrate=args.calibrated, **opts)
        compile_s = time.perf_counter() - t0
        with torch.no_grad():
            err = error(cm(*inputs), model(*inputs))
            eager = timed(lambda m=model, x=inputs: m(*x), args.repeats)
            comp = timed(lambda m=cm, x=inputs: m(*x), args.repeats)
        worst = max(worst, err)
        formats: dict[str, int] = {}
        for r in cm.report().layers:
            formats[r.format] = formats.get(r.format, 0) + 1
        print(f"\n{name}\n  formats {formats}; max error {err:.1e}; compile {compile_s:.1f} s")
        print(f"  eager {eager[0] * 1e3:.2f} ms ({eager[1] * 1e3:.2f}), compiled {comp[0] * 1e3:.2f} ms "
              f"({comp[1] * 1e3:.2f}): eager/compiled {eager[0] / comp[0]:.2f}x ({eager[1] / comp[1]:.2f}x best)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
