"""Training step time through the compiled sparse kernels vs eager dense and eager masked, CPU.

One step is ``zero_grad`` + forward + backward + ``optimizer.step()`` (SGD, momentum 0.9) on

- ``mlp``: Linear 768→3072, GELU, Linear 3072→768 at batch 256;
- ``bert``: one BERT-base encoder layer (transformers ``BertLayer`` from ``BertConfig()``, random weights,
  dropout probabilities 0: sparsec compiles eval-mode dropout) at seq 128, batch ``--bert-batch``,

with every Linear weight pruned to 90% unstructured (magnitude), four ways:

- ``compiled``: ``sparsec.sparse_compile(..., force_format="csr")``; its step includes the O(nnz) value
  refresh the next forward does after ``optimizer.step()``;
- ``dense``: the same model eagerly with its (zero-filled) weights as ordinary dense tensors;
- ``masked``: eager with ``weight * mask`` recomputed in every forward (torch parametrization), the way
  masked sparse training (sparsec.prune, torch.ao.pruning) runs today;
- ``pool``: ``compiled`` with knob ``omp_dispatch`` off: slab kernels on sparsec's own thread pool instead of
  torch's libgomp threads (for comparison).

Rounds interleave the four methods (each round times each once, in rotating order); figures are
medians. The refresh row times the O(nnz) refresh alone (gather at the stored positions and pattern
check in one pass over W, gather into the transposed copy) and reports it as % of the compiled step;
the re-pack row is the in-place re-pack of one layer after a mask change (a RigL/SET update:
``CompiledModel.set_patterns``, no recompile).

    python benchmarks/bench_training.py [--quick] [--threads 2] [--rounds 15] [--out benchmarks/RESULTS.md]

Writes section ``training`` of the results file. Prints the load average at start and end; figures are
flagged "(loaded)" when the 1-minute load at the start was above 1.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPARSITY = 0.9
TARGETS = {"mlp": 2.0, "bert": 1.5}  # compiled step speedup over eager dense
REFRESH_TARGET = 5.0  # % of a compiled step
METHODS = ("compiled", "dense", "masked", "pool")


def prune_linears(model: nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude ``sparsity`` fraction of every Linear weight, in place."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                w = mod.weight
                k = int(w.numel() * sparsity)
                thr = w.abs().flatten().kthvalue(k).values
                w.mul_(w.abs() > thr)


class _Mask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def masked_copy(model: nn.Module) -> nn.Module:
    """A copy whose Linear weights are ``weight * mask`` in every forward (eager masked training)."""
    from torch.nn.utils import parametrize

    out = copy.deepcopy(model)
    for mod in out.modules():
        if isinstance(mod, nn.Linear):
            parametrize.register_parametrization(mod, "weight", _Mask((mod.weight != 0).float()))
    return out


class _BertBlock(nn.Module):
    """BertLayer returning its hidden states only (a tensor, not a tuple)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        cfg = BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        cfg._attn_implementation = "eager"
        self.layer = BertLayer(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]


def build(name: str, bert_batch: int) -> tuple[nn.Module, torch.Tensor]:
    """The model (pruned, eval mode: dropout is 0 anyway) and its input."""
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768))
        x = torch.randn(256, 768)
    else:
        model = _BertBlock()
        x = torch.randn(bert_batch, 128, 768)
    prune_linears(model, SPARSITY)
    return model.eval(), x


