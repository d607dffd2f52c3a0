"""fold_bn: fold an eval-mode BatchNorm into the convolution or Linear before it, before analysis.

``bn(conv(x, W, b))`` with running statistics is ``conv(x, W * s, (b - mean) * s + beta)`` per output
channel, ``s = gamma / sqrt(var + eps)``. Folding first means analyze measures the weight the kernel will
really multiply with (same zeros: scaling a row keeps its pattern), the BatchNorm disappears from the
graph, and a channel the pruner zeroed (weight row, bias, gamma and beta) stays exactly zero for shrink.

The folded tensors are new constants of the graph module; the user's parameters are never modified (the
compiled model recompiles when they change, like any weight).
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from sparsec.compiler.context import CompileContext
from sparsec.passes.matmul_like import get_constant

aten = torch.ops.aten
_PRODUCERS = (aten.conv2d.default, aten.convolution.default, aten.linear.default, aten.conv1d.default)


def _const(gm: GraphModule, node) -> torch.Tensor | None:
    if node is None:
        return None
    if isinstance(node, Node) and node.op == "get_attr":
        return get_constant(gm, str(node.target))
    raise ValueError("not a constant")


def _bn_args(node: Node):
    """(input, weight, bias, mean, var, eps) of an eval-mode batch norm node, else None."""
    if node.op != "call_function":
        return None
    a = list(node.args)
    if node.target == aten.batch_norm.default:  # (x, w, b, mean, var, training, momentum, eps, cudnn)
        if len(a) < 8 or a[5] is not False:
            return None
        return a[0], a[1], a[2], a[3], a[4], float(a[7])
    if node.target == aten._native_batch_norm_legit_no_training.default:  # (x, w, b, mean, var, mom, eps)
        return a[0], a[1], a[2], a[3], a[4], float(a[6])
    return None


def _place(gm: GraphModule, name: str, value: torch.Tensor, reuse: bool, before: Node) -> Node:
    """A get_attr node of ``value`` stored as ``name`` (rebinding the graph module's own attribute when
    ``reuse``: nothing else reads it) or a fresh name beside it; the user's tensor is never written."""
    owner_path, _, attr = name.rpartition(".")
    owner = gm.get_submodule(owner_path) if owner_path else gm
    if hasattr(owner, attr) and reuse:
        delattr(owner, attr)
    elif hasattr(owner, attr):
        base, k = f"{attr}_bnfolded", 1
        attr = base
        while hasattr(owner, attr):
            k += 1
            attr = f"{base}{k}"
    owner.register_buffer(attr, value.detach().contiguous())
    with gm.graph.inserting_before(before):
        return gm.graph.get_attr(f"{owner_path}.{attr}" if owner_path else attr)


def _fold(gm: GraphModule, bn: Node) -> str | None:
    parts = _bn_args(bn)
    if parts is None:
        return None
    x, w_node, b_node, mean_node, var_node, eps = parts
    prod = x
    if not (isinstance(prod, Node) and prod.op == "call_function" and prod.target in _PRODUCERS):
        return None
    if len(prod.users) != 1:  # the un-normalized output is read elsewhere too
        return None
    if prod.target == aten.convolution.default and prod.args[6]:  # transposed conv: channels are dim 1 of W
        return None
    if prod.target == aten.linear.default and prod.meta.get("val") is not None and prod.meta["val"].dim() != 2:
        return None  # BatchNorm1d on [B, C, L] normalizes dim 1, not the Linear's features
    try:
        gamma, beta = _const(gm, w_node), _const(gm, b_node)
        mean, var = _const(gm, mean_node), _const(gm, var_node)
        weight = _const(gm, prod.args[1])
        bias = _const(gm, prod.args[2] if len(prod.args) > 2 else prod.kwargs.get("bias"))
    except ValueError:
        return None
    if weight is None or mean is None or var is None:
        return None
    with torch.no_grad():
        scale = torch.rsqrt(var.double() + eps)
        if gamma is not None:
            scale = scale * gamma.double()
        shift = -mean.double() * scale
        if bias is not None:
            shift = shift + bias.double() * scale
        if beta is not None:
            shift = shift + beta.double()
        new_w = (weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype)
        new_b = shift.to(weight.dtype)
    w_node = prod.args[1]
    wname = str(w_node.target)
    b_node = prod.args[2] if len(prod.args) > 2 else prod.kwargs.get("bias")
    bname = str(b_node.target) if b_node is not None else wname.rpartition(".")[0] + ".bias"
    w_attr = _place(gm, wname, new_w, len(w_node.users) == 1, prod)
    b_attr = _place(gm, bname.lstrip("."), new_b, b_node is not None and len(b_node.users) == 1, prod)
    args = list(prod.args)
    while len(args) < 3:
        args.append(None)
    args[1], args[2] = w_attr, b_attr
    prod.args = tuple(args)
    prod.kwargs = {k: v for k, v in prod.kwargs.items() if k != "bias"}
    getitems = [u for u in bn.users if u.op == "call_function" and u.target.__name__ == "getitem"]
    if bn.target == aten.batch_norm.default:
        bn.replace_all_uses_with(prod)
    else:  # the no-training variant returns (out, mean, rstd); only out may be read
        if len(getitems) != len(bn.users) or any(u.args[1] != 0 for u in getitems):
            return None
        for u in getitems:
            u.replace_all_uses_with(prod)
            gm.graph.erase_node(u)
    gm.graph.erase_node(bn)
    return f"{bn.name} folded into {prod.name} ({wname})"


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Fold every eval-mode BatchNorm whose input is a conv / Linear with constant weights.

    A train-mode capture folds nothing: its BatchNorms normalize with the batch's statistics and update
    the running ones (``_bn_args`` refuses ``training=True`` too; this also keeps an eval-mode BatchNorm
    the user froze inside a train-mode model unfolded, so its weights keep their gradients)."""
    if ctx.training:
        ctx.summaries["fold_bn"] = "train-mode capture: BatchNorm left to torch (batch statistics, gradients)"
        return gm
    lines = [line for bn in list(gm.graph.nodes) if (line := _fold(gm, bn))]
    if lines:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    ctx.summaries["fold_bn"] = "\n".join(lines)
    return gm
