"""fold_constants: compute the weights a model derives from its own tensors, so analyze sees their zeros.

Masks and parametrizations reach the exported graph as ops over constants, in front of the matmul:

- ``torch.nn.utils.prune`` left unfinalized: ``linear(x, mul(weight_orig, weight_mask.to(f32)))``;
- ``sparsec.prune`` masks and any ``torch.nn.utils.parametrize`` parametrization (weight_norm, orthogonal,
  spectral_norm in eval): ``linear(x, f(original, ...))``;
- ``torch.autocast`` inside forward (inlined by capture): ``linear(x16, _to_copy(W, bf16), _to_copy(b, bf16))``.

Every such value is a pure function of constants, so it is evaluated once here and becomes a new constant of
the graph module, named after the weight it stands for (``0.weight_orig * 0.weight_mask`` -> ``0.weight``,
``0.parametrizations.weight.original`` -> ``0.weight``). Only values that feed a matmul-like op are folded
(that is what makes sparsity visible; folding a norm's ``1 + w`` would only cost trainability), plain
layout chains of one tensor (``t(W)``) are left to the matchers, and a fold may not create more constant
data than its inputs hold (a low-rank ``B @ A`` stays a torch op). The user's tensors are never written;
they stay watched, so a change to ``weight_orig``, a mask or a parametrization's original recompiles and
re-folds on the next call.
"""

from __future__ import annotations

import operator
import re

import torch
from torch.fx import GraphModule, Node

from sparsec.compiler.context import CompileContext
from sparsec.passes.matmul_like import get_constant

aten = torch.ops.aten

#: ops that multiply by an operand: a folded value is useful when it reaches one of these
_CONSUMERS = {aten.linear.default, aten.mm.default, aten.matmul.default, aten.mv.default, aten.addmm.default,
              aten.bmm.default, aten.baddbmm.default, aten.einsum.default, aten.conv1d.default,
              aten.conv2d.default, aten.convolution.default}
#: layout-only ops: a chain of these over one tensor is what the matchers read (transposed weights)
_LAYOUT = {aten.t.default, aten.transpose.int, aten.permute.default, aten.view.default, aten.reshape.default,
           aten.unsqueeze.default, aten.squeeze.dim, aten.expand.default, aten.contiguous.default,
           aten.clone.default, aten.alias.default, aten.detach.default, aten.select.int, aten.slice.Tensor,
           aten.numpy_T.default, operator.getitem}
#: data-free shape assertions export emits on constants; they hold for a real constant and are dropped
_ASSERTS = {aten._assert_tensor_metadata.default}
#: a folded value may exceed its inputs by this many entries (small broadcasts)
_SLACK = 1 << 16


def _is_pure(target) -> bool:
    if target is operator.getitem:
        return True
    if not isinstance(target, torch._ops.OpOverload):
        return False
    if target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags:
        return False
    return target not in _ASSERTS


def _node_args(node: Node) -> list[Node]:
    out = []
    for a in (*node.args, *node.kwargs.values()):
        if isinstance(a, Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Node))
    return out


