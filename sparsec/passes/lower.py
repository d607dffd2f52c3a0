"""lower: replace each sparse fusion group by one runtime call, and compile its kernels for the example N.

The group (matmul node, then its fused activation and residual add) becomes a ``call_module`` of a
runtime module that owns the packed weight, built by the compile's target (``ctx.target.module``):
SparseLinear and its siblings on the CPU (MLIR kernels), TritonLinear on the GPU or the Triton
interpreter; every other node stays a torch op. The kernel specs of
the example shapes are compiled here so the first call is not slow and ``ir("mlir")`` has text.
"""

from __future__ import annotations

from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.formats import registry
from sparsec.passes.analyze import effective_weight
from sparsec.passes.matmul_like import get_constant
from sparsec.runtime.progress import progress
from sparsec.targets.cpu.threads import default_threads


def module_name(gm: GraphModule, layer_name: str) -> str:
    """A free attribute name ``sparsec_<layer>`` for a runtime submodule of ``gm``."""
    base = "sparsec_" + "".join(c if c.isalnum() else "_" for c in layer_name)
    name, k = base, 1
    while hasattr(gm, name):
        k += 1
        name = f"{base}_{k}"
    return name


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Rewrite every non-dense layer into a call of its target's runtime module."""
    threads = ctx.options.threads or default_threads()
    graph, lines = gm.graph, []
    nodes = [node for node in graph.nodes if node.meta.get("sparsec") is not None]
    bar = progress(nodes, "sparsec compile kernels")
    quantized = []  # (layer, fmt, weight, bias, has_residual) of the int8 layers, for the float32 fallback
    for node in bar:
        layer = node.meta["sparsec"]
        if layer.format == "dense" and not layer.quantize:
            lines.append(f"{node.name}: {layer.name} stays a torch op (dense)")
            continue
        bar.set_postfix_str(layer.name[-40:])
        m = layer.m
        fmt = registry.get_format(layer.format)
        bias = get_constant(gm, m.bias) if m.bias is not None else None
        weight = effective_weight(gm, m)
        if layer.quantize:  # select quantizes float32 Linear layers only on a target with quantize_modes
            module = ctx.target.quantized_module(layer, fmt, weight, bias, threads)
            quantized.append((layer, fmt, weight, bias, layer.residual is not None))
        else:
            module = ctx.target.module(layer, fmt, weight, bias, threads)
        _link_parameters(gm, ctx, m, module)
        mod_name = module_name(gm, layer.name)
        gm.add_submodule(mod_name, module)
        tail = layer.fused_nodes[-1] if layer.fused_nodes else node
        args = (m.x,) if layer.residual is None else (m.x, layer.residual)
        with graph.inserting_before(tail):
            call = graph.call_module(mod_name, args)
        call.meta = dict(tail.meta)
        call.meta["sparsec"] = layer
        tail.replace_all_uses_with(call)
        for dead in reversed([node, *layer.fused_nodes]):
            graph.erase_node(dead)
        for wn in reversed(m.weight_nodes):
            if not wn.users:
                graph.erase_node(wn)
        layer.module_name = mod_name
        layer.module = module
        module.prepare(layer.n)  # compile the example shape's kernels now (MLIR; Triton compiles on call)
        lines.append(f"{node.name}: {layer.name} ({layer.format}) -> {mod_name} ({type(module).__name__})")
    graph.lint()
    gm.recompile()
    if ctx.options.quantize and ctx.example_inputs:  # each int8 layer's error on the example inputs (report)
        ctx.target.measure_quantization(gm, ctx.example_inputs)
        lines += _keep_float(gm, ctx, quantized, threads)
    ctx.summaries["lower"] = "\n".join(lines)
    return gm


def _keep_float(gm: GraphModule, ctx: CompileContext, quantized: list, threads: int) -> list[str]:
    """Record each int8 layer's measured error; one above ``options.quantize_max_error`` runs in float32
    (the target's ``float_module`` of the same format and fused epilogue replaces its int8 module)."""
    bound, lines = ctx.options.quantize_max_error, []
    for layer, fmt, weight, bias, has_residual in quantized:
        layer.quant_error = err = getattr(layer.module, "quant_error", None)
        if bound is None or err is None or err <= bound:
            continue
        module = ctx.target.float_module(layer, fmt, weight, bias, has_residual, threads)
        setattr(gm, layer.module_name, module)
        module.prepare(layer.n)
        layer.module, layer.quantize = module, None
        layer.reason = (f"kept float32: its int8 error {err:.2%} > quantize_max_error {bound:.2%}; "
                        f"{layer.reason}")
        lines.append(f"{layer.name}: int8 error {err:.2%} > {bound:.2%}: {type(module).__name__} (float32)")
    return lines


def _link_parameters(gm: GraphModule, ctx: CompileContext, m, module) -> None:
    """Let a runtime module give gradients to the user's parameters when it computes with them unchanged.

    Only a module the target trains through (``ctx.target.trains_parameters``: a plain SparseLinear or CompactLinear) of a
    plain linear whose weight (and bias) are the model's own Parameters qualifies: a folded, shrunk or
    transposed weight has no parameter to give its gradient to (the model then raises on backward, see
    CompiledModel)."""
    if not ctx.target.trains_parameters(module) or m.kind != "linear" or m.transposed or ctx.root is None:
        return
    params = {id(p) for p in ctx.root.parameters()}
    weight = get_constant(gm, m.weight)
    bias = get_constant(gm, m.bias) if m.bias is not None else None
    if id(weight) in params and (bias is None or id(bias) in params):
        module.train_refs = (weight, bias)
