"""Where a compiled BERT-base 90% spends its time besides the sparse kernels, vs eager, on 1 thread (issue 10).

One process, ``torch.set_num_threads(1)``, process CPU time (robust to a busy machine), interleaved rounds,
medians. Per engine: the whole call, the time inside its Linear layers (eager: ``nn.Linear``; sparsec: the
``SparseLinear`` runtime modules, and within them the MLIR kernels), and the rest — the dense remainder
(attention's matmuls and softmax, LayerNorm, GELU, adds, views). Engines:

- ``eager``: the pruned model in torch eager (dense Linears);
- ``sparsec``: ``sparse_compile`` (the lowered graph replays the exported ATen ops around the kernels);
- ``sparsec+inductor`` (unless ``--no-inductor``): the same lowered graph with every SparseLinear call
  behind an opaque ``torch.library`` op, handed to ``torch.compile`` (Inductor generates the dense rest).

Writes section ``dense-remainder`` of benchmarks/RESULTS.md; docs/kernels.md discusses the figures.

    python benchmarks/dense_remainder.py [--quick] [--no-inductor]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def bert(layers: int):
    """BERT-base (random weights, eager attention), every encoder Linear pruned to 90%; ids [1, 128]."""
    import transformers

    from sparsec.demo import prune_linears

    torch.manual_seed(0)
    cfg = transformers.BertConfig(attn_implementation="eager", num_hidden_layers=layers)

    class Bert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertModel(cfg, add_pooling_layer=False)

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    model = Bert().eval()
    prune_linears(model.bert.encoder, 0.9)
    return model, torch.randint(0, cfg.vocab_size, (1, 128))


class Timer:
    """Process CPU seconds spent inside the given modules (forward pre/post hooks), per call of the model."""

    def __init__(self, modules) -> None:
        self.total, self.calls, self._t0 = 0.0, 0, []
        for m in modules:
            m.register_forward_pre_hook(self._pre)
            m.register_forward_hook(self._post)

    def _pre(self, *_):
        self._t0.append(time.process_time())

    def _post(self, *_):
        self.total += time.process_time() - self._t0.pop()
        self.calls += 1

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


def kernel_timer(layers):
    """Sum the CPU time inside the kernels (1 thread: they run inline): wraps CompiledKernel.call_refs and
    the prepared calls of ``bound``, and drops the layers' prepared calls so they are rebuilt wrapped."""
    from sparsec.codegen.mlir.jit import CompiledKernel

    acc = {"t": 0.0}
    orig, orig_bound = CompiledKernel.call_refs, CompiledKernel.bound

    def call_refs(self, refs):
        t = time.process_time()
        orig(self, refs)
        acc["t"] += time.process_time() - t

    def bound(self, refs):
        call = orig_bound(self, refs)

        def timed():
            t = time.process_time()
            call()
            acc["t"] += time.process_time() - t

        return timed

    CompiledKernel.call_refs, CompiledKernel.bound = call_refs, bound
    for m in layers:
        m._plans.clear()
    return acc


def inductor_graph(cm):
    """The compiled model's lowered graph with each SparseLinear behind an opaque op, under torch.compile."""
    import copy

    from sparsec.targets.cpu.sparse_linear import SparseLinear

    layers: list = []

    @torch.library.custom_op("sparsec_bench::layer", mutates_args=())
    def layer(x: torch.Tensor, residual: torch.Tensor | None, index: int) -> torch.Tensor:
        return layers[index].run(x, residual)

    @layer.register_fake
    def _(x, residual, index):
        return x.new_empty((*x.shape[:-1], layers[index].out_features))

    gm = copy.copy(cm._primary.module)
    gm.graph = copy.deepcopy(cm._primary.module.graph)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), SparseLinear):
            layers.append(gm.get_submodule(node.target))
            x, res = node.args[0], node.args[1] if len(node.args) > 1 else None
            with gm.graph.inserting_before(node):
                new = gm.graph.call_function(torch.ops.sparsec_bench.layer, (x, res, len(layers) - 1))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    gm.recompile()
    return torch.compile(gm, backend="inductor", dynamic=False), layers


