"""The natural-layout call of a SparseLinear: kernels that read X as [N, in] and write Y as [N, out].

Per call, a layer re-points descriptors prepared once per N (``Plan``: X, output and residual pointers and
row strides) instead of building them; the general path (padded slabs or columns, column-strided inputs, a
residual that is not a row-strided view, a call while another thread holds the plan) builds its
arguments per call. ``layer`` is a sparsec.targets.cpu.sparse_linear.SparseLinear (not imported: it
imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsec import knobs
from sparsec.codegen.mlir.jit import ArgRef, make_descriptor, torch_descriptor
from sparsec.formats.cost import parallel_work
from sparsec.targets.cpu.threads import run_kernels, run_slabs


def run(layer, x2: torch.Tensor, r2: torch.Tensor | None, n: int) -> torch.Tensor:
    """``layer``'s natural-layout kernels on ``x2`` [N, in] (and residual ``r2`` [N, out]): each slab writes its
    columns of Y [N, out] in place. One call at a time takes the prepared plan; a concurrent call builds
    its own arguments."""
    if layer._plan_lock.acquire(blocking=False):
        try:
            y = _run_planned(layer, x2, r2, n)
            if y is not None:
                return y
        finally:
            layer._plan_lock.release()
    return _run_general(layer, x2, r2, n)


def _run_planned(layer, x2: torch.Tensor, r2: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The natural kernels through the prepared descriptors of ``n`` (only the pointers and row strides
    change per call: ~5 us of Python instead of ~30); None where the general path is needed (padded
    slabs or columns, a residual that is not a row-strided view, a column-strided X)."""
    plan = layer._plans.get(n)
    if plan is None:
        plan = layer._plans[n] = Plan.build(layer, n)
        if plan is None:
            return None
    if not plan.ok or x2.stride(-1) != 1 or (r2 is not None and r2.stride(-1) != 1):
        return None
    out = torch.empty(n, layer.out_features, dtype=layer.io_dtype)
    if knobs.get("poison_outputs"):
        out.fill_(float("nan"))
    plan.point(plan.x, x2.data_ptr(), x2.stride(0))
    optr, rptr = out.data_ptr(), r2.data_ptr() if r2 is not None else 0
    size = out.element_size()  # 4 bytes (f32) or 2 (a 16-bit layer's kernels)
    for o, res, r0 in zip(plan.outs, plan.residuals, plan.starts, strict=True):
        plan.point(o, optr + size * r0, layer.out_features)
        if res is not None:
            plan.point(res, rptr + size * r0, r2.stride(0))
    if len(plan.calls) == 1 or plan.serial:
        for call in plan.calls:
            call()
    else:
        run_kernels(plan.tasks)
    return out


def _run_general(layer, x2: torch.Tensor, r2: torch.Tensor | None, n: int) -> torch.Tensor:
    """The natural kernels with descriptors built for this call (any padding, strides, residual)."""
    cols = layer.slabs[0][0].padded_shape[1]
    kernels = layer.kernels(n)
    if cols != layer.in_features:
        x2 = torch.nn.functional.pad(x2, (0, cols - layer.in_features))
    elif x2.stride(-1) != 1:  # the kernel takes any row stride, but unit column stride
        x2 = x2.contiguous()
    x_arg = ArgRef(torch_descriptor(x2))
    total_rows = sum(p.padded_shape[0] for p, _, _ in layer.slabs)
    out = torch.empty(n, total_rows, dtype=layer.io_dtype)
    if knobs.get("poison_outputs"):
        out.fill_(float("nan"))
    tasks, offset = [], 0
    for s, ((packed, _, (r0, r1)), kern) in enumerate(zip(layer.slabs, kernels, strict=True)):
        rows = packed.padded_shape[0]
        args = [*layer._fixed_args[s], *layer._tile_args[s : s + 1], x_arg]
        if layer._bias_args[s] is not None:
            args.append(layer._bias_args[s])
        res = None
        if r2 is not None:
            if rows == r1 - r0 and r2.stride(-1) == 1:
                res = r2[:, r0:r1]  # a strided view: the kernel takes the row stride
            else:
                res = torch.zeros(n, rows, dtype=layer.io_dtype)
                res[:, : r1 - r0] = r2[:, r0:r1]
            args.append(ArgRef(torch_descriptor(res)))
        o = out[:, offset : offset + rows]
        args.append(ArgRef(torch_descriptor(o)))
        offset += rows
        tasks.append((kern, args, (res, o, x2)))
    run_slabs(tasks, layer.stored, n)
    if total_rows != layer.out_features:
        parts, offset = [], 0
        for packed, _, (r0, r1) in layer.slabs:
            parts.append(out[:, offset : offset + (r1 - r0)])
            offset += packed.padded_shape[0]
        out = torch.cat(parts, dim=1)
    return out


@dataclass
class Plan:
    """A natural-layout call of one layer for one N, prepared once: every slab's argument list with the
    X, output and residual descriptors that each call re-points (``point``) at its tensors."""

    ok: bool
    x: object  # the X descriptor (shared by every slab)
    outs: list  # per slab: its output columns' descriptor
    residuals: list  # per slab: its residual columns' descriptor, or None
    starts: list[int]  # per slab: its first output column
    calls: list  # per slab: a zero-argument call of its kernel on the prepared arguments
    tasks: list  # per slab: (kernel, argument refs, None) for ``run_kernels``
    serial: bool  # the work is below knob parallel_min_work: run the slabs on this thread

    @staticmethod
    def build(layer, n: int) -> Plan | None:
        """The plan of ``layer`` at ``n`` rows; None when a slab pads rows or columns (general path)."""
        if layer.slabs[0][0].padded_shape[1] != layer.in_features or any(
                p.padded_shape[0] != r1 - r0 for p, _, (r0, r1) in layer.slabs):
            return None
        kernels = layer.kernels(n)
        x = make_descriptor(0, (n, layer.in_features), (layer.in_features, 1))
        x_ref = ArgRef(x)
        outs, residuals, starts, calls, tasks = [], [], [], [], []
        for s, ((_, _, (r0, r1)), kern) in enumerate(zip(layer.slabs, kernels, strict=True)):
            args = [*layer._fixed_args[s], *layer._tile_args[s : s + 1], x_ref]
            if layer._bias_args[s] is not None:
                args.append(layer._bias_args[s])
            res = None
            if layer.has_residual:
                res = make_descriptor(0, (n, r1 - r0), (layer.out_features, 1))
                args.append(ArgRef(res))
            out = make_descriptor(0, (n, r1 - r0), (layer.out_features, 1))
            args.append(ArgRef(out))
            calls.append(kern.bound(args))
            tasks.append((kern, args, None))
            outs.append(out)
            residuals.append(res)
            starts.append(r0)
        serial = parallel_work(layer.stored, n) < knobs.get("parallel_min_work")
        return Plan(True, x, outs, residuals, starts, calls, tasks, serial)

    @staticmethod
    def point(desc, ptr: int, row_stride: int) -> None:
        """Re-point a rank-2 descriptor at ``ptr`` with ``row_stride`` elements between rows."""
        desc.allocated = desc.aligned = ptr
        desc.strides[0] = row_stride