def make_step(model: nn.Module, fn, x: torch.Tensor):
    """One training step of ``fn`` (the model or its compiled form) updating ``model``'s parameters."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.randn_like(fn(x))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(fn(x), target).backward()
        opt.step()

    return step


def _pool_step(step):
    """The compiled step with its slab kernels on sparsec's own thread pool instead of torch's OpenMP
    threads (knob omp_dispatch off): what the libgomp dispatch (sparsec/targets/cpu/omp.py) saves."""
    from sparsec import knobs

    def run() -> None:
        with knobs.scope(omp_dispatch=False):
            step()

    return run


def refresh_cost(cm) -> float:
    """Seconds of one O(nnz) value refresh of every sparse layer (gather, pattern check, transposed copy)."""
    from sparsec.runtime import training
    from sparsec.targets.cpu.sparse_grad import refresh_values

    mods = [m for v in cm._variants for m in training.sparse_modules(v.module) if m.trainable is not None]
    if not mods:
        raise RuntimeError("no trainable sparse layer: the compiled model did not train through its kernels")
    t = time.perf_counter()
    for m in mods:
        if not refresh_values(m):
            raise RuntimeError("the mask changed during static sparse training")
    return time.perf_counter() - t


def mask_change_cost(cm, model: nn.Module) -> float:
    """Seconds to re-pack one layer in place after a RigL/SET-style mask change (100 weights dropped, 100
    grown at zero), as ``prune.CompiledTraining`` does after an update: ``CompiledModel.set_patterns``."""
    lin = next(m for m in model.modules() if isinstance(m, nn.Linear))
    mask = lin.weight.detach() != 0
    on, off = torch.nonzero(mask.view(-1)).view(-1)[:100], torch.nonzero(~mask.view(-1)).view(-1)[:100]
    with torch.no_grad():
        lin.weight.view(-1)[on] = 0.0
    mask.view(-1)[on] = False
    mask.view(-1)[off] = True
    t = time.perf_counter()
    cm.set_patterns({lin.weight: mask})
    return time.perf_counter() - t


def run_model(name: str, rounds: int, bert_batch: int) -> dict:
    """Median step seconds per method, refresh seconds, re-pack seconds, and the compiled check."""
    import sparsec

    base, x = build(name, bert_batch)
    models = {"compiled": copy.deepcopy(base), "dense": copy.deepcopy(base), "masked": masked_copy(base)}
    cm = sparsec.sparse_compile(models["compiled"], (x,), target="cpu", force_format="csr", calibrate=False,
                                threads=torch.get_num_threads())
    formats = sorted({layer.format for layer in cm.report().layers})
    fns = {"compiled": cm, "dense": models["dense"], "masked": models["masked"]}
    steps = {k: make_step(models[k], fns[k], x) for k in METHODS if k != "pool"}
    steps["pool"] = _pool_step(steps["compiled"])
    for _ in range(2):  # warm-up: kernel compiles, slot maps, transposed copies, optimizer state
        for k in METHODS:
            steps[k]()
    times = {k: [] for k in METHODS}
    refresh = []
    for r in range(rounds):
        order = METHODS[r % len(METHODS):] + METHODS[: r % len(METHODS)]
        for k in order:
            t = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t)
        refresh.append(refresh_cost(cm))
    # the pattern held (static sparse training): the compiled model was never recompiled
    w = models["compiled"]
    held = all(torch.equal(m.weight != 0, b.weight != 0) for m, b in
               zip((m for m in w.modules() if isinstance(m, nn.Linear)),
                   (m for m in base.modules() if isinstance(m, nn.Linear)), strict=True))
    if not held:
        raise RuntimeError(f"{name}: the sparsity pattern changed during static sparse training")
    repack = mask_change_cost(cm, w)
    return {"median": {k: statistics.median(v) for k, v in times.items()}, "refresh": statistics.median(refresh),
            "repack": repack, "formats": formats, "x": tuple(x.shape)}


def report(results: dict, load: tuple, threads: int, rounds: int, argv: str) -> str:
    loaded = load[0] > 1.0
    flag = " (loaded)" if loaded else ""
    lines = [
        f"`{argv}` — CPU, {threads} threads, {rounds} interleaved rounds, medians; 90% unstructured Linear "
        f"weights, SGD momentum 0.9. Load average at start {load[0]:.2f}, at end {load[1]:.2f}"
        f"{' — figures under load, not final' if loaded else ''}.",
        "",
        "| model | input | compiled ms | eager dense ms | eager masked ms | vs dense | vs masked | refresh ms "
        "| refresh % of step | re-pack ms | formats | compiled, sparsec pool threads ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        m = r["median"]
        lines.append(
            f"| {name} | {list(r['x'])} | {m['compiled'] * 1e3:.1f}{flag} | {m['dense'] * 1e3:.1f}{flag} | "
            f"{m['masked'] * 1e3:.1f}{flag} | {m['dense'] / m['compiled']:.2f}× | {m['masked'] / m['compiled']:.2f}× "
            f"| {r['refresh'] * 1e3:.2f} | {100 * r['refresh'] / m['compiled']:.1f}% | {r['repack'] * 1e3:.0f} | "
            f"{', '.join(r['formats'])} | {_ms(m.get('pool'))}{flag} |")
    lines += ["", "| target | figure | met |", "|---|---|---|"]
    for name, r in results.items():
        m = r["median"]
        sp = m["dense"] / m["compiled"]
        lines.append(f"| {name}: compiled step ≥ {TARGETS[name]}× eager dense | {sp:.2f}×{flag} | "
                     f"{'met' if sp >= TARGETS[name] else '**missed**'} |")
        pct = 100 * r["refresh"] / m["compiled"]
        lines.append(f"| {name}: O(nnz) refresh < {REFRESH_TARGET:.0f}% of a step | {pct:.1f}%{flag} | "
                     f"{'met' if pct < REFRESH_TARGET else '**missed**'} |")
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, BERT batch 1: checks the script runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--bert-batch", type=int, default=4)
    ap.add_argument("--models", default="mlp,bert")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)
    rounds, bert_batch = (3, 1) if args.quick else (args.rounds, args.bert_batch)
    torch.set_num_threads(args.threads)
    start = os.getloadavg()
    print(f"load average at start: {start[0]:.2f} {start[1]:.2f} {start[2]:.2f}", flush=True)
    results = {}
    for name in args.models.split(","):
        results[name] = run_model(name, rounds, bert_batch)
        m = results[name]["median"]
        print(name, {k: f"{v * 1e3:.1f} ms" for k, v in m.items()},
              f"refresh {results[name]['refresh'] * 1e3:.2f} ms", flush=True)
    end = os.getloadavg()
    print(f"load average at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}", flush=True)
    md = report(results, (start[0], end[0]), args.threads, rounds,
                "python benchmarks/bench_training.py" + (" --quick" if args.quick else ""))
    print(md)
    if not args.quick:
        from sparsec.bench.sections import write_section

        write_section(args.out, "training", md)


if __name__ == "__main__":
    main()
