"""analyze: for every weight feeding a matmul-like op, measure density, N:M, block fill, empty rows/cols.

Facts go to ``node.meta["sparsec"]`` (a SparseLayer) on the matmul node; ``ir("analyze")`` (and every later stage) prints them.
The example row count N (rows of the flattened activation) is recorded for the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext
from sparsec.formats.facts import WeightFacts, compute_facts
from sparsec.passes.matmul_like import (
    MatmulMatch,
    batched_weight,
    example_rows,
    is_matmul,
    match,
    weight_matrix,
)


@dataclass
class SparseLayer:
    """What the passes know about one matmul-like node."""

    name: str  # layer name for the report (the weight's name without ".weight")
    m: MatmulMatch
    facts: WeightFacts
    n: int  # example rows
    dtype: torch.dtype
    format: str = "dense"
    reason: str = ""
    costs: dict[str, float] = field(default_factory=dict)  # label -> predicted seconds
    rejected: dict[str, str] = field(default_factory=dict)  # label -> why not
    measured: dict[str, float] = field(default_factory=dict)  # label -> seconds, when autotuned
    verify: str = ""  # set by select: why this layer's choice needs a measurement before it is trusted
    activation: str | None = None  # set by fuse
    residual_index: int | None = None  # set by fuse: which operand of the last fused add is the residual
    fused_nodes: list = field(default_factory=list)  # nodes the kernel absorbs after the matmul
    quantize: str | None = None  # set by select: "int8" when this layer runs quantized (CompileOptions.quantize)
    quant_error: float | None = None  # set by lower: the int8 error measured on the example inputs
    module_name: str | None = None  # set by lower: the SparseLinear submodule that runs the group
    module: object = None

    @property
    def residual(self):
        """The residual operand node (read from the graph, which earlier rewrites keep up to date)."""
        if self.residual_index is None:
            return None
        return self.fused_nodes[-1].args[self.residual_index]


def effective_weight(gm: GraphModule, m: MatmulMatch) -> torch.Tensor:
    """The weight as [out, in], whatever layout (or operand kind: left, conv2d, diag) the graph has."""
    return weight_matrix(gm, m)


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Annotate every matmul-like node that reads a constant 2-d weight."""
    lines = []
    for node in gm.graph.nodes:
        m = match(gm, node)
        if m is None:
            why = batched_weight(gm, node)
            if why is not None and why not in ctx.notes:
                ctx.notes.append(why)
            continue
        w = effective_weight(gm, m)
        if w.dim() != 2:
            continue
        facts = compute_facts(w)
        name = m.weight[: -len(".weight")] if m.weight.endswith(".weight") else m.weight
        layer = SparseLayer(name, m, facts, example_rows(m), w.dtype)
        node.meta["sparsec"] = layer
        lines.append(f"{node.name}: {name} {facts.summary()}")
    ctx.summaries["analyze"] = "\n".join(lines)
    return gm


def why_no_layers(gm: GraphModule) -> str:
    """The report's note when it has no layer: no matmul-like op reads a constant weight: a region the passes
    cannot see into, weights that are not constants, or no matmul at all."""
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    hidden = sorted({n.target.name() for n in nodes
                     if isinstance(n.target, torch._ops.HigherOrderOperator)})
    if hidden:
        return (f"no layer can be made sparse: the graph runs its work inside higher-order ops ({', '.join(hidden)}: "
                "torch.cond / map / while_loop regions), which the passes do not look into; the layers inside "
                "run in torch. Move the layers out of the region (compute both branches and select with "
                "torch.where) to make them sparse")
    matmuls = sorted({str(n.target).replace("aten.", "") for n in nodes if is_matmul(n.target)})
    if matmuls:
        return (f"no layer can be made sparse: no matmul-like op ({', '.join(matmuls)}) reads a constant 2-d "
                "weight; weights passed as inputs, or computed in forward from inputs, are not constants "
                "(hold them as parameters or buffers of the model)")
    return ("no layer can be made sparse: the graph has no linear, matmul or conv2d (groups 1) with a "
            "constant weight; depthwise / grouped, 1-d and 3-d convolutions run in torch")
