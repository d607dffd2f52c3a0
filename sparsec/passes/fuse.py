"""fuse: attach each sparse matmul's epilogue (activation, then residual add) to its kernel.

A node joins the group only if everything before it in the chain has no other user, so no value the
rest of the graph reads disappears. The bias is part of the matmul node already (linear / addmm).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from sparsec.compiler.context import CompileContext

aten = torch.ops.aten
ACTIVATIONS = {
    aten.relu.default: "relu",
    aten.silu.default: "silu",
    aten.tanh.default: "tanh",
    aten.gelu.default: "gelu",
}


def _activation(node: Node) -> str | None:
    name = ACTIVATIONS.get(node.target) if node.op == "call_function" else None
    if name == "gelu" and (node.kwargs.get("approximate", "none") != "none" or len(node.args) > 1):
        approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
        return "gelu" if approximate == "none" else None
    return name


def _same_shape(a: Node, b) -> bool:
    va, vb = a.meta.get("val"), getattr(b, "meta", {}).get("val")
    if not (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor)):
        return False
    # Compare printed sizes: symbolic sizes are distinct SymInt objects even when they are equal.
    return va.dtype == vb.dtype and [str(d) for d in va.shape] == [str(d) for d in vb.shape]


def _residual(add: Node, prev: Node) -> int | None:
    """Index in ``add.args`` of the other operand of ``prev + other`` (same-shape tensor, alpha 1)."""
    if add.op != "call_function" or add.target != aten.add.Tensor or add.kwargs.get("alpha", 1) != 1:
        return None
    if len(add.args) != 2:
        return None
    a, b = add.args
    idx = 1 if a is prev else 0 if b is prev else None
    if idx is None:
        return None
    other = add.args[idx]
    if not isinstance(other, Node) or other is prev or not _same_shape(prev, other):
        return None
    return idx


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Record the fusion group of every node the selector made sparse."""
    if not ctx.options.fuse:
        return gm
    lines = []
    claimed: set[Node] = set()  # nodes already in some layer's group: A(x) + B(x) must be fused once
    for node in gm.graph.nodes:
        layer = node.meta.get("sparsec")
        if layer is None or (layer.format == "dense" and not layer.quantize):  # int8 dense layers fuse too
            continue
        tail = node
        if len(tail.users) == 1:
            user = next(iter(tail.users))
            act = _activation(user)
            if act is not None and user not in claimed:
                layer.activation = act
                layer.fused_nodes.append(user)
                tail = user
        if len(tail.users) == 1:
            user = next(iter(tail.users))
            idx = _residual(user, tail)
            if idx is not None and user not in claimed:
                layer.residual_index = idx
                layer.fused_nodes.append(user)
        claimed.update(layer.fused_nodes)
        names = [n.name for n in layer.fused_nodes]
        lines.append(f"{node.name}: {layer.name} + {names or 'nothing'}")
    ctx.summaries["fuse"] = "\n".join(lines)
    return gm
