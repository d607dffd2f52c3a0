"""The pipeline: the ordered passes, in one list, each leaving its stage text behind; the report.

capture (torch.export, stage ``fx``) -> fold_constants -> cleanup -> fold_bn -> shrink -> analyze -> rows -> select ->
autotune -> fuse -> lower -> gather (one stage per pass: the graph after it, annotated with
each layer's facts, format and fusion) -> ``lowered`` (the code calls run) -> the target's codegen stages
(``mlir``/``llvm`` on the CPU, ``triton``/``ttgir``/``ptx`` on the GPU targets). ``cm.stages()`` lists a
compile's stages in this order, ``cm.ir(name)`` returns one (sparsec/compiler/stages.py renders them); the
per-layer report is read off the lowered graph.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.compiler.stages import fx_stage_text, layers_of, pass_stage_text, stage_names
from sparsec.formats import registry
from sparsec.formats.cost import DEFAULT_MACHINE
from sparsec.passes import (
    analyze,
    autotune,
    cleanup,
    fold_bn,
    fold_constants,
    fuse,
    gather,
    lower,
    rows,
    select,
    shrink,
)
from sparsec.passes.analyze import why_no_layers
from sparsec.report.hwfit import fit_from_facts
from sparsec.report.report import LayerReport, Report

PASSES = [
    # compute weights derived from constants (unfinalized prune masks, parametrizations, autocast casts) so
    # every later pass sees the real weight and its zeros; needs the exported graph
    ("fold_constants", fold_constants.run),
    # drop eval-mode identities (dropout) so a Linear meets its residual add; needs the exported graph
    ("cleanup", cleanup.run),
    # fold eval BatchNorm into the conv / Linear before it; needs constant weights and running stats
    ("fold_bn", fold_bn.run),
    # remove channels that are zero in every producer of a channel group (networkx groups); needs folded
    # BatchNorms (a BatchNorm hides a zero channel) and runs before analyze so it measures the smaller weights
    ("shrink", shrink.run),
    # measure every constant weight of a matmul-like node; needs the exported graph with node.meta["val"]
    ("analyze", analyze.run),
    # real N of layers whose N is data-dependent (MoE routing), bucketed kernels for them; needs analyze's
    # layers and ctx.example_inputs (it runs the graph once)
    ("rows", rows.run),
    # pick a format per layer, priced per operand kind (a conv2d's dense option is torch's conv2d, about 2x
    # a GEMM's rate: sparsec/passes/operand_kinds.py); needs the facts from analyze
    ("select", select.run),
    # (autotune=True) time the leading candidates on the real weights; needs select's costs
    ("autotune", autotune.run),
    # attach activation / residual to each sparse layer; needs the chosen formats (dense layers are left alone)
    ("fuse", fuse.run),
    # replace each fused group by a SparseLinear call and compile its kernels; needs the fusion groups
    ("lower", lower.run),
    # SDDMM S * (X @ B) and masked sums (S * X).sum() over a sparse constant -> COO gather kernels; runs
    # after lower so the matmul passes never see these sites (their SparseLayer rows join the report)
    ("gather", gather.run),
]

#: every stage name a compile can have, in pipeline order (a compile has the codegen stages of its target:
#: ``cm.stages()``); sparsec/compiler/stages.py renders them
STAGES = stage_names([name for name, _ in PASSES], None)


def run_passes(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Run every pass in order, recording each stage's text (``cm.ir(name)``) as the graph changes."""
    ctx.stages["fx"] = fx_stage_text(gm)
    for i, (name, fn) in enumerate(PASSES, 1):
        gm = fn(gm, ctx)
        ctx.stages[name] = pass_stage_text(name, fn, i, len(PASSES), ctx.summaries.pop(name, ""), gm)
    return gm


def build_report(gm: GraphModule, notes: list[str] | None = None) -> Report:
    """The per-layer report of a lowered graph, with the compile's notes (weights kept dense, and why)."""
    rep = Report(notes=list(notes or []))
    for layer in layers_of(gm):
        out_f, in_f = layer.facts.shape
        n = layer.n
        fmt = registry.get_format(layer.format)
        module = layer.module
        stored = module.stored if module is not None else fmt.stored_values(layer.facts)
        sparse_bytes = module.nbytes if module is not None else fmt.sparse_bytes(layer.facts)
        pred_dense = layer.costs.get("dense") or registry.get_format("dense").cost(layer.facts, n, DEFAULT_MACHINE)
        pred = layer.costs.get(layer.format, pred_dense)
        fused = "+".join(x for x in ([layer.activation] if layer.activation else []) +
                         (["residual"] if layer.residual_index is not None else []))
        if layer.format != "dense" and layer.m.bias is not None:
            fused = "bias" + ("+" + fused if fused else "")
        el = torch.empty((), dtype=layer.dtype).element_size()
        wel = 1 if layer.quantize else el  # int8 weights: one byte a value
        if layer.format == "dense":
            stored, sparse_bytes = out_f * in_f, wel * out_f * in_f
        rep.layers.append(LayerReport(
            name=layer.name, format=layer.format, shape=(out_f, in_f), n=n, density=layer.facts.density,
            dense_flops=2 * n * out_f * in_f, sparse_flops=2 * n * stored,
            dense_bytes=el * out_f * in_f, sparse_bytes=int(sparse_bytes),
            dtype=layer.quantize or str(layer.dtype).replace("torch.", ""), activation_bytes=el * n * (in_f + out_f),
            quant_error=layer.quant_error,
            fit=fit_from_facts(layer.facts),
            predicted_dense_us=pred_dense * 1e6, predicted_us=pred * 1e6, reason=layer.reason, fused=fused,
            measured_dense_us=layer.measured["dense"] * 1e6 if "dense" in layer.measured else None,
            measured_us=layer.measured[layer.format] * 1e6 if layer.format in layer.measured else None,
        ))
    if not rep.layers:  # never an empty report without a word: say why nothing could be made sparse
        rep.notes.append(why_no_layers(gm))
    rep.torch_ops = [
        str(node.target).replace("aten.", "").split(".")[0]
        for node in gm.graph.nodes
        if node.op == "call_function" and "sym_size" not in str(node.target)
    ]
    return rep
