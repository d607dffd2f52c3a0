"""conv_select: price a convolution's dense alternative as torch's conv2d, not as a GEMM, and re-decide.

The selector prices every layer's dense option as torch's ``F.linear`` of the same FLOPs. A dense
convolution stays ``aten.conv2d``, which oneDNN runs as a direct convolution at about twice the GEMM's
FLOP rate: 1.4x-2.3x (median 2.1x) over six 3x3 layers on the project machine (docs/models.md). Without
this, 80-90%-sparse convolutions went to im2col + SpMM that measured 1.2x-2.5x slower than torch.

The sparse candidates keep their predicted times (im2col writes the kernel's X^T directly, which the
cost model's activation-transpose traffic already covers). Forced formats stay forced.
"""

from __future__ import annotations

from torch.fx import GraphModule

from sparsec.compiler.context import CompileContext

#: torch conv2d FLOP rate over torch GEMM FLOP rate, measured (see the module docstring)
DENSE_CONV_SPEEDUP = 2.0
_DENSE = "dense"


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Divide every conv2d layer's dense cost by DENSE_CONV_SPEEDUP and pick the cheapest candidate again."""
    lines = []
    for node in gm.graph.nodes:
        layer = node.meta.get("sparsec")
        if layer is None or layer.m.kind != "conv2d" or _DENSE not in layer.costs:
            continue
        layer.costs[_DENSE] /= DENSE_CONV_SPEEDUP
        if ctx.options.force_format is not None:
            continue
        dense = layer.costs[_DENSE]
        best = min(layer.costs, key=layer.costs.get)
        if best != _DENSE and dense / layer.costs[best] < getattr(ctx.options, "min_speedup", 1.0):
            best = _DENSE  # select's margin: a sparse kernel must be predicted clearly faster
        if best == _DENSE and layer.format != _DENSE:
            was = layer.format
            layer.reason = (f"{was} predicted {layer.costs[was] * 1e6:.0f} us vs dense conv2d "
                            f"{dense * 1e6:.0f} us at N={layer.n}")
        elif best != _DENSE:
            layer.reason = (f"{best} predicted {layer.costs[best] * 1e6:.0f} us vs dense conv2d {dense * 1e6:.0f} us "
                            f"at N={layer.n} ({dense / layer.costs[best]:.1f}x)")
        layer.format = best
        lines.append(f"{node.name}: {layer.name} -> {best} ({layer.reason})")
    ctx.stages["conv_select"] = "\n".join(lines)
    return gm
