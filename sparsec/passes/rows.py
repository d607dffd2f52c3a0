"""rows: the real row count N of layers whose N is data-dependent, and bucketed kernels for them.

torch.export captures data-dependent routing (a mixture of experts' ``torch.where(idx == e)``) with
unbacked sizes: the tokens an expert sees have no example value in the graph, so analyze's N is a guess.
This pass runs the graph once on the example inputs, records the real N of those layers for the cost
model, and marks Linear layers to round N up to a bucket at run time (sparsec.targets.cpu.sparse_rows), so
routing that changes on every call compiles a few kernel shapes instead of one per token count.
"""

from __future__ import annotations

import logging

import torch
from torch.fx import GraphModule, Interpreter, Node
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from sparsec.compiler.context import CompileContext
from sparsec.passes.matmul_like import rows_of

log = logging.getLogger("sparsec")


def data_dependent(node: Node) -> bool:
    """Whether the node's output size depends on tensor values (an unbacked symbol)."""
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and bool(free_unbacked_symbols(val.shape))


def example_shapes(gm: GraphModule, inputs: tuple, nodes: set[Node]) -> dict[Node, tuple[int, ...]]:
    """Run ``gm`` on ``inputs`` (flattened) and return the output shape of each node in ``nodes``."""
    shapes: dict[Node, tuple[int, ...]] = {}

    class Recorder(Interpreter):
        def run_node(self, n: Node):
            out = super().run_node(n)
            if n in nodes and isinstance(out, torch.Tensor):
                shapes[n] = tuple(out.shape)
            return out

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return shapes


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Measure N of every analyzed layer whose N is data-dependent; mark Linear ones for bucketing."""
    layers = [n.meta["sparsec"] for n in gm.graph.nodes if "sparsec" in n.meta and data_dependent(n)]
    if not layers:
        return gm
    try:
        shapes = example_shapes(gm, ctx.example_inputs, {layer.m.node for layer in layers})
    except Exception as exc:  # the estimate only steers the cost model: keep the guess, say why
        log.info("sparsec: could not run the graph on the example inputs to measure N (%s)", exc)
        shapes = {}
    lines = []
    for layer in layers:
        shape = shapes.get(layer.m.node)
        if shape is not None:
            layer.n = max(rows_of(layer.m.kind, shape), 1)
        if layer.m.kind == "linear":
            layer.m.params["bucket_rows"] = True
        lines.append(f"{layer.m.node.name}: {layer.name} data-dependent N, example N={layer.n}")
    ctx.summaries["rows"] = "\n".join(lines)
    return gm
