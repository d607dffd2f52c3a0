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
    i.add_argument("--model", default="mlp", help="a demo model (mlp, transformer_block), a saved model's directory "
                   "(cm.save) or a torch.save(cm) file")
    r = sub.add_parser("report", help="profile a demo model, a saved model or a checkpoint: FLOPs, bytes, time, "
                       "energy, mask fit")
    r.add_argument("model", help="mlp | transformer_block | a saved model's directory (cm.save(path)) | a checkpoint "
                   "file: torch.save of a CompiledModel, of an nn.Module, or of {'model': module, 'inputs': tuple}")
    r.add_argument("--inputs", metavar="FILE", help="torch.save'd tuple of example inputs (a checkpoint of a plain "
                   "nn.Module needs them)")
    r.add_argument("--compiled", action="store_true", help="compile a demo model or a module checkpoint first "
                   "(saved compiled models always are)")
    r.add_argument("--sparsity", type=float, default=0.9, help="the demo models' pruning")
    r.add_argument("--json", action="store_true", help="print JSON instead of the table")
    r.add_argument("--plots", metavar="DIR", help="also write density.png, time.png and speedup.png there")
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
    """A saved model (a directory or a ``torch.save(cm)`` file) or the compiled demo model ``name``."""
    from sparsec.compiler.compiled_model import CompiledModel

    if name in ("mlp", "transformer_block"):
        from sparsec.demo import demo_compiled

        return demo_compiled(name, sparsity)
    model, _ = _checkpoint(name, parser)
    if not isinstance(model, CompiledModel):
        parser.error(f"{name!r} holds a {type(model).__name__}, not a compiled model (sparsec report profiles it)")
    return model


def _checkpoint(name: str, parser):
    """(model, inputs or None) from a saved model's directory or a torch.save file."""
    from pathlib import Path

    import torch

    path = Path(name)
    if path.is_dir():
        from sparsec.compiler.compiled_model import load

        return load(path), None
    if not path.is_file():
        parser.error(f"{name!r} is neither a demo model (mlp, transformer_block), a saved model's directory "
                     "nor a checkpoint file")
    # a pickled module runs code when it is read, as torch.load(weights_only=False) does: trusted files only
    obj = torch.load(path, weights_only=False, map_location="cpu")
    inputs = None
    if isinstance(obj, dict) and "model" in obj:
        obj, inputs = obj["model"], obj.get("inputs")
    if not isinstance(obj, torch.nn.Module):
        parser.error(f"{name!r} holds a {type(obj).__name__}; sparsec report needs a CompiledModel or an nn.Module "
                     "(a state dict has no model: torch.save the module, or {'model': module, 'inputs': inputs})")
    return obj, inputs


def _report(args, parser) -> int:
    import torch
    from torch.utils import _pytree as pytree

    import sparsec
    from sparsec.compiler.compiled_model import CompiledModel
    from sparsec.demo import prune_linears
    from sparsec.models import demo_models

    kwargs: dict = {}
    if args.model in ("mlp", "transformer_block"):
        model, inputs = demo_models()[args.model]
        prune_linears(model, args.sparsity)
    else:
        model, inputs = _checkpoint(args.model, parser)
    if args.inputs:
        inputs = torch.load(args.inputs, weights_only=False, map_location="cpu")
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if inputs is None and isinstance(model, CompiledModel):
        inputs, kwargs = pytree.tree_unflatten(model._example_flat, model._in_spec)
    if inputs is None:
        parser.error(f"{args.model!r} holds no example inputs: pass --inputs FILE (a torch.save'd tuple)")
    if args.compiled and not isinstance(model, CompiledModel):
        model = sparsec.sparse_compile(model.eval(), tuple(inputs), kwargs, target="cpu")
    rep = sparsec.profile(model, tuple(inputs), kwargs, repeats=args.repeats)
    print(rep.to_json() if args.json else rep)
    if args.plots:
        from sparsec.report.plots import write_plots

        compiled = model.report() if isinstance(model, CompiledModel) else None
        for p in write_plots(rep, args.plots, compiled):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
