"""gather: SDDMM ``S * (X @ B)`` and masked reductions ``(S * X).sum(dims)`` over a constant sparse S.

Neither product has S as a matmul operand, so they get the target's gather kernels
(``ctx.target.gather_module``: sparsec.targets.cpu.sparse_gather on the CPU) instead of the SpMM kernel. Each site becomes one call_module with a
SparseLayer in ``node.meta["sparsec"]`` (format "coo", the facts of S), so the report lists it beside the
matmul layers. The decision is a density threshold measured on the project machine (docs/models.md):
the gathers move ~3 values per nonzero where dense code streams whole rows at full vector speed.

Runs after lower: the matmul passes never see these nodes.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node
from torch.fx.experimental.symbolic_shapes import optimization_hint

from sparsec import knobs
from sparsec.compiler.context import CompileContext
from sparsec.formats.facts import compute_facts
from sparsec.passes.analyze import SparseLayer
from sparsec.passes.lower import module_name
from sparsec.passes.matmul_like import MatmulMatch, get_constant

aten = torch.ops.aten
#: S denser than this stays dense torch (measured break-even: docs/models.md)
_MATMULS = {aten.mm.default, aten.matmul.default, aten.bmm.default}


def _val(node):
    v = node.meta.get("val") if isinstance(node, Node) else None
    return v if isinstance(v, torch.Tensor) else None


def _shape(node) -> list[str]:
    v = _val(node)
    return [str(s) for s in v.shape] if v is not None else []


def _sparse_const(gm: GraphModule, mul: Node) -> tuple[Node, Node] | None:
    """(S get_attr, other operand) of ``S * other`` / ``other * S`` with S a 2-d float constant."""
    if mul.op != "call_function" or mul.target != aten.mul.Tensor or len(mul.args) != 2:
        return None
    for idx in (0, 1):
        s, other = mul.args[idx], mul.args[1 - idx]
        if isinstance(s, Node) and s.op == "get_attr" and isinstance(other, Node) and other.op != "get_attr":
            t = get_constant(gm, str(s.target))
            if t.dim() == 2 and t.is_floating_point() and _shape(mul) == _shape(other):
                return s, other
    return None


def _site(gm: GraphModule, node: Node):
    """('sddmm', S, mul, (x, b)) or ('sum', S, reduction, (x,), dims, keepdim), else None."""
    pair = _sparse_const(gm, node)
    if pair is not None:
        s, p = pair
        if p.op == "call_function" and p.target in _MATMULS and len(p.users) == 1:
            x, b = p.args[0], p.args[1]
            if isinstance(x, Node) and isinstance(b, Node) and _val(x) is not None and _val(x).dim() >= 2 \
                    and _val(b) is not None and _val(b).dim() >= 2:
                return ("sddmm", s, node, (x, b), p)
        return None
    if node.op == "call_function" and node.target in (aten.sum.dim_IntList, aten.sum.default):
        src = node.args[0]
        pair = _sparse_const(gm, src) if isinstance(src, Node) else None
        if pair is None or len(src.users) != 1 or node.kwargs.get("dtype") is not None:
            return None
        s, x = pair
        rank = _val(x).dim()
        if node.target == aten.sum.default:
            dims, keepdim = list(range(rank)), False
        else:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
            if dims is None or len(dims) == 0:
                dims = list(range(rank))
        norm = sorted({int(d) % rank - rank for d in dims})
        if not norm or any(d not in (-2, -1) for d in norm):
            return None
        return ("sum", s, node, (x,), src, tuple(norm), bool(keepdim))
    return None


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Replace every SDDMM / masked-sum site over a sparse enough constant by its gather kernel."""
    if not ctx.target.gather_kinds:  # e.g. the GPU targets: no gather kernels
        return gm
    graph, lines, changed = gm.graph, [], False
    for node in list(graph.nodes):
        site = _site(gm, node)
        if site is None:
            continue
        kind, s_node, tail, inputs, inner = site[:5]
        if kind not in ctx.target.gather_kinds:
            continue
        name = str(s_node.target)
        s = get_constant(gm, name).detach()
        facts = compute_facts(s)
        limit = knobs.get("sddmm_max_density" if kind == "sddmm" else "masked_sum_max_density")
        if facts.density > limit:
            lines.append(f"{tail.name}: {kind} over {name} stays dense (density {facts.density:.3f} > {limit})")
            continue
        if kind == "sddmm":
            module = ctx.target.gather_module(kind, name, s)
            # K: multiply-adds per stored entry (a hint: int() on a symbolic size would specialize it)
            n = int(optimization_hint(_val(inputs[0]).shape[-1], fallback=1))
        else:
            module = ctx.target.gather_module(kind, name, s, site[5], site[6])
            n = 1  # rows of the batch: multiply-adds per stored entry
            for d in _val(inputs[0]).shape[:-2]:
                n *= int(optimization_hint(d, fallback=1))
        mod_name = module_name(gm, f"{kind}_{name}")
        gm.add_submodule(mod_name, module)
        with graph.inserting_before(tail):
            call = graph.call_module(mod_name, inputs)
        call.meta = dict(tail.meta)
        m = MatmulMatch(call, 0, name, False, None, (s_node,), kind=kind)
        layer = SparseLayer(name, m, facts, n, s.dtype, format="coo", module_name=mod_name, module=module)
        layer.reason = (f"{kind} gather kernel over {module.stored} nonzeros (density {facts.density:.3f} "
                        f"<= {limit})")
        call.meta["sparsec"] = layer
        tail.replace_all_uses_with(call)
        graph.erase_node(tail)
        graph.erase_node(inner)
        if not s_node.users:
            graph.erase_node(s_node)
        changed = True
        lines.append(f"{call.name}: {kind} over {name} -> {mod_name} ({module.stored} nonzeros)")
    if changed:
        graph.lint()
        gm.recompile()
    ctx.summaries["gather"] = "\n".join(lines)
    return gm

