"""lower: replace each sparse fusion group by one runtime call, and compile its kernels for the example N.

The group (matmul node, then its fused activation and residual add) becomes a ``call_module`` of a
SparseLinear that owns the packed weight; every other node stays a torch op. The kernel specs of
the example shapes are compiled here so the first call is not slow and ``ir("mlir")`` has text.
"""

from __future__ import annotations

from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.formats import registry
from sparsec.passes.analyze import effective_weight
from sparsec.passes.matmul_like import get_constant, runtime_module
from sparsec.runtime.threads import default_threads


def _module_name(gm: GraphModule, layer_name: str) -> str:
    base = "sparsec_" + "".join(c if c.isalnum() else "_" for c in layer_name)
    name, k = base, 1
    while hasattr(gm, name):
        k += 1
        name = f"{base}_{k}"
    return name


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Rewrite every non-dense layer into a SparseLinear call."""
    threads = ctx.options.threads or default_threads()
    graph = gm.graph
    for node in list(graph.nodes):
        layer = node.meta.get("sparsec")
        if layer is None or layer.format == "dense":
            continue
        m = layer.m
        fmt = registry.get_format(layer.format)
        bias = get_constant(gm, m.bias) if m.bias is not None else None
        module = runtime_module(  # SparseLinear, or the module of the match's kind (left, conv2d, diag)
            m, layer.name, fmt, effective_weight(gm, m), bias, layer.activation, layer.residual is not None, threads
        )
        mod_name = _module_name(gm, layer.name)
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
        module.kernels(layer.n)
    graph.lint()
    gm.recompile()
    return gm
