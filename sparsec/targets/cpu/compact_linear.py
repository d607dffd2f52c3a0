"""CompactLinear: the runtime module of a 16-bit Linear in the bitmap or compact 2:4 format (small N).

It packs the weight in row slabs (one per thread, each a multiple of ``ROW_ALIGN`` rows except the
last, which is zero-padded), widens the activation to f32 once per call, and runs the emit_bitmap kernel
of each slab; the kernels write their columns of Y [N, out] in place. The slabs run on torch's libgomp
threads (threads.run_kernels): on the pool, torch's OpenMP worker, still spinning after the previous torch op,
took one of the two cores from the slab threads (bf16 11008x4096 bitmap at N = 1 after a torch op, 2 threads,
quiet: 5.9 ms on the pool, 3.5 ms on libgomp; 3.4 ms back to back on either). Calls with N > 8 run in chunks of 8
input rows (each chunk streams the weight once: these formats are for decode-sized N).
"""

from __future__ import annotations

import torch

from sparsec import knobs
from sparsec.codegen.mlir import emit_bitmap
from sparsec.codegen.mlir.jit import (
    ArgRef,
    CompiledKernel,
    compile_kernel,
    numpy_descriptor,
    torch_descriptor,
)
from sparsec.errors import InputError
from sparsec.formats.base import SparseFormat, aligned_copy
from sparsec.formats.bitmap import Packed16, value_dtype
from sparsec.runtime.module import SparseModule
from sparsec.targets.cpu.threads import run_slabs

#: slab rows are multiples of this (every rows_per_step divides it)
ROW_ALIGN = 8
#: input rows per kernel call; more run in chunks
ROWS_PER_CALL = 8


def rows_per_step(n: int) -> int:
    """Rows sharing each X load: 4 at N = 1, 2 at N = 2, else 1 (N accumulators per row in 16 ymm registers)."""
    return 4 if n == 1 else 2 if n == 2 else 1


def chunks(n: int) -> list[tuple[int, int]]:
    """(start, size) chunks of at most ROWS_PER_CALL input rows."""
    return [(s, min(ROWS_PER_CALL, n - s)) for s in range(0, n, ROWS_PER_CALL)]


