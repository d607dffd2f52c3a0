"""shrink: remove output channels that are identically zero, and the inputs that read them, before analysis.

A channel-pruned model keeps its full shapes with zero rows; multiplying by those zeros costs as much as
any other row. This pass finds channel *groups* over the exported graph with networkx: every Linear /
conv2d output opens a channel space; ops that keep a zero channel zero (relu, gelu, pooling, flatten,
scalar scaling, ...) carry it; ``a + b`` / ``a * b`` of two spaces joins them into one group (a channel
can go only if it is zero in both). A group whose every member is understood shrinks: the channels that
are zero in all its producers (weight row zero and bias zero) are removed from the producers' rows and
from every consumer's input columns (Linear columns, conv input channels, ``c * H * W`` columns after a
flatten). The smaller weights are then analyzed like any other: a channel-pruned layer becomes a smaller
dense layer (torch's dense kernels) and its remaining unstructured zeros still choose a sparse format.

A group that reaches anything else (a model output, LayerNorm, a reshape it cannot follow, an add with a
tensor from outside the group) is left alone: guessing there would give a silently wrong model. The
user's parameters are never modified; the sliced weights are new constants of the graph module.
"""

from __future__ import annotations

import networkx as nx
import torch
from torch.fx import GraphModule, Node
from torch.fx.experimental.symbolic_shapes import optimization_hint

from sparsec.compiler.context import CompileContext
from sparsec.passes.matmul_like import get_constant
from sparsec.passes.operand_kinds import kind as operand_kind

aten = torch.ops.aten
#: element-wise ops with f(0) = 0 (a zero channel stays zero), and spatial ops that act per channel
_PASS = {
    aten.relu.default, aten.gelu.default, aten.silu.default, aten.tanh.default, aten.leaky_relu.default, aten.elu.default, aten.clone.default, aten.contiguous.default, aten.alias.default,
    aten.neg.default, aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default,
    aten.dropout.default,
}
_SPATIAL = {aten.max_pool2d.default, aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default}
_SCALAR_SCALE = {aten.mul.Tensor, aten.div.Tensor, aten.mul.Scalar, aten.div.Scalar}
_JOIN = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor}
_FLATTEN = {aten.flatten.using_ints, aten.view.default, aten.reshape.default}


def _val(node) -> torch.Tensor | None:
    v = node.meta.get("val") if isinstance(node, Node) else None
    return v if isinstance(v, torch.Tensor) else None


def _const_node(node) -> bool:
    return isinstance(node, Node) and node.op == "get_attr"


def _layer(node: Node):
    """(kind, weight get_attr, bias get_attr | None) of a Linear / conv2d (groups 1) with constant operands."""
    if node.op != "call_function":
        return None
    a = node.args
    if node.target == aten.linear.default:
        bias = a[2] if len(a) > 2 else node.kwargs.get("bias")
    elif node.target == aten.conv2d.default:
        bias = a[2] if len(a) > 2 else node.kwargs.get("bias")
        groups = a[6] if len(a) > 6 else node.kwargs.get("groups", 1)
        if groups != 1:
            return None
    else:
        return None
    if not _const_node(a[1]) or (bias is not None and not _const_node(bias)):
        return None
    return ("linear" if node.target == aten.linear.default else "conv2d"), a[1], bias


def _channel_dim(kind: str, rank: int) -> int:
    """The channel (feature) dimension of a ``kind`` layer's output of ``rank`` (its operand-kind entry)."""
    return operand_kind(kind).feature_dim(rank)


class _Groups:
    """Channel spaces of the graph: a networkx graph over tensors, plus producers, consumers, blockers."""

    def __init__(self) -> None:
        self.g = nx.Graph()
        self.dim: dict[Node, tuple[int, int]] = {}  # tensor -> (channel dim, repeat of each channel)
        self.producers: dict[Node, tuple] = {}
        self.consumers: list[tuple[Node, Node, int]] = []  # (layer node, its input tensor, repeat)
        self.reshapes: list[Node] = []
        self.fixed: dict[Node, str] = {}

    def add(self, node: Node, dim: int, repeat: int = 1, parent: Node | None = None) -> None:
        self.g.add_node(node)
        self.dim[node] = (dim, repeat)
        if parent is not None:
            self.g.add_edge(parent, node)


