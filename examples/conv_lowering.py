"""Which lowering for a sparse convolution? Measures the two candidates against torch's dense conv2d.

1. im2col + SpMM (what sparsec ships, sparsec.targets.cpu.sparse_conv): gather the input patches into the
   kernel's X^T layout, run the same sparse matmul kernel as a Linear (any format, fused epilogue).
2. A direct convolution with a sparse filter: one ``linalg.generic`` over (n, f, oh, ow, c, kh, kw) whose
   filter operand carries a CSF encoding ``(f : dense, c : compressed, kh : compressed, kw : compressed)``,
   sparsified and JIT-compiled by the same MLIR pipeline (this script builds it; the package does not).

    python examples/conv_lowering.py            # prints a table: ms per call, best of repeats

The machine is shared; timings are noisy (best of 25 runs, torch on the same threads).
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import torch
import torch.nn.functional as F

from sparsec.codegen.mlir.jit import numpy_descriptor, torch_descriptor
from sparsec.codegen.mlir.pipeline import pipeline_text
from sparsec.demo import timings
from sparsec.formats import registry
from sparsec.formats.base import aligned_copy
from sparsec.targets.cpu.sparse_conv import SparseConv2d


def best_ms(fn, repeats: int = 25) -> float:
    """Fastest of ``repeats`` calls of ``fn()`` in ms (after two warm-ups): on a machine shared with other
    jobs the minimum is the estimate least disturbed by them."""
    return timings(fn, repeats=repeats, warmup=2)[0] * 1e3


def csf(w: np.ndarray) -> list[np.ndarray]:
    """The CSF buffers of a [F, C, KH, KW] filter: (f dense, c, kh, kw compressed), 32-bit indices."""
    f_, c_, kh_, kw_ = w.shape
    bufs, parents = [], [(f,) for f in range(f_)]
    for size in (c_, kh_, kw_):
        pos, crd, children = [0], [], []
        for p in parents:
            for i in range(size):
                if np.any(w[(*p, i)] != 0):
                    crd.append(i)
                    children.append((*p, i))
            pos.append(len(crd))
        bufs += [np.array(pos, np.int32), np.array(crd, np.int32)]
        parents = children
    bufs.append(np.array([w[p] for p in parents], np.float32))
    return [aligned_copy(b) for b in bufs]


def direct_kernel(shape_w, shape_x, stride: int, vl: int):
    """JIT-compile the direct sparse-filter convolution; returns a callable(bufs, x_padded, out)."""
    from torch_mlir import execution_engine, ir, passmanager

    f_, c_, kh, kw = shape_w
    n, _, hp, wp = shape_x
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    w_ty = f"tensor<{f_}x{c_}x{kh}x{kw}xf32, #F>"
    x_ty = f"tensor<{n}x{c_}x{hp}x{wp}xf32>"
    o_ty, o_mr = f"tensor<{n}x{f_}x{oh}x{ow}xf32>", f"memref<{n}x{f_}x{oh}x{ow}xf32>"
    src = f"""#F = #sparse_tensor.encoding<{{ map = (f, c, kh, kw) -> (f : dense, c : compressed, kh : compressed,
  kw : compressed), posWidth = 32, crdWidth = 32 }}>
