"""Recognize matmul-like nodes whose weight is a constant of the model, in any of the layouts torch uses.

A match gives the weight's parameter name and how to read it as [out, in] (torch Linear layout):
``aten.linear(x, W[out,in], b)``; ``aten.addmm(b, x, W[in,out])`` (HF GPT-2's Conv1D); ``aten.mm`` and
``aten.matmul(x, W[in,out])``; each also through ``aten.t`` / ``transpose`` / ``permute`` of W.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
_TRANSPOSES = {aten.t.default, aten.transpose.int, aten.permute.default, aten.numpy_T.default}


@dataclass
class MatmulMatch:
    """A matmul-like node: activation input, weight source and its layout, bias source."""

    node: Node
    x_index: int  # position of the activation in node.args (read it there: earlier rewrites update args)
    weight: str  # fully qualified parameter / buffer name
    transposed: bool  # True when the stored tensor is [in, out]
    bias: str | None  # fully qualified name, or None
    weight_nodes: tuple[Node, ...]  # the get_attr (and transpose) nodes that feed the weight and bias

    @property
    def x(self) -> Node:
        """The activation operand, as the graph has it now."""
        return self.node.args[self.x_index]


def _const_name(gm: GraphModule, node) -> str | None:
    if isinstance(node, Node) and node.op == "get_attr":
        return str(node.target)
    return None


def _weight_source(gm: GraphModule, node) -> tuple[str, bool, tuple[Node, ...]] | None:
    """(name, transposed, nodes) when ``node`` is a 2-d constant, possibly transposed once."""
    name = _const_name(gm, node)
    if name is not None:
        return name, False, (node,)
    if isinstance(node, Node) and node.op == "call_function" and node.target in _TRANSPOSES:
        inner = _const_name(gm, node.args[0])
        if inner is None:
            return None
        if node.target == aten.permute.default and list(node.args[1]) not in ([1, 0], [-1, -2], [1, -2]):
            return None
        if node.target == aten.transpose.int and sorted(int(d) % 2 for d in node.args[1:3]) != [0, 1]:
            return None
        return inner, True, (node.args[0], node)
    return None


def match(gm: GraphModule, node: Node) -> MatmulMatch | None:
    """The MatmulMatch of ``node``, or None when it is not a matmul with a constant 2-d weight."""
    if node.op != "call_function":
        return None
    if node.target == aten.linear.default:
        src = _weight_source(gm, node.args[1])
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if src is None or (bias is not None and _const_name(gm, bias) is None):
            return None
        name, transposed, wn = src
        # linear reads W as [out, in]; a transposed constant feeding it is stored [in, out]
        extra = (bias,) if bias is not None else ()
        return MatmulMatch(node, 0, name, transposed, _const_name(gm, bias), wn + extra)
    if node.target == aten.addmm.default:
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            return None
        src, bias = _weight_source(gm, node.args[2]), _const_name(gm, node.args[0])
        if src is None or bias is None:
            return None
        name, transposed, wn = src
        return MatmulMatch(node, 1, name, not transposed, bias, wn + (node.args[0],))
    if node.target in (aten.mm.default, aten.matmul.default):
        src = _weight_source(gm, node.args[1])
        if src is None:
            return None
        name, transposed, wn = src
        return MatmulMatch(node, 0, name, not transposed, None, wn)
    return None


def get_constant(gm: GraphModule, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` of the graph module."""
    obj = gm
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
