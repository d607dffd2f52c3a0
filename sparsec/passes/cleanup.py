"""cleanup: drop ops that are the identity in an exported eval-mode graph, so patterns meet.

``aten.dropout(x, p, train=False)`` (HF models call dropout in eval mode too) sits between a Linear and
its residual add and would keep the add out of the kernel's epilogue; it returns ``x`` unchanged, so
its uses are rewired to ``x``.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext

aten = torch.ops.aten


def _identity_input(node):
    """The input an identity op returns, or None when ``node`` is not one."""
    if node.op != "call_function":
        return None
    if node.target == aten.dropout.default:
        train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True)
        return node.args[0] if train is False else None
    return None


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Rewire every identity op's uses to its input and erase it."""
    removed = []
    for node in list(gm.graph.nodes):
        src = _identity_input(node)
        if src is None:
            continue
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        removed.append(node.name)
    if removed:
        gm.graph.lint()
        gm.recompile()
    ctx.summaries["cleanup"] = "removed identity ops: " + (", ".join(removed) or "-")
    return gm
