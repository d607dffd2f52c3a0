"""select: ask every registered format, in priority order, whether it accepts each weight and at what cost.

The cheapest wins; dense whenever no sparse format is predicted faster. Each layer keeps the cost of
every candidate and the reason each one lost, so the report can say why the winner won.

A prediction is only as good as the calibration behind it, so two kinds of choice are marked for a
measurement of the real layer (``layer.verify``, acted on by the autotune pass): a sparse format for a
weight with density >= knob ``dense_guard`` (dense, 2:4: implausible wins that a poisoned calibration produced),
and any layer whose best sparse prediction lies within knob ``close_band`` of dense either way.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from sparsec import knobs
from sparsec.compiler.context import CompileContext
from sparsec.formats import registry
from sparsec.passes.matmul_like import get_constant
from sparsec.passes.operand_kinds import kind as operand_kind

_DENSE = "dense"


def _candidates(ctx: CompileContext):
    allowed = ctx.options.formats
    for fmt in registry.formats():
        if fmt.label == _DENSE or allowed is None or fmt.label in allowed or fmt.name in allowed:
            yield fmt


def run(gm: GraphModule, ctx: CompileContext) -> GraphModule:
    """Choose a format for every analyzed layer."""
    lines = []
    for node in gm.graph.nodes:
        layer = node.meta.get("sparsec")
        if layer is None:
            continue
        facts = layer.facts
        refused = _int8(layer, ctx) or ctx.target.rejects_layer(layer)  # dtypes and kinds it has no kernel for
        if refused is not None:
            layer.format, layer.reason = _DENSE, refused
        elif facts.numel < ctx.options.min_weight_numel:
            layer.format, layer.reason = _DENSE, f"small weight ({facts.numel} < {ctx.options.min_weight_numel} entries)"
        else:
            _choose(layer, ctx, ctx.target.layer_machine(layer, ctx), _requires_grad(gm, layer))
        _pin(layer, ctx)
        layer.verify = _needs_measurement(layer, ctx)
        lines.append(f"{node.name}: {layer.name} -> {layer.format} ({layer.reason})")
    ctx.summaries["select"] = "\n".join(lines)
    return gm


def _int8(layer, ctx: CompileContext) -> str | None:
    """With ``quantize="int8"``: why this layer stays in float (a reason), or None when it is quantized
    (then ``layer.quantize`` is set and select prices the int8 kernels). A non-float32 layer raises."""
    if ctx.options.quantize is None:
        return None
    if ctx.options.quantize not in ctx.target.quantize_modes:
        raise NotImplementedError(f"quantize={ctx.options.quantize!r} runs on the CPU only (target {ctx.target.name!r})")
    if layer.dtype != torch.float32:
        raise NotImplementedError(f"{layer.name}: quantize='int8' of {layer.dtype} layers is not implemented "
                                  "(float32 models only)")
    if layer.m.kind != "linear" or layer.m.params.get("bucket_rows"):
        return f"quantize='int8' runs Linear-shaped layers of static N only (this is {layer.m.kind}): kept float32"
    layer.quantize = ctx.options.quantize
    return None


def _pin(layer, ctx: CompileContext) -> None:
    """Keep the format a saved artifact recorded for this layer, when it still accepts the weight."""
    want = ctx.pinned_formats.get(layer.name)
    if want is None or want == layer.format:
        return
    if want in layer.costs:
        layer.format, layer.reason = want, f"{want}: the saved artifact's choice"


def _requires_grad(gm: GraphModule, layer) -> bool:
    """Whether the layer's weight is a tensor that requires grad (formats without a training path skip it)."""
    try:
        return bool(get_constant(gm, layer.m.weight).requires_grad)
    except (AttributeError, KeyError, TypeError):
        return False


def int8_time_ratio(dense: bool, machine) -> float:
    """An int8 layer's time over its f32 kernel family's: the calibrated rates' ratio where calibration
    measured them, else knobs (dense: int8_dense_speedup; CSR: int8_vnni_csr_slowdown on hosts with
    AVX512-VNNI, int8_csr_slowdown without)."""
    if dense:
        measured = machine.int8_dense_flops
        return machine.dense_flops / measured if measured > 0 else 1 / knobs.get("int8_dense_speedup")
    if machine.int8_sparse_flops > 0:
        return machine.sparse_flops / machine.int8_sparse_flops
    from sparsec.targets.cpu.int8_linear import vnni_host

    return knobs.get("int8_vnni_csr_slowdown" if vnni_host() else "int8_csr_slowdown")


