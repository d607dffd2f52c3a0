"""Backward of a CSR SparseLinear through MLIR kernels (codegen/mlir/emit_sddmm.py).

Everything stays in the forward's transposed layout ([features, N] buffers): the incoming gradient of a
sparse layer's output usually arrives as a transposed view of such a buffer (the next layer's dx), so
its ``.t().contiguous()`` costs nothing, and dx leaves as a transposed view again.

Per slab (one per thread, as in forward), one SDDMM kernel call computes the packed weight gradient,
folds the activation's derivative (relu, tanh: read off the saved output) and writes ``dz^T`` and the
bias gradient; dx is then the forward kernel run on a CSR copy of ``W^T`` (measured faster than a
scatter kernel over W's rows on the MLP and BERT shapes, benchmarks/backward_kernels.py).
"""

from __future__ import annotations

import torch

from sparsec import knobs
from sparsec.codegen.mlir.emit_refresh import RefreshSpec
from sparsec.codegen.mlir.emit_sddmm import SddmmSpec
from sparsec.codegen.mlir.jit import ArgRef, compile_kernel, torch_descriptor
from sparsec.targets.cpu.threads import run_kernels, run_slabs

#: activations whose derivative the kernel reads off the layer's output
FOLDED = ("relu", "tanh")


def supports(module) -> bool:
    """The SDDMM kernels take CSR slabs whose rows are not padded (every CSR slab)."""
    return module._csr_kernel() and all(p.padded_shape[0] == r1 - r0 for p, _, (r0, r1) in module.slabs)


def _kernels(module, n: int, deriv: str | None, bias: bool, dense: bool) -> list:
    key = ("sddmm", n, deriv, bias, dense)
    ks = module._kernels.get(key)
    if ks is None:
        ks = [compile_kernel(SddmmSpec(p.padded_shape[0], p.padded_shape[1], n, deriv, bias, module.index_bits,
                                       dense_out=dense))
              for p, _, _ in module.slabs]
        module._kernels[key] = ks
    return ks


def sddmm(module, gt: torch.Tensor, xt: torch.Tensor, at: torch.Tensor | None, deriv: str | None,
          want_bias: bool, dense: bool) -> tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """dW, ``dz^T`` [out, N] and the bias gradient for ``g^T`` [out, N] and ``x^T`` [in, N].

    dW is the dense-shaped [out, in] gradient when ``dense`` (needs unpadded columns, see
    ``dense_ok``), else each slab's packed values. ``at`` is the activation's output in the same layout
    when ``deriv`` names the activation whose derivative to fold in; without one, ``dz^T`` is ``gt``."""
    n = gt.shape[1]
    cols = module.slabs[0][0].padded_shape[1]
    if xt.shape[0] != cols:
        xt = torch.nn.functional.pad(xt, (0, 0, 0, cols - xt.shape[0]))
    poison = knobs.get("poison_outputs")
    new = (lambda *s: torch.full(s, float("nan"))) if poison else (lambda *s: torch.empty(s))
    dzt = new(*gt.shape) if deriv else gt
    db = new(gt.shape[0]) if want_bias else None
    x_arg = ArgRef(torch_descriptor(xt))
    tasks, values = [], []
    # a dense gradient is written whole by the kernels (each zeroes its rows first): no fill here
    dw = torch.full((module.out_features, cols), float("nan")) if dense and poison else (
        torch.empty(module.out_features, cols) if dense else None)
    kernels = _kernels(module, n, deriv, want_bias, dense)
    for s, ((packed, _, (r0, r1)), kern) in enumerate(zip(module.slabs, kernels, strict=True)):
        dv = dw[r0:r1] if dense else new(packed.stored)
        values.append(dv)
        fixed = module._fixed_args[s]
        args = [fixed[0], fixed[1], x_arg, ArgRef(torch_descriptor(gt[r0:r1]))]
        if deriv:
            args.append(ArgRef(torch_descriptor(at[r0:r1])))
        args.append(ArgRef(torch_descriptor(dv)))
        if deriv:
            args.append(ArgRef(torch_descriptor(dzt[r0:r1])))
        if want_bias:
            args.append(ArgRef(torch_descriptor(db[r0:r1])))
        # the slices' descriptors hold raw pointers: keep the tensors alive until the kernel ran
        tasks.append((kern, args, (xt, gt, at, dzt, db, dv)))
    run_slabs(tasks, module.stored, n)
    return (dw if dense else values), dzt, db


def dense_ok(module) -> bool:
    """The kernels can write the dense gradient in place when the format did not pad columns."""
    return module.slabs[0][0].padded_shape[1] == module.in_features


def refresh(module, w: torch.Tensor) -> int:
    """Gather W's (``w``: float32, contiguous [out, in]) stored values into the packed values of every slab
    (one refresh kernel per slab, in parallel) and return the number of W's nonzeros outside them."""
    ks = module._kernels.get("refresh")
    if ks is None:
        ks = [compile_kernel(RefreshSpec(r1 - r0, module.in_features, module.index_bits))
              for _, _, (r0, r1) in module.slabs]
        module._kernels["refresh"] = ks
    counts = torch.empty(len(module.slabs), 1, dtype=torch.int64)
    tasks = []
    for s, ((_, _, (r0, r1)), kern) in enumerate(zip(module.slabs, ks, strict=True)):
        fixed = module._fixed_args[s]
        ws, c = w[r0:r1], counts[s]
        args = [fixed[0], fixed[1], ArgRef(torch_descriptor(ws)), fixed[2], ArgRef(torch_descriptor(c))]
        tasks.append((kern, args, (ws, c)))
    if len(tasks) > 1 and w.numel() < knobs.get("parallel_min_work"):  # the kernel reads all of W
        for kern, args, _ in tasks:
            kern.call_refs(args)
    else:
        run_kernels(tasks)
    return int(counts.sum())
