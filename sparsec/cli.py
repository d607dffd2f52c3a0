"""The command line: ``sparsec demo | inspect STAGE | report MODEL | bench``."""

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
    i = sub.add_parser("inspect", help="print one stage of the demo model's compilation (cm.ir(stage))")
    i.add_argument("stage", choices=STAGES, help="fx, calibrate, a pass (analyze, select, fuse, ...), lowered, "
                   "mlir, llvm; triton, ttgir, ptx for GPU targets")
    i.add_argument("--model", default="mlp", help="a demo model (mlp, transformer_block) or a saved model's directory")
    r = sub.add_parser("report", help="profile a demo model or a saved model: FLOPs, bytes, time, energy, mask fit")
    r.add_argument("model", help="mlp | transformer_block | the directory of a saved model (cm.save(path))")
    r.add_argument("--compiled", action="store_true", help="profile the compiled demo model (saved ones always are)")
    r.add_argument("--sparsity", type=float, default=0.9, help="the demo models' pruning")
    r.add_argument("--json", action="store_true", help="print JSON instead of the table")
    r.add_argument("--plots", metavar="DIR", help="also write density.png and time.png there")
    r.add_argument("--repeats", type=int, default=5)
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
        print(_compiled(args.model, 0.9, parser).ir(args.stage))
        return 0
    if args.cmd == "report":
        return _report(args, parser)
    return 2


def _compiled(name: str, sparsity: float, parser):
    """A saved model (a directory) or the compiled demo model ``name``."""
    from pathlib import Path

    if Path(name).is_dir():
        from sparsec.compiler.artifact import load

        return load(name)
    if name not in ("mlp", "transformer_block"):
        parser.error(f"{name!r} is neither a demo model (mlp, transformer_block) nor a saved model's directory")
    from sparsec.demo import demo_compiled

    return demo_compiled(name, sparsity)


def _report(args, parser) -> int:
    from pathlib import Path

    import sparsec
    from sparsec.demo import prune_linears
    from sparsec.models import demo_models

    if Path(args.model).is_dir():
        from torch.utils import _pytree as pytree

        model = _compiled(args.model, args.sparsity, parser)
        inputs, kwargs = pytree.tree_unflatten(model._example_flat, model._in_spec)
    elif args.model in ("mlp", "transformer_block"):
        model, inputs = demo_models()[args.model]
        prune_linears(model, args.sparsity)
        kwargs = {}
        if args.compiled:
            model = sparsec.sparse_compile(model, inputs, target="cpu")
    else:
        parser.error(f"{args.model!r} is neither a demo model (mlp, transformer_block) nor a saved model's directory")
    rep = sparsec.profile(model, tuple(inputs), kwargs, repeats=args.repeats)
    print(rep.to_json() if args.json else rep)
    if args.plots:
        from sparsec.report.plots import write_plots

        for p in write_plots(rep, args.plots):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