def _choose(layer, ctx: CompileContext, machine, requires_grad: bool = False) -> None:
    facts, n = layer.facts, layer.n
    for fmt in _candidates(ctx):
        why_not = fmt.accepts_layer(layer.dtype, layer.m.kind, ctx.target.name) or fmt.accepts(facts)
        if why_not is None and requires_grad and not fmt.trains:
            why_not = (f"{fmt.label} has no training path and this weight requires grad (freeze it with "
                       "requires_grad_(False) to allow it)")
        if why_not is None and fmt.label != _DENSE:
            why_not = ctx.target.rejects(layer, fmt)  # e.g. no Triton kernel reads this level map
        if why_not is None and layer.quantize and fmt.label != _DENSE:
            why_not = ctx.target.rejects_quantized(layer.quantize, fmt)
        if why_not is not None:
            layer.rejected[fmt.label] = why_not
            continue
        layer.costs[fmt.label] = fmt.cost(facts, n, machine)
        if layer.quantize:  # f32 rates scaled by the int8 kernels' measured ratios
            layer.costs[fmt.label] *= int8_time_ratio(fmt.label == _DENSE, machine)
    # the operand kind's prices on this target where they are not a GEMM's (a dense conv2d, a row scaling)
    pricing = operand_kind(layer.m.kind).pricing(ctx.target.name)
    factor = pricing.sparse_factor()
    for label in layer.costs:
        if label != _DENSE:
            layer.costs[label] *= factor
    layer.costs[_DENSE] = pricing.dense(facts.shape[0], n, layer.costs[_DENSE], machine)
    dense_cost, dense = layer.costs[_DENSE], pricing.dense_name
    forced = ctx.options.force_format
    if forced is not None and forced in layer.costs:
        layer.format = forced
        layer.reason = f"forced by force_format={forced!r}"
        return
    if forced is not None:
        layer.format = _DENSE
        layer.reason = f"force_format={forced!r} rejected: {layer.rejected.get(forced, 'not registered')}"
        return
    best = min(layer.costs, key=layer.costs.get)
    if best != _DENSE and dense_cost / layer.costs[best] < ctx.options.min_speedup:
        layer.format = _DENSE
        layer.reason = (
            f"best sparse format {best} predicted only {dense_cost / layer.costs[best]:.2f}x faster than {dense} "
            f"at N={n} (< min_speedup {ctx.options.min_speedup})"
        )
        return
    layer.format = best
    if best == _DENSE:
        sparse = {k: v for k, v in layer.costs.items() if k != _DENSE}
        if sparse:
            alt = min(sparse, key=sparse.get)
            layer.reason = (
                f"no sparse format predicted faster: best {alt} {sparse[alt] * 1e6:.0f} us vs {dense} "
                f"{dense_cost * 1e6:.0f} us at N={n}"
            )
        else:
            layer.reason = "no sparse format accepts this weight"
    else:
        layer.reason = (
            f"{best} predicted {layer.costs[best] * 1e6:.0f} us vs {dense} {dense_cost * 1e6:.0f} us at N={n} "
            f"({dense_cost / layer.costs[best]:.1f}x)"
        )


def _needs_measurement(layer, ctx: CompileContext) -> str:
    """Why this layer's predicted choice must be confirmed by timing the real layer ("" when it need not)."""
    if ctx.options.force_format is not None or layer.name in ctx.pinned_formats or not layer.costs:
        return ""
    guard, band = knobs.get("dense_guard"), knobs.get("close_band")
    if layer.format != _DENSE and layer.facts.density >= guard:
        return f"{layer.format} predicted faster for a weight of density {layer.facts.density:.2f} >= {guard}"
    sparse = {k: v for k, v in layer.costs.items() if k != _DENSE}
    if not sparse or _DENSE not in layer.costs:
        return ""
    ratio = layer.costs[_DENSE] / min(sparse.values())
    if 1 / band <= ratio <= band:
        return f"best sparse prediction {ratio:.2f}x of dense, within the {band}x band"
    return ""