def _follow(groups: _Groups, t: Node) -> None:
    """Classify every user of tensor ``t`` (already in a space): carry, join, consume, or block."""
    dim, repeat = groups.dim[t]
    for u in t.users:
        if u.op != "call_function":
            groups.fixed[t] = f"read by {u.op} {u.name}"
            continue
        layer = _layer(u)
        vt = _val(t)
        if layer is not None and u.args[0] is t and vt is not None:
            if dim == _channel_dim(layer[0], vt.dim()):
                groups.consumers.append((u, t, repeat))
                continue
        if (u.target in _PASS or _hardtanh_keeps_zero(u)) and u.args[0] is t and (u.target not in _SPATIAL or dim == 1) and repeat == 1:
            if u not in groups.dim:
                groups.add(u, dim, repeat, t)
                _follow(groups, u)
            continue
        if u.target in _SCALAR_SCALE and u.args[0] is t and isinstance(u.args[1], (int, float)):
            if u not in groups.dim:
                groups.add(u, dim, repeat, t)
                _follow(groups, u)
            continue
        if u.target in _JOIN and len(u.args) == 2 and all(isinstance(a, Node) for a in u.args):
            va, vb, vu = _val(u.args[0]), _val(u.args[1]), _val(u)
            same = va is not None and vb is not None and vu is not None and \
                [str(s) for s in va.shape] == [str(s) for s in vb.shape] == [str(s) for s in vu.shape]
            if same and u.args[0] is not u.args[1]:
                other = u.args[1] if u.args[0] is t else u.args[0]
                groups.g.add_edge(t, other)  # joined: the other operand must be in the same space
                if u not in groups.dim:
                    groups.add(u, dim, repeat, t)
                    _follow(groups, u)
                continue
        if u.target in _FLATTEN and dim == 1 and repeat == 1 and _flattens_channels(u):
            # The spatial size may be symbolic; the Linear consumers fix it (run() checks their widths).
            spatial = int(optimization_hint(_val(u).shape[1], fallback=0)) // int(_val(t).shape[1])
            if u not in groups.dim:
                groups.add(u, 1, spatial, t)
                groups.reshapes.append(u)
                _follow(groups, u)
            continue
        groups.fixed[t] = f"read by {str(u.target).replace('aten.', '')} ({u.name})"


def _hardtanh_keeps_zero(u: Node) -> bool:
    """relu6 and other clamps whose range holds 0."""
    if u.target != aten.hardtanh.default:
        return False
    lo = u.args[1] if len(u.args) > 1 else u.kwargs.get("min_val", -1.0)
    hi = u.args[2] if len(u.args) > 2 else u.kwargs.get("max_val", 1.0)
    return isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo <= 0 <= hi


def _flattens_channels(u: Node) -> bool:
    """``[B, C, *spatial] -> [B, C * prod(spatial)]`` with static spatial sizes."""
    vi, vo = _val(u.args[0]), _val(u)
    if vi is None or vo is None or vi.dim() < 3 or vo.dim() != 2:
        return False
    if not isinstance(vi.shape[1], int) or str(vi.shape[0]) != str(vo.shape[0]):
        return False
    if u.target == aten.flatten.using_ints:
        start = u.args[1] if len(u.args) > 1 else u.kwargs.get("start_dim", 0)
        end = u.args[2] if len(u.args) > 2 else u.kwargs.get("end_dim", -1)
        return start == 1 and end in (-1, vi.dim() - 1)
    shape = u.args[1]
    return isinstance(shape, (list, tuple)) and len(shape) == 2 and isinstance(shape[1], int)


def _zero_channels(gm: GraphModule, w_node: Node, b_node: Node | None) -> torch.Tensor:
    w = get_constant(gm, str(w_node.target))
    zero = ~(w.reshape(w.shape[0], -1) != 0).any(dim=1)
    if b_node is not None:
        zero &= get_constant(gm, str(b_node.target)) == 0
    return zero