def cpu_median(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return statistics.median(ts)


def main() -> None:
    import sparsec
    from sparsec.bench.machine import machine_info
    from sparsec.bench.sections import write_section
    from sparsec.targets.cpu.sparse_linear import SparseLinear

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 encoder layers, 3 rounds")
    ap.add_argument("--no-inductor", action="store_true", help="skip the torch.compile engine")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    layers = 2 if args.quick else 12
    rounds, reps = (3, 3) if args.quick else (7, 5)
    model, ids = bert(layers)
    t = time.perf_counter()
    cm = sparsec.sparse_compile(model, (ids,), target="cpu", threads=1)
    compile_s = time.perf_counter() - t
    sparse_mods = [m for m in cm._primary.module.modules() if isinstance(m, SparseLinear)]
    timers = {"eager": Timer([m for m in model.modules() if isinstance(m, torch.nn.Linear)]),
              "sparsec": Timer(sparse_mods)}
    engines = {"eager": lambda: model(ids), "sparsec": lambda: cm(ids)}
    notes = {"sparsec": f"compile {compile_s:.0f} s, {len(sparse_mods)} sparse layers"}
    with torch.no_grad():
        want = model(ids)
        if not args.no_inductor:
            t = time.perf_counter()
            ind, ind_layers = inductor_graph(cm)
            ind(ids)
            notes["sparsec+inductor"] = f"torch.compile {time.perf_counter() - t:.0f} s"
            # the same SparseLinear objects: their time is measured around the opaque op's calls
            timers["sparsec+inductor"] = Timer([])
            engines["sparsec+inductor"] = lambda: ind(ids)[0]
        kern = kernel_timer(sparse_mods)
        errs = {e: float((fn() - want).abs().max()) for e, fn in engines.items()}
        times = {e: {"total": [], "linear": [], "kernel": []} for e in engines}
        for _ in range(rounds):
            for e, fn in engines.items():
                timer = timers[e]
                fn()
                timer.reset()
                kern["t"] = 0.0
                tot = cpu_median(fn, reps)
                calls = reps + 1
                times[e]["total"].append(tot)
                times[e]["linear"].append(timer.total / calls)
                times[e]["kernel"].append(kern["t"] / calls)
    med = {e: {k: statistics.median(v) * 1e3 for k, v in d.items()} for e, d in times.items()}
    if "sparsec+inductor" in med:  # the opaque op hides the modules' hooks: its layers take the kernels' time
        med["sparsec+inductor"]["linear"] = float("nan")
    load1 = os.getloadavg()[0]
    info = machine_info(1)
    eager_rest = med["eager"]["total"] - med["eager"]["linear"]
    lines = [
        f"BERT-base{' (2 layers, --quick)' if args.quick else ''} 90%, seq 128, batch 1, 1 thread, process CPU "
        f"time, medians of {rounds} interleaved rounds x {reps} calls; {info['cpu']}, {info['date']}, commit "
        f"{info['commit']}. Load average {load0:.2f} -> {load1:.2f}"
        + (" (**loaded**: other processes ran)" if max(load0, load1 - 1) > 1.0 else " (quiet)") + ".",
        "",
        "Command: `python benchmarks/dense_remainder.py" + (" --quick" if args.quick else "") + "`.",
        "",
        "| engine | total ms | in Linear layers ms | in MLIR kernels ms | rest (dense remainder + hops) ms | "
        "rest vs eager's | max abs error | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e, m in med.items():
        if e == "eager":
            rest, kms = eager_rest, "–"
        elif m["linear"] == m["linear"]:
            rest, kms = m["total"] - m["linear"], f"{m['kernel']:.1f}"
        else:
            rest, kms = m["total"] - m["kernel"], f"{m['kernel']:.1f}"
        lin = "–" if m["linear"] != m["linear"] else f"{m['linear']:.1f}"
        lines.append(f"| {e} | {m['total']:.1f} | {lin} | {kms} | {rest:.1f} | {rest / eager_rest:.2f}x | "
                     f"{errs[e]:.1e} | {notes.get(e, '')} |")
    hops = (med["sparsec"]["linear"] - med["sparsec"]["kernel"]) / max(1, len(sparse_mods)) * 1e3
    lines += ["", f"Python hop per sparse layer (SparseLinear call minus its kernel): {hops:.0f} us CPU time."]
    md = "\n".join(lines)
    write_section(args.results, "dense-remainder", md)
    print(md)


if __name__ == "__main__":
    main()
