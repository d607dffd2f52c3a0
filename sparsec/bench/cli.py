"""``sparsec bench [--target cpu|gpu] [--quick] [--out PATH]`` (and ``python benchmarks/bench_cpu.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in s.lower().split("x")) for s in text.split(","))  # type: ignore[misc]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Known options, and the rest (passed on to the GPU benchmark)."""
    p = argparse.ArgumentParser(prog="sparsec bench", description="Benchmark sparsec against torch dense, "
                                "torch.sparse and scipy; writes a markdown report, raw JSON and a plot.",
                                epilog="Peers (DeepSparse 1.8, ONNX Runtime, optional OpenVINO) and the issue-10 "
                                "targets table: python benchmarks/peers/bench_peers.py [--quick] (after "
                                "bash benchmarks/peers/setup_venv.sh); writes RESULTS.md sections peers, targets.")
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--quick", action="store_true", help="reduced grid and a 2-layer BERT (< 1 minute)")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown report (default: RESULTS.md for the full run, RESULTS_quick.md for --quick, "
                        "RESULTS_partial.md when the grid or models are overridden; in ./benchmarks when it "
                        "exists; for --target gpu, bench_gpu.py's default)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (sparsec follows torch); default 2")
    p.add_argument("--budget", type=float, default=None, help="seconds per method per grid row")
    p.add_argument("--shapes", type=_pairs, default=None, help="grid shapes OUTxIN,... (overrides the preset)")
    p.add_argument("--n", type=lambda s: tuple(int(v) for v in s.split(",")), default=None, help="grid N list")
    p.add_argument("--sparsity", type=lambda s: tuple(float(v) for v in s.split(",")), default=None)
    p.add_argument("--patterns", type=lambda s: tuple(s.split(",")), default=None,
                   help="unstructured,nm2:4,block16,block32")
    p.add_argument("--models", type=lambda s: tuple(v for v in s.split(",") if v), default=None,
                   help="end-to-end models: mlp,bert (empty string: none)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_known_args(argv)


def _config(args: argparse.Namespace):
    from sparsec.bench.run import full_config, quick_config

    cfg = quick_config(args.threads) if args.quick else full_config(args.threads)
    grid = {k: v for k, v in (("shapes", args.shapes), ("ns", args.n), ("sparsities", args.sparsity),
                              ("patterns", args.patterns), ("budget_s", args.budget)) if v is not None}
    e2e = {"models": args.models} if args.models is not None else {}
    return dataclasses.replace(cfg, grid=dataclasses.replace(cfg.grid, seed=args.seed, **grid),
                               e2e=dataclasses.replace(cfg.e2e, seed=args.seed, **e2e))


def default_out(args: argparse.Namespace) -> Path:
    """Only the full, unmodified run writes RESULTS.md; a quick or partial run must not overwrite it."""
    partial = any(v is not None for v in (args.shapes, args.n, args.sparsity, args.patterns, args.models,
                                          args.budget)) or args.threads != 2 or args.seed != 0
    name = "RESULTS_quick.md" if args.quick else "RESULTS_partial.md" if partial else "RESULTS.md"
    return (Path("benchmarks") if Path("benchmarks").is_dir() else Path(".")) / name


def _command(argv: list[str] | None) -> str:
    """The command as typed: ``sparsec bench ...`` or ``python benchmarks/bench_cpu.py ...``."""
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    rest = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if prog.endswith(".py"):
        return f"python {shlex.quote(sys.argv[0])} {rest}".rstrip()
    return f"sparsec bench {rest}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every result was correct, 1 when one was wrong, 2 when it cannot run."""
    args, rest = parse_args(argv)
    if args.target == "gpu":
        from sparsec.bench.gpu import run_gpu

        return run_gpu(args.out, args.quick, rest)
    if rest:
        print(f"sparsec bench: unrecognized arguments: {' '.join(rest)}", file=sys.stderr)
        return 2
    from sparsec.bench.run import all_correct, run_bench

    out = args.out or default_out(args)
    payload = run_bench(_config(args), out, _command(argv))
    if not all_correct(payload):
        print("sparsec bench: some results differ from dense (see the report)", file=sys.stderr)
        return 1
    return 0