class CompactLinear(SparseModule):
    """``act(x @ W^T + bias) + residual`` with a bf16/fp16 W in a bitmap (or compact 2:4) format.

    Computes in the weight's dtype: 16-bit values, f32 accumulation, one rounding at the store."""

    def __init__(self, name: str, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                 activation: str | None, has_residual: bool, threads: int = 1) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise InputError(f"{name}: weight must be 2-d [out, in], got shape {tuple(weight.shape)}")
        if weight.dtype not in (torch.bfloat16, torch.float16):
            raise NotImplementedError(f"{name}: format {fmt.label} holds bfloat16/float16 weights, not {weight.dtype}")
        self.layer_name, self.fmt = name, fmt
        self.out_features, self.in_features = weight.shape
        self.activation, self.has_residual = activation, has_residual
        self.dtype = weight.dtype
        self.kernel_dtype = value_dtype(weight.dtype)
        self.slabs = self._pack(weight.detach(), bias, max(1, threads))
        self.stored = sum(p.stored for p, _, _ in self.slabs)
        self.nbytes = sum(p.nbytes for p, _, _ in self.slabs)
        self._lut = aligned_copy(emit_bitmap.shuffle_table(self.kernel_dtype))
        #: the user's (weight, bias) parameters, set by lower: a call that needs their gradients raises
        self.train_refs: tuple | None = None
        self._bind()

    def _pack(self, w: torch.Tensor, bias: torch.Tensor | None, threads: int) -> list:
        rows = self.out_features
        per = -(-rows // threads)
        per = -(-per // ROW_ALIGN) * ROW_ALIGN
        slabs = []
        for r0 in range(0, rows, per):
            r1 = min(rows, r0 + per)
            part = w[r0:r1]
            pad = -(r1 - r0) % ROW_ALIGN
            if pad:
                part = torch.nn.functional.pad(part, (0, 0, 0, pad))
            packed = self.fmt.pack(part)
            b = None
            if bias is not None:
                b = torch.zeros(packed.padded_shape[0])
                b[: r1 - r0] = bias.detach().float()[r0:r1]
            slabs.append((packed, b, (r0, r1)))
        return slabs

    def _buffer_names(self) -> list[str]:
        return ["mask", "values"] if self.fmt.fixed else ["mask", "vstart", "values"]

    def _bind(self) -> None:
        """Argument descriptors of the packed buffers (raw pointers: rebuilt after unpickling)."""
        self._bufs = []
        for packed, _, _ in self.slabs:
            bufs = [packed.buffers[k] for k in self._buffer_names()]
            bufs[-1] = bufs[-1].view("uint8")  # the kernel reads values as bytes
            self._bufs.append(bufs)
        self._fixed_args = [[ArgRef(numpy_descriptor(b)) for b in bufs] + [ArgRef(numpy_descriptor(self._lut))]
                            for bufs in self._bufs]
        self._bias_args = [ArgRef(torch_descriptor(b)) if b is not None else None for _, b, _ in self.slabs]
        self._kernels: dict[int, list[CompiledKernel]] = {}

    _TRANSIENT = ("_bufs", "_fixed_args", "_bias_args", "_kernels")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._bind()

    def spec(self, packed: Packed16, n: int) -> emit_bitmap.BitmapSpec:
        """The kernel spec of one slab for ``n`` (<= ROWS_PER_CALL) input rows."""
        rows, cols = packed.padded_shape
        return emit_bitmap.BitmapSpec(rows, cols, n, self.kernel_dtype, self.fmt.fixed, self.slabs[0][1] is not None,
                                      self.activation, self.has_residual, rows_per_step(n))

    def _chunk_kernels(self, n: int) -> list[CompiledKernel]:
        ks = self._kernels.get(n)
        if ks is None:
            ks = [compile_kernel(self.spec(p, n)) for p, _, _ in self.slabs]
            self._kernels[n] = ks
        return ks

    def kernels(self, n: int) -> list[CompiledKernel]:
        """The compiled kernels a call with ``n`` input rows runs (every slab, every chunk size)."""
        return [k for size in sorted({s for _, s in chunks(n)}) for k in self._chunk_kernels(size)]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Run the fused layer on ``x`` [..., in]; ``residual`` [..., out] when the group fused one."""
        if x.dtype != self.dtype:
            raise InputError(f"{self.layer_name}: input dtype {x.dtype}, this layer's kernel takes {self.dtype}")
        if residual is not None and residual.dtype != self.dtype:
            raise InputError(f"{self.layer_name}: residual dtype {residual.dtype}, this layer computes in {self.dtype}")
        if x.device.type != "cpu":
            raise InputError(f"{self.layer_name}: input on {x.device}, the CPU kernel takes CPU tensors")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise InputError(f"{self.layer_name}: input shape {tuple(x.shape)}, expected [..., {self.in_features}]")
        params = self.train_refs or ()
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, residual, *params)):
            raise NotImplementedError(
                f"{self.layer_name}: gradients through the {self.fmt.label} kernels are not implemented; run "
                "under torch.no_grad() / torch.inference_mode(), or compile with formats that train (csr, bsr)")
        lead = x.shape[:-1]
        n = 1
        for s in lead:
            n *= int(s)
        if n == 0:
            out = torch.zeros(*lead, self.out_features, dtype=self.dtype)
            return out + residual if residual is not None else out
        cols = self.slabs[0][0].padded_shape[1]
        x2 = x.reshape(n, self.in_features)
        xf = torch.zeros(n, cols) if cols != self.in_features else torch.empty(n, cols)
        xf[:, : self.in_features] = x2
        r2 = residual.reshape(n, self.out_features) if residual is not None else None
        total = sum(p.padded_shape[0] for p, _, _ in self.slabs)
        out = torch.empty(n, total, dtype=self.dtype)
        if knobs.get("poison_outputs"):
            out.fill_(float("nan"))
        for c0, size in chunks(n):
            self._run_chunk(xf[c0 : c0 + size], None if r2 is None else r2[c0 : c0 + size], out[c0 : c0 + size], size)
        if total != self.out_features:
            out = out[:, : self.out_features]
        return out.reshape(*lead, self.out_features)

    def _run_chunk(self, xf: torch.Tensor, r2: torch.Tensor | None, out: torch.Tensor, n: int) -> None:
        kernels = self._chunk_kernels(n)
        x_arg = ArgRef(torch_descriptor(xf))
        tasks, offset = [], 0
        for s, ((packed, _, (r0, r1)), kern) in enumerate(zip(self.slabs, kernels, strict=True)):
            rows = packed.padded_shape[0]
            args = [*self._fixed_args[s], x_arg]
            if self._bias_args[s] is not None:
                args.append(self._bias_args[s])
            res = None
            if r2 is not None:
                if rows == r1 - r0 and r2.stride(-1) == 1:
                    res = r2[:, r0:r1]
                else:
                    res = torch.zeros(n, rows, dtype=self.dtype)
                    res[:, : r1 - r0] = r2[:, r0:r1]
                args.append(ArgRef(torch_descriptor(res)))
            o = out[:, offset : offset + rows]
            args.append(ArgRef(torch_descriptor(o)))
            offset += rows
            tasks.append((kern, args, (res, o, xf)))
        run_slabs(tasks, self.stored, n)

    def extra_repr(self) -> str:
        return (f"{self.layer_name}: {self.in_features}->{self.out_features} format={self.fmt.label} "
                f"dtype={self.dtype} stored={self.stored} bytes={self.nbytes} activation={self.activation} "
                f"residual={self.has_residual} slabs={len(self.slabs)}")
