"""Recognize matmul-like nodes with a constant operand, in any of the layouts torch uses.

Every match names a constant of the model and how to read it as a 2-d matrix W [out, in] so that the
node computes ``W`` applied to an activation; analyze measures W, select picks its format, and the
runtime module of the match's ``kind`` runs it on the one CPU kernel family (Y^T = W X^T):

- ``linear``: ``x @ W^T``: ``aten.linear(x, W[out,in], b)``; ``aten.addmm(b, x, W[in,out])`` (HF GPT-2's
  Conv1D); ``aten.mm`` / ``aten.matmul(x, W[in,out])``; each also through ``t`` / ``transpose`` /
  ``permute`` of W.
- ``left``: a constant LEFT operand, ``A @ H`` (``mm`` / ``matmul`` / ``mv``; SpMV, SpMM, a GCN's fixed
  adjacency): A [M, K] is W itself and H [..., K, N] is already the kernel's X^T layout.
- ``conv2d``: ``aten.conv2d`` / ``aten.convolution`` with a constant filter, groups 1: W is the filter
  as [Cout, Cin*kh*kw] and the activation is the image, lowered as im2col + the same kernel.
- ``diag``: sparse row scaling ``s[:, None] * H`` with a constant vector s (at most half nonzero): W is
  ``diag(s)`` and the node is ``diag(s) @ H``, so only the rows whose scale is nonzero are computed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule, Node
from torch.fx.experimental.symbolic_shapes import optimization_hint

from sparsec import knobs
from sparsec.passes.operand_kinds import kind as operand_kind

aten = torch.ops.aten
_TRANSPOSES = {aten.t.default, aten.transpose.int, aten.permute.default, aten.numpy_T.default}
_UNSQUEEZES = {aten.unsqueeze.default, aten.view.default, aten.reshape.default}
#: a row-scaling vector with more nonzeros than this fraction stays an element-wise torch multiply


@dataclass
class MatmulMatch:
    """A matmul-like node: activation input, weight source and its layout, bias source."""

    node: Node
    x_index: int  # position of the activation in node.args (read it there: earlier rewrites update args)
    weight: str  # fully qualified parameter / buffer name
    transposed: bool  # True when the stored tensor is the transpose of W [out, in]
    bias: str | None  # fully qualified name, or None
    weight_nodes: tuple[Node, ...]  # the get_attr (and transpose) nodes that feed the weight and bias
    kind: str = "linear"  # how W meets the activation: a key of sparsec.passes.operand_kinds.KINDS
    params: dict = field(default_factory=dict)  # kind-specific: conv geometry, row bucketing

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
        # a batched (3-d) constant, e.g. per-head weights [heads, in, out], has no 2-d W (see batched_weight)
        return (name, False, (node,)) if get_constant(gm, name).dim() == 2 else None
    if isinstance(node, Node) and node.op == "call_function" and node.target in _TRANSPOSES:
        inner = _const_name(gm, node.args[0])
        if inner is None or get_constant(gm, inner).dim() != 2:
            return None
        if node.target == aten.permute.default and list(node.args[1]) not in ([1, 0], [-1, -2], [1, -2]):
            return None
        if node.target == aten.transpose.int and sorted(int(d) % 2 for d in node.args[1:3]) != [0, 1]:
            return None
        return inner, True, (node.args[0], node)
    return None


def _rank(node) -> int | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def match(gm: GraphModule, node: Node) -> MatmulMatch | None:
    """The MatmulMatch of ``node``, or None when it is not a matmul with a constant 2-d operand."""
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
        if src is None or bias is None or get_constant(gm, bias).dim() != 1:
            return None
        name, transposed, wn = src
        return MatmulMatch(node, 1, name, not transposed, bias, wn + (node.args[0],))
    if node.target in (aten.mm.default, aten.matmul.default, aten.mv.default):
        src = _weight_source(gm, node.args[1]) if node.target != aten.mv.default else None
        if src is not None:
            name, transposed, wn = src
            return MatmulMatch(node, 0, name, not transposed, None, wn)
        return _match_left(gm, node)
    if node.target in (aten.conv2d.default, aten.convolution.default):
        return _match_conv(gm, node)
    if node.target == aten.mul.Tensor:
        return _match_diag(gm, node)
    return None


def _match_left(gm: GraphModule, node: Node) -> MatmulMatch | None:
    """``A @ H`` with A a constant matrix and H an activation of rank >= 1."""
    src = _weight_source(gm, node.args[0])
    other = node.args[1]
    if src is None or _const_name(gm, other) is not None or not isinstance(other, Node):
        return None
    rank = _rank(other)
    if rank is None or rank < 1 or get_constant(gm, src[0]).dim() != 2:
        return None
    name, transposed, wn = src
    return MatmulMatch(node, 1, name, transposed, None, wn, kind="left")


def _ints(v, n: int = 2) -> list[int] | None:
    if isinstance(v, int):
        return [v] * n
    if isinstance(v, (list, tuple)) and all(isinstance(i, int) for i in v):
        return list(v) * n if len(v) == 1 else list(v)
    return None


def _match_conv(gm: GraphModule, node: Node) -> MatmulMatch | None:
    """A 2-d convolution (groups 1, not transposed) with a constant 4-d filter and constant bias."""
    args = list(node.args)
    if node.target == aten.convolution.default:
        if len(args) < 9 or args[6] or args[8] != 1:  # transposed conv / groups
            return None
        stride, padding, dilation = args[3], args[4], args[5]
    else:
        defaults = [None, None, None, [1, 1], [0, 0], [1, 1], 1]
        args = args + defaults[len(args):]
        for i, key in enumerate(("input", "weight", "bias", "stride", "padding", "dilation", "groups")):
            if key in node.kwargs:
                args[i] = node.kwargs[key]
        stride, padding, dilation = args[3], args[4], args[5]
        if args[6] != 1:
            return None
    w_name, b = _const_name(gm, args[1]), args[2]
    if w_name is None or (b is not None and _const_name(gm, b) is None):
        return None
    stride, padding, dilation = _ints(stride), _ints(padding), _ints(dilation)
    w = get_constant(gm, w_name)
    if w.dim() != 4 or None in (stride, padding, dilation) or _rank(args[0]) not in (3, 4):
        return None
    extra = (b,) if b is not None else ()
    params = {"kernel_size": tuple(w.shape[2:]), "stride": tuple(stride), "padding": tuple(padding),
              "dilation": tuple(dilation)}
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):  # the example's output size: which kernel shapes to compile up front
        params["out_hw"] = tuple(int(optimization_hint(s, fallback=1)) for s in val.shape[-2:])
    return MatmulMatch(node, 0, w_name, False, _const_name(gm, b), (args[1], *extra), kind="conv2d",
                       params=params)


def _column_vector(gm: GraphModule, node) -> tuple[str, tuple[Node, ...]] | None:
    """A constant vector s broadcast along rows: ``s[:, None]`` / ``s.view(-1, 1)`` or a stored [M, 1]."""
    name = _const_name(gm, node)
    if name is not None:
        t = get_constant(gm, name)
        return (name, (node,)) if t.dim() == 2 and t.shape[1] == 1 else None
    if isinstance(node, Node) and node.op == "call_function" and node.target in _UNSQUEEZES:
        inner = _const_name(gm, node.args[0])
        if inner is None or get_constant(gm, inner).dim() != 1:
            return None
        shape = node.meta.get("val").shape if isinstance(node.meta.get("val"), torch.Tensor) else None
        if shape is None or len(shape) != 2 or shape[1] != 1:
            return None
        return inner, (node.args[0], node)
    return None


def _match_diag(gm: GraphModule, node: Node) -> MatmulMatch | None:
    """``s[:, None] * H`` (either operand order) with s a mostly-zero constant and H [..., M, N]."""
    if len(node.args) != 2 or not all(isinstance(a, Node) for a in node.args):
        return None
    for idx in (0, 1):
        src = _column_vector(gm, node.args[idx])
        other = node.args[1 - idx]
        if src is None or _const_name(gm, other) is not None:
            continue
        s = get_constant(gm, src[0]).reshape(-1)
        val, oval = node.meta.get("val"), other.meta.get("val")
        if not (isinstance(val, torch.Tensor) and isinstance(oval, torch.Tensor)) or oval.dim() < 2:
            continue
        # the product must have H's shape (no broadcast growth) and s must scale H's rows
        if [str(d) for d in val.shape] != [str(d) for d in oval.shape] or str(oval.shape[-2]) != str(len(s)):
            continue
        if not s.is_floating_point() or float((s != 0).float().mean()) > knobs.get("diag_max_density"):
            continue
        return MatmulMatch(node, 1 - idx, src[0], False, None, src[1], kind="diag")
    return None


#: ops that multiply by a weight operand; a rank >= 3 constant reaching one stays dense (batched_weight)
_MATMULS = {aten.linear.default, aten.mm.default, aten.matmul.default, aten.bmm.default, aten.addmm.default,
            aten.baddbmm.default, aten.einsum.default}
#: ops that take a view / slice / copy of a constant on its way to a matmul (an expert's slice W[e])
_VIEWS = _TRANSPOSES | _UNSQUEEZES | {aten.select.int, aten.index.Tensor, aten.slice.Tensor, aten.expand.default,
                                      aten.unbind.int, aten.split.Tensor, aten.chunk.default, aten.contiguous.default,
                                      aten.clone.default, aten._to_copy.default, aten.to.dtype}


def _root_constant(gm: GraphModule, node, depth: int = 6) -> str | None:
    """The constant a chain of views / slices of at most ``depth`` steps starts from, else None."""
    for _ in range(depth):
        name = _const_name(gm, node)
        if name is not None:
            return name
        if not (isinstance(node, Node) and node.op == "call_function"):
            return None
        if node.target is not operator.getitem and node.target not in _VIEWS:
            return None
        node = node.args[0]
    return None


#: names of library ops that multiply by a batch of weights (torch's _grouped_mm, transformers' grouped_mm
#: fallback for fused MoE experts, custom bmm kernels)
_MATMUL_NAMES = ("grouped_mm", "bmm", "matmul")


def is_matmul(target) -> bool:
    """True for an op that multiplies by a weight operand (linear, mm, matmul, bmm, addmm, einsum, grouped mm)."""
    if target in _MATMULS:
        return True
    if not isinstance(target, torch._ops.OpOverload):
        return False
    return any(k in target.name() for k in _MATMUL_NAMES)


def batched_weight(gm: GraphModule, node: Node) -> str | None:
    """Why ``node`` keeps a constant weight dense: a matmul-like op reading a rank >= 3 constant (per-head
    weights ``x @ W[heads, in, out]``, or one expert's slice of fused MoE weights ``W[experts, out, in]``).
    None when the node is no such op. No kernel takes a batch of sparse matrices yet."""
    if node.op != "call_function" or not is_matmul(node.target):
        return None
    args = node.args[0] if node.target == aten.einsum.default and len(node.args) > 1 else None
    operands = list(node.args[1]) if args is not None else list(node.args)
    for arg in operands:
        name = _root_constant(gm, arg)
        if name is None:
            continue
        t = get_constant(gm, name)
        if isinstance(t, torch.Tensor) and t.dim() >= 3:
            shape = "x".join(str(d) for d in t.shape)
            op = node.target.name() if isinstance(node.target, torch._ops.OpOverload) else str(node.target)
            return (f"{name} [{shape}] stays dense: a {t.dim()}-d weight (per-head or fused-expert weights, read "
                    f"by {op}) has no sparse kernel yet; store one 2-d weight per head / expert (nn.Linear) to "
                    f"make it sparse")
    return None


def weight_matrix(gm: GraphModule, m: MatmulMatch) -> torch.Tensor:
    """The constant as the 2-d matrix W [out, in] the kernel multiplies with (its kind's ``matrix``)."""
    return operand_kind(m.kind).matrix(get_constant(gm, m.weight), m.transposed)


def rows_of(kind: str, shape) -> int:
    """N, the columns of X^T the kernel sees, for an output of ``shape``: the product of its sizes
    without the kind's feature dimension (the last for linear, -2 for left and diag, 1 for conv2d)."""
    return operand_kind(kind).rows(shape)


def example_rows(m: MatmulMatch) -> int:
    """N at the example inputs (1 if unknown; data-dependent sizes count 1 until the rows pass runs)."""
    val = m.node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return 1
    return max(rows_of(m.kind, [optimization_hint(s, fallback=1) for s in val.shape]), 1)


def get_constant(gm: GraphModule, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` of the graph module."""
    obj = gm
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