def _constant_nodes(gm: GraphModule) -> dict[Node, set[str]]:
    """Every node computed from the model's tensors alone -> the names of the tensors it reads."""
    const: dict[Node, set[str]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            if isinstance(get_constant(gm, str(node.target)), torch.Tensor):
                const[node] = {str(node.target)}
        elif node.op == "call_function" and _is_pure(node.target):
            ins = _node_args(node)
            if ins and all(i in const for i in ins):
                const[node] = set().union(*(const[i] for i in ins))
    return const


def _feeds_consumer(node: Node, depth: int = 4) -> bool:
    """True when ``node`` reaches a matmul-like op directly or through layout ops."""
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for u in n.users:
                if u.op == "call_function" and u.target in _CONSUMERS:
                    return True
                if u.op == "call_function" and u.target in _LAYOUT:
                    nxt.append(u)
        frontier = nxt
    return False


def _layout_only(node: Node, const: dict[Node, set[str]]) -> bool:
    """A chain of layout ops over a single tensor (the matchers follow these themselves)."""
    while node.op == "call_function":
        if node.target not in _LAYOUT:
            return False
        ins = _node_args(node)
        if len(ins) != 1:
            return False
        node = ins[0]
    return node.op == "get_attr"


def _evaluate(gm: GraphModule, node: Node, const: dict, memo: dict):
    if node in memo:
        return memo[node]
    if node.op == "get_attr":
        value = get_constant(gm, str(node.target))
    else:
        def load(a):
            if isinstance(a, Node):
                return _evaluate(gm, a, const, memo)
            if isinstance(a, (list, tuple)):
                return type(a)(load(x) for x in a)
            return a

        value = node.target(*load(tuple(node.args)), **{k: load(v) for k, v in node.kwargs.items()})
    memo[node] = value
    return value


def weight_name(sources: list[str]) -> str:
    """The name of the weight a derived value stands for: the first source with the pruning / parametrize
    storage suffixes removed (``a.weight_orig`` -> ``a.weight``, ``a.parametrizations.weight.original0``
    -> ``a.weight``)."""
    name = sources[0]
    name = re.sub(r"(^|\.)parametrizations\.([^.]+)\.original\d*$", r"\1\2", name)
    return re.sub(r"_orig$", "", name)


def _owner(gm: GraphModule, name: str) -> tuple[torch.nn.Module, str, str]:
    path, _, attr = name.rpartition(".")
    try:
        return (gm.get_submodule(path) if path else gm), path, attr
    except AttributeError:
        return gm, "", name.replace(".", "_")


def _rename(gm: GraphModule, node: Node, desired: str) -> None:
    """Move the folded constant of get_attr ``node`` to ``desired`` when no node reads that name any more
    (the fp32 original of an autocast cast, the pruned ``weight`` attribute), else to ``*_folded``."""
    owner, path, attr = _owner(gm, desired)
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr" and n is not node}
    base, k = attr, 1
    while (f"{path}.{attr}" if path else attr) in read or attr in owner._modules:
        attr = f"{base}_folded" if k == 1 else f"{base}_folded{k}"
        k += 1
    value = get_constant(gm, str(node.target))
    delattr(gm, str(node.target))
    if hasattr(owner, attr):  # unread now: this graph module's own reference, never the user's module
        delattr(owner, attr)
    owner.register_buffer(attr, value)
    node.target = f"{path}.{attr}" if path else attr


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Fold every constant-derived value that feeds a matmul-like op into a new constant."""
    const = _constant_nodes(gm)
    targets = []
    for node, sources in const.items():
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if not _feeds_consumer(node) or _layout_only(node, const):
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        targets.append((node, sorted(sources, key=lambda s: (not s.endswith(("_orig", "original", "original0")), s))))
    if not targets:
        return gm
    memo: dict = {}
    lines, placed = [], []
    with torch.no_grad():
        for node, sources in targets:
            value = _evaluate(gm, node, const, memo)
            limit = sum(get_constant(gm, s).numel() for s in sources) + _SLACK
            if not isinstance(value, torch.Tensor) or value.numel() > limit:
                continue
            temp = f"_sparsec_folded_{len(placed)}"
            # a copy: a pure op may return its input itself (to() of the same dtype), and the graph must
            # not share storage with the user's tensor
            gm.register_buffer(temp, value.detach().clone(memory_format=torch.contiguous_format))
            with gm.graph.inserting_after(node):
                new = gm.graph.get_attr(temp)
            node.replace_all_uses_with(new)
            placed.append((new, node.name, sources, value))
    for node in list(gm.graph.nodes):  # shape asserts on constants that folding made dead
        if node.op == "call_function" and node.target in _ASSERTS and all(a in const for a in _node_args(node)):
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    for new, name, sources, value in placed:
        _rename(gm, new, weight_name(sources))
        lines.append(f"{name}: from {', '.join(sources)} -> {new.target} {list(value.shape)} {value.dtype}")
    gm.recompile()
    ctx.summaries["fold_constants"] = "\n".join(lines)
    return gm
