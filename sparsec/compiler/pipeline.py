"""The pipeline: the ordered passes, in one list, and the stage texts each leaves behind.

capture (torch.export) -> analyze -> select -> fuse -> lower; the report is read off the result.
"""

from __future__ import annotations

import os

from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.formats import registry
from sparsec.formats.cost import DEFAULT_MACHINE
from sparsec.passes import (
    analyze,
    autotune,
    cleanup,
    conv_select,
    fold_bn,
    fuse,
    gather,
    lower,
    rows,
    select,
    shrink,
)
from sparsec.report.report import LayerReport, Report

PASSES = [
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
    # pick a format per layer; needs the facts from analyze
    ("select", select.run),
    # a conv2d layer's dense option is torch's conv2d (about 2x a GEMM's rate), not a GEMM; needs select's costs
    ("conv_select", conv_select.run),
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

STAGES = ("fx", "sparse", "lowered", "mlir", "llvm", "triton", "ttgir", "ptx")
#: stages only the GPU targets produce (compiled for sm_90 on request, no GPU needed)
GPU_STAGES = ("triton", "ttgir", "ptx")


def sparse_stage_text(gm: GraphModule) -> str:
    """The graph with each analyzed node's facts, format and fusion group as a comment."""
    lines = []
    for node in gm.graph.nodes:
        lines.append(node.format_node() or "")
        layer = node.meta.get("sparsec")
        if layer is not None:
            fused = [n.name for n in layer.fused_nodes]
            lines.append(f"    # sparsec: {layer.name} {layer.facts.summary()}")
            lines.append(f"    #   format={layer.format} ({layer.reason}); fused={fused or '-'}")
    return "\n".join(lines)


def run_passes(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Run every pass in order, recording the stage texts users can ask for with ``ir()``."""
    ctx.stages["fx"] = str(gm.graph)
    for name, fn in PASSES:
        if name == "lower":
            ctx.stages["sparse"] = sparse_stage_text(gm)
        gm = fn(gm, ctx)
    ctx.stages["lowered"] = gm.code
    kernels = {}
    for layer in layers_of(gm):
        if layer.module is not None and hasattr(layer.module, "kernels"):
            for k in layer.module.kernels(layer.n):
                kernels[k.spec] = k
    ctx.stages["mlir"] = "\n".join(f"// kernel {k.spec.name}\n{k.mlir}" for k in kernels.values())
    ctx.stages["llvm"] = "\n".join(f"// kernel {k.spec.name}\n{k.llvm}" for k in kernels.values())
    _dump(ctx)
    return gm


def gpu_stage_text(gm: GraphModule, stage: str, arch: int = 90) -> str:
    """Triton source, or the ttgir / PTX compiled for ``sm_{arch}``, of every distinct GPU kernel."""
    from sparsec.codegen import triton as tk

    seen, parts = set(), []
    for layer in layers_of(gm):
        mod = layer.module
        if mod is None or not hasattr(mod, "family"):
            continue
        if stage == "triton":
            key = mod.family
            text = tk.kernel_source(mod.family) if key not in seen else None
        else:
            variant = {"activation": mod.activation, "bias": mod.bias is not None, "residual": mod.has_residual}
            if mod.family == "bsr":
                variant["block"] = (mod.fmt.bh, mod.fmt.bw)
            if mod.family == "nm":
                variant["pattern"] = (mod.fmt.n, mod.fmt.m)
            key = (mod.family, str(mod.dtype), tuple(sorted(variant.items())))
            text = None
            if key not in seen:
                text = tk.compile_for_target(mod.family, arch=arch, dtype=mod.dtype, **variant)[stage]
        if text is not None:
            seen.add(key)
            parts.append(f"// {layer.name}: {mod.family} kernel\n{text}")
    return "\n".join(parts)


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
        rep.layers.append(LayerReport(
            name=layer.name, format=layer.format, shape=(out_f, in_f), n=n, density=layer.facts.density,
            dense_flops=2 * n * out_f * in_f, sparse_flops=2 * n * stored,
            dense_bytes=4 * out_f * in_f, sparse_bytes=int(sparse_bytes),
            predicted_dense_us=pred_dense * 1e6, predicted_us=pred * 1e6, reason=layer.reason, fused=fused,
            measured_dense_us=layer.measured["dense"] * 1e6 if "dense" in layer.measured else None,
            measured_us=layer.measured[layer.format] * 1e6 if layer.format in layer.measured else None,
        ))
    rep.torch_ops = [
        str(node.target).replace("aten.", "").split(".")[0]
        for node in gm.graph.nodes
        if node.op == "call_function" and "sym_size" not in str(node.target)
    ]
    return rep


def _dump(ctx: CompileContext) -> None:
    if not ctx.options.dump_dir:
        return
    os.makedirs(ctx.options.dump_dir, exist_ok=True)
    for stage, text in ctx.stages.items():
        with open(os.path.join(ctx.options.dump_dir, f"{stage}.txt"), "w") as f:
            f.write(text)


def layers_of(gm: GraphModule) -> list:
    """The SparseLayer of every analyzed node (lowered or dense), in graph order."""
    return [n.meta["sparsec"] for n in gm.graph.nodes if "sparsec" in n.meta]