def _maybe_zero_channel(gm: GraphModule, w_node: Node, b_node: Node | None) -> bool:
    if b_node is not None and not bool((get_constant(gm, str(b_node.target)) == 0).any()):
        return False
    return bool(_zero_channels(gm, w_node, b_node).any())


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Shrink every fully understood channel group with channels that are zero in all its producers."""
    # Most models have no all-zero output channel: then there is nothing to shrink, and building the
    # channel groups (1.2 s of BERT-base's compile) is skipped. A bias row check is cheap: zero biases
    # are rare, so test them first.
    candidates = [layer for layer in map(_layer, gm.graph.nodes) if layer is not None]
    if not any(_maybe_zero_channel(gm, *layer[1:]) for layer in candidates):
        ctx.summaries["shrink"] = "no all-zero output channel"
        return gm
    groups = _Groups()
    for node in gm.graph.nodes:
        layer = _layer(node)
        v = _val(node)
        if layer is None or v is None:
            continue
        groups.producers[node] = layer
        if node not in groups.dim:
            groups.add(node, _channel_dim(layer[0], v.dim()))
    for node in list(groups.producers):
        _follow(groups, node)
    lines, edits = [], {}  # edits: weight get_attr -> {axis: kept indices}
    for comp in nx.connected_components(groups.g):
        prods = [n for n in comp if n in groups.producers]
        why = [groups.fixed[n] for n in comp if n in groups.fixed]
        why += [f"{n.name} has no channel space" for n in comp if n not in groups.dim]
        if not prods:
            continue
        names = [str(groups.producers[p][1].target) for p in prods]
        if why:
            if any(_zero_channels(gm, *groups.producers[p][1:]).any() for p in prods):
                lines.append(f"group {names}: not shrunk ({why[0]})")
            continue
        zero = None
        for p in prods:
            z = _zero_channels(gm, *groups.producers[p][1:])
            zero = z if zero is None else (zero & z if zero.shape == z.shape else torch.zeros_like(z))
        keep = torch.nonzero(~zero).flatten()
        if len(keep) == len(zero):
            continue
        if len(keep) == 0:
            keep = torch.tensor([0])  # keep one channel: zero-size tensors would break other ops
        cons = [(c, rep) for c, t, rep in groups.consumers if t in comp]
        widths = [get_constant(gm, str(c.args[1].target)).shape[1] for c, _ in cons]
        if any(w != len(zero) * rep for w, (_, rep) in zip(widths, cons, strict=True)):
            lines.append(f"group {names}: not shrunk (a consumer's input width is not channels x spatial)")
            continue
        for p in prods:
            _, w_node, b_node = groups.producers[p]
            edits.setdefault(w_node, {})[0] = keep
            if b_node is not None:
                edits.setdefault(b_node, {})[0] = keep
        for c, rep in cons:
            cols = (keep[:, None] * rep + torch.arange(rep)[None, :]).flatten()
            edits.setdefault(c.args[1], {})[1] = cols
        for n in comp:
            dim, rep = groups.dim[n]
            v = _val(n)
            n.meta["val"] = v.narrow(dim, 0, len(keep) * rep)
        for r in groups.reshapes:
            if r in comp and r.target != aten.flatten.using_ints:
                r.args = (r.args[0], [r.args[1][0], -1])
        lines.append(f"group {names}: {len(zero)} -> {len(keep)} channels "
                     f"(consumers {[str(c.args[1].target) for c, _ in cons]})")
    shared = [w for w in edits if len(w.users) != 1]
    if shared:  # a weight read by two layers: slicing it for one would change the other
        lines.append(f"not shrunk: weights read by several layers {[str(w.target) for w in shared]}")
        ctx.summaries["shrink"] = "\n".join(lines)
        return gm
    for w_node, axes in edits.items():
        t = get_constant(gm, str(w_node.target)).detach()
        for axis, idx in sorted(axes.items()):
            t = t.index_select(axis, idx)
        _rebind(gm, w_node, t.contiguous())
    if edits:
        gm.graph.lint()
        gm.recompile()
        ctx.shrunk = True
    ctx.summaries["shrink"] = "\n".join(lines)
    return gm


def _rebind(gm: GraphModule, w_node: Node, value: torch.Tensor) -> None:
    """Point ``w_node`` at ``value``, stored under the same name in the graph module (not the user's tensor)."""
    owner_path, _, attr = str(w_node.target).rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    delattr(owner, attr)
    owner.register_buffer(attr, value)
