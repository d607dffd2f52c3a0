"""End to end: eager vs compiled on the demo MLP and a HF BERT-base encoder, plus a per-layer check.

Both models get 90% of their (encoder) Linear weights zeroed by magnitude (``sparsec.demo.prune_linears``,
i.e. ``sparsec.prune.MagnitudePruner``). The per-layer check builds, for every layer the selector made
sparse, the chosen format's ``SparseLinear`` from the layer's weight and bias and times it against
``F.linear`` at the layer's N: the issue's "every layer: chosen format >= 0.95x dense".
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from sparsec.bench.bert import BERT_SEQ, bert_model
from sparsec.bench.methods import RTOL
from sparsec.bench.timing import time_interleaved

__all__ = ["BERT_SEQ", "E2EConfig", "bert_model", "build_model", "layer_check", "max_rel_error", "run_e2e", "run_model"]

@dataclass(frozen=True)
class E2EConfig:
    """Which models to run and how long to time them."""

    models: tuple[str, ...] = ("mlp", "bert")
    bert_layers: int = 12  # BERT-base has 12; --quick uses fewer
    sparsity: float = 0.9
    budget_s: float = 4.0  # per implementation (eager, compiled)
    layer_budget_s: float = 0.1  # per implementation per layer in the per-layer check
    compile_subprocess: bool = True  # cold/warm compile times of BERT in fresh processes
    seed: int = 0


def build_model(name: str, cfg: E2EConfig) -> tuple[torch.nn.Module, tuple, torch.nn.Module]:
    """(model, inputs, the submodule whose Linears get pruned) of ``name`` ('mlp' | 'bert')."""
    if name == "mlp":
        from sparsec.models import demo_models

        model, inputs = demo_models()["mlp"]
        return model, inputs, model
    if name == "bert":
        model, inputs = bert_model(cfg.bert_layers, cfg.seed)
        return model, inputs, model.encoder
    raise ValueError(f"unknown end-to-end model {name!r}")


def max_rel_error(got: object, ref: object) -> float:
    """Largest error over the output trees' tensors, relative to each tensor's scale (at least 1)."""
    g, r = pytree.tree_leaves(got), pytree.tree_leaves(ref)
    if len(g) != len(r):
        return float("inf")
    errs = [
        float((a.float() - b.float()).abs().max()) / max(float(b.abs().max()), 1.0)
        for a, b in zip(g, r, strict=True)
        if isinstance(b, torch.Tensor) and b.numel()
    ]
    return max(errs, default=0.0)


def _layer_weights(model: torch.nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The [out, in] weight and bias of the layer the report calls ``name`` (None if not a Linear)."""
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        return None
    if isinstance(mod, torch.nn.Linear):
        return mod.weight.detach(), (mod.bias.detach() if mod.bias is not None else None)
    return None


def layer_check(model: torch.nn.Module, report: object, threads: int, budget_s: float, seed: int) -> list[dict]:
    """Time every non-dense layer's chosen format (SparseLinear + bias) against F.linear at its N."""
    from sparsec.formats.registry import get_format
    from sparsec.targets.cpu.sparse_linear import SparseLinear

    rows, g = [], torch.Generator().manual_seed(seed)
    for layer in report.layers:
        row = {"layer": layer.name, "format": layer.format, "shape": list(layer.shape), "n": layer.n}
        found = _layer_weights(model, layer.name)
        if layer.format == "dense" or found is None:
            row["note"] = "runs in torch" if layer.format == "dense" else "not an nn.Linear: not checked"
            rows.append(row)
            continue
        w, b = found
        sl = SparseLinear(layer.name, get_format(layer.format), w, b, None, False, threads)
        x = torch.randn(layer.n, w.shape[1], generator=g)
        ref = F.linear(x, w, b)
        err = float((sl(x) - ref).abs().max()) / max(float(ref.abs().max()), 1.0)
        t = time_interleaved({"dense": lambda x=x, w=w, b=b: F.linear(x, w, b), "chosen": lambda x=x, sl=sl: sl(x)},
                             budget_s)
        row.update(dense_us=t["dense"].median_s * 1e6, chosen_us=t["chosen"].median_s * 1e6,
                   speedup=t["dense"].median_s / t["chosen"].median_s, err=err, ok=err <= RTOL)
        rows.append(row)
    return rows


def run_model(name: str, cfg: E2EConfig, threads: int, log=print) -> dict:
    """Prune, compile, check and time one model; returns its record (compile times in-process)."""
    import sparsec
    from sparsec.demo import prune_linears

    model, inputs, prune_root = build_model(name, cfg)
    t = time.perf_counter()
    prune_linears(prune_root, cfg.sparsity)
    prune_s = time.perf_counter() - t
    t = time.perf_counter()
    cm = sparsec.sparse_compile(model, inputs, target="cpu")
    compile_s = time.perf_counter() - t
    with torch.no_grad():
        ref, got = model(*inputs), cm(*inputs)
        err = max_rel_error(got, ref)
        times = time_interleaved({"eager": lambda: model(*inputs), "sparsec": lambda: cm(*inputs)},
                                 cfg.budget_s, min_reps=9)
    report = cm.report()
    formats = Counter(layer.format for layer in report.layers)
    log(f"{name}: eager {times['eager'].median_s * 1e3:.2f} ms, sparsec {times['sparsec'].median_s * 1e3:.2f} ms "
        f"({times['eager'].median_s / times['sparsec'].median_s:.2f}x), error {err:.1e}, formats {dict(formats)}")
    with torch.no_grad():
        layers = layer_check(model, report, threads, cfg.layer_budget_s, cfg.seed)
    rec = {
        "model": name, "inputs": [list(x.shape) for x in inputs], "sparsity": cfg.sparsity,
        "layers_total": len(report.layers), "formats": dict(formats),
        "eager_ms": times["eager"].median_s * 1e3, "sparsec_ms": times["sparsec"].median_s * 1e3,
        "eager_reps": times["eager"].reps, "sparsec_reps": times["sparsec"].reps,
        "speedup": times["eager"].median_s / times["sparsec"].median_s, "err": err, "ok": err <= RTOL,
        "prune_s": prune_s, "compile_s": compile_s, "layer_check": layers, "report": str(report),
    }
    if name == "bert":
        rec["bert_layers"] = cfg.bert_layers
        if cfg.compile_subprocess:
            from sparsec.bench.compile_time import cold_and_warm

            rec["compile"] = cold_and_warm(model, cfg.bert_layers, cfg.seed, threads)
            c = rec["compile"]
            log(f"bert compile: cold {c['cold_s']:.2f} s, warm (new process, same cache) {c['warm_s']:.2f} s, "
                f"warm (same process) {c['warm_inprocess_s']:.2f} s")
    return rec


def run_e2e(cfg: E2EConfig, threads: int, log=print) -> list[dict]:
    """Every model of ``cfg``; a model that cannot run is recorded (skipped or failed), not fatal."""
    out = []
    for name in cfg.models:
        try:
            out.append(run_model(name, cfg, threads, log))
        except ImportError as exc:  # transformers is an optional dependency (the `bench` extra)
            log(f"{name}: skipped ({exc})")
            out.append({"model": name, "skipped": f"{type(exc).__name__}: {exc}", "ok": True, "layer_check": []})
        except Exception as exc:  # noqa: BLE001 - a failing model is a result of the benchmark
            log(f"{name}: FAILED ({type(exc).__name__}: {exc})")
            out.append({"model": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}", "ok": False,
                        "layer_check": []})
    return out