module {{
func.func @conv(%w: {w_ty}, %x: {x_ty}, %outm: {o_mr}) attributes {{ llvm.emit_c_interface }} {{
  %zero = arith.constant 0.0 : f32
  %out = bufferization.to_tensor %outm restrict writable : {o_mr} to {o_ty}
  %z = linalg.fill ins(%zero : f32) outs(%out : {o_ty}) -> {o_ty}
  %acc = linalg.generic {{ indexing_maps = [
      affine_map<(n, f, oh, ow, c, kh, kw) -> (f, c, kh, kw)>,
      affine_map<(n, f, oh, ow, c, kh, kw) -> (n, c, oh * {stride} + kh, ow * {stride} + kw)>,
      affine_map<(n, f, oh, ow, c, kh, kw) -> (n, f, oh, ow)>],
    iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction", "reduction", "reduction"] }}
    ins(%w, %x : {w_ty}, {x_ty}) outs(%z : {o_ty}) {{
    ^bb0(%a: f32, %b: f32, %s: f32):
      %p = arith.mulf %a, %b : f32
      %q = arith.addf %s, %p : f32
      linalg.yield %q : f32
  }} -> {o_ty}
  bufferization.materialize_in_destination %acc in restrict writable %outm : ({o_ty}, {o_mr}) -> ()
  return
}}
}}
"""
    with ir.Context(), ir.Location.unknown():
        module = ir.Module.parse(src)
        passmanager.PassManager.parse(pipeline_text(vl)).run(module.operation)
        engine = execution_engine.ExecutionEngine(module, opt_level=3, shared_libs=[])
        fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(engine.lookup("conv"))

    def call(bufs, xp: torch.Tensor, out: torch.Tensor) -> None:
        descs = [numpy_descriptor(b) for b in bufs] + [torch_descriptor(xp), torch_descriptor(out)]
        holders = [ctypes.pointer(d) for d in descs]
        packed = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
        fn(packed)

    call.keep = engine  # the engine owns the code
    return call, (oh, ow)


def measure(batch: int, cin: int, cout: int, size: int, k: int, stride: int, sparsity: float,
            threads: int) -> list[float]:
    """[torch dense, im2col+csr, im2col+csr on 1 thread, direct csf, the patch gather alone] in ms."""
    x = torch.randn(batch, cin, size, size)
    w = torch.randn(cout, cin, k, k)
    w = w * (w.abs() > w.abs().flatten().kthvalue(int(w.numel() * sparsity)).values)
    b = torch.randn(cout)
    want = F.relu(F.conv2d(x, w, b, stride, 1))
    row = [best_ms(lambda: F.relu(F.conv2d(x, w, b, stride, 1)))]
    for th in (threads, 1):
        conv = SparseConv2d("conv", registry.get_format("csr"), w.reshape(cout, -1), b, "relu", False, th,
                            kernel_size=(k, k), stride=(stride, stride), padding=(1, 1), dilation=(1, 1))
        assert (conv(x) - want).abs().max() <= 1e-4 * want.abs().max(), "im2col conv differs from torch"
        row.append(best_ms(lambda c=conv: c(x)))
    xp = F.pad(x, (1, 1, 1, 1)).contiguous()
    bufs = csf(w.numpy())
    call, (oh, ow) = direct_kernel(tuple(w.shape), tuple(xp.shape), stride, 16 if stride == 1 else 0)
    out = torch.empty(batch, cout, oh, ow)

    def direct():
        call(bufs, xp, out)
        return torch.relu_(out.add_(b[:, None, None]))

    assert (direct() - want).abs().max() <= 1e-4 * want.abs().max(), "direct conv differs from torch"
    row.append(best_ms(direct))
    row.append(best_ms(lambda: conv._patches(xp, 0, batch, 0, oh, ow)))
    return row


def main() -> int:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    print(f"torch threads={threads}; sparsec im2col kernels split rows across {threads} threads; the direct "
          "kernel runs on one thread (no row split), so compare it with the 1-thread im2col column")
    layers = [  # (batch, cin, cout, size, k, stride)
        (8, 64, 64, 32, 3, 1),
        (8, 128, 128, 16, 3, 1),
        (8, 64, 128, 32, 3, 2),
        (8, 256, 256, 8, 3, 1),
    ]
    print(f"{'layer':<26}{'sparsity':>9}{'torch dense':>13}{'im2col+csr':>12}{'im2col 1 thr':>14}"
          f"{'direct csf':>12}{'im2col only':>13}")
    for batch, cin, cout, size, k, stride in layers:
        for sparsity in (0.8, 0.9, 0.95):
            t = measure(batch, cin, cout, size, k, stride, sparsity, threads)
            name = f"{batch}x{cin}x{size}x{size} k{k} s{stride}->{cout}"
            print(f"{name:<26}{sparsity:>9.2f}" + "".join(f"{v:>{w}.2f}" for v, w in zip(t, (13, 12, 14, 12, 13), strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
