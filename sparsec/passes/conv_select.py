"""conv_select: price a convolution's dense alternative as torch's conv2d, not as a GEMM, and re-decide.

The selector prices every layer's dense option as torch's ``F.linear`` of the same FLOPs. A dense
convolution stays ``aten.conv2d``, which oneDNN runs as a direct convolution at about twice the GEMM's
FLOP rate: 1.4x-2.3x (median 2.1x) over six 3x3 layers on the project machine (docs/models.md). Without
this, 80-90%-sparse convolutions went to im2col + SpMM that measured 1.2x-2.5x slower than torch.

The sparse candidates are priced knob ``conv_sparse_slowdown`` times their GEMM prediction: on the CNN of
tests/models (90% convs) the CSR kernels reached about half the per-thread rate calibrated on Linear
shapes (im2col's patch gather is 10-25% of it; short rows of 9*C_in the rest), and with the GEMM
price they were chosen and ran 0.9-1.0x eager. Forced formats stay forced.
"""

from __future__ import annotations

from torch.fx import GraphModule

from sparsec import knobs
from sparsec.compiler.context import CompileContext

#: torch conv2d FLOP rate over torch GEMM FLOP rate, measured (see the module docstring)
#: im2col + sparse kernel time over the GEMM-shaped prediction, measured (see the module docstring)
_DENSE = "dense"


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Divide every conv2d layer's dense cost by knob ``dense_conv_speedup`` and pick the cheapest candidate again."""
    lines = []
    for node in gm.graph.nodes:
        layer = node.meta.get("sparsec")
        if layer is None or layer.m.kind != "conv2d" or _DENSE not in layer.costs:
            continue
        for label in layer.costs:
            if label == _DENSE:
                layer.costs[label] /= knobs.get("dense_conv_speedup")
            else:
                layer.costs[label] *= knobs.get("conv_sparse_slowdown")
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
    ctx.summaries["conv_select"] = "\n".join(lines)
    return gm
