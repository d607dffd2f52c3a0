"""The command line: ``sparsec demo | inspect STAGE | bench``."""

from __future__ import annotations

import argparse
import sys

from sparsec.compiler.pipeline import STAGES


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparsec`` command."""
    parser = argparse.ArgumentParser(prog="sparsec", description="sparse compiler for PyTorch")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="prune the built-in models to 90%%, compile, check and time them")
    d.add_argument("--sparsity", type=float, default=0.9)
    d.add_argument("--repeats", type=int, default=30)
    i = sub.add_parser("inspect", help="print one stage of the demo model's compilation")
    i.add_argument("stage", choices=STAGES)
    i.add_argument("--model", default="mlp", choices=["mlp", "transformer_block"])
    # bench parses its own options (sparsec/bench/cli.py): [--target cpu|gpu] [--quick] [--out PATH] ...
    sub.add_parser("bench", add_help=False, help="run the benchmarks (sparsec bench --help; benchmarks/README.md)")
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "bench":
        from sparsec.bench import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.cmd == "demo":
        from sparsec.demo import run_demo

        run_demo(args.sparsity, args.repeats)
        return 0
    if args.cmd == "inspect":
        from sparsec.demo import demo_compiled

        print(demo_compiled(args.model).ir(args.stage))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
