"""SparseLinear: the runtime module that replaces one fused group (matmul + epilogue) in the graph.

It holds the packed weight, split into row slabs (one per thread), and calls the compiled kernel of
each slab. Kernels are specialized to the row count N of the call and shared through the kernel cache,
so a new batch size costs one compile per distinct (slab shape, format, epilogue), not per layer.

Data layout: the hand CSR and BSR kernels read X as [N, in] and write Y as [N, out] ("natural" form; CSR
transposes 8x8 tiles of X into an L1 panel inside the kernel). With knob ``csr_natural_kernel`` off, CSR
at N >= 2 computes Y^T = W X^T: the activation is transposed into [in, N] and the result is returned as a
transposed view. For N == 1 CSR's dot form reads x directly.

Per call, a natural-layout layer re-points descriptors prepared once per N (X, output and residual
pointers and row strides; sparsec/targets/cpu/natural_call.py) instead of building them: ~25 us of Python
per call instead of ~47 on one thread, ~71 instead of ~118 on two (1-thread CPU time, docs/kernels.md).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import replace

import numpy as np
import torch

from sparsec import knobs
from sparsec.codegen.mlir import emit_bsrvec, emit_csrnat, emit_rowvec
from sparsec.codegen.mlir.jit import (
    ArgRef,
    CompiledKernel,
    compile_kernel,
    numpy_descriptor,
    torch_descriptor,
)
from sparsec.codegen.spec import KernelSpec, vector_length
from sparsec.errors import InputError
from sparsec.formats.base import PackedWeight, SparseFormat, aligned_copy
from sparsec.formats.coo import COO
from sparsec.formats.csr import CSR
from sparsec.formats.nm import NM
from sparsec.runtime.module import SparseModule
from sparsec.targets.cpu import natural_call
from sparsec.targets.cpu.threads import run_slabs

#: torch dtype -> the kernels' element type (MLIR spelling); 16-bit kernels accumulate in f32
KERNEL_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def kernel_dtype(dtype: torch.dtype, fmt: SparseFormat) -> str:
    """The kernel element type for a weight of ``dtype`` in ``fmt``: the dtype itself where a 16-bit
    kernel exists and runs faster than the f32 one between casts (CSR, N:M and COO as CSR, bf16 BSR with
    vdpbf16ps, other 16-bit BSR with knob ``bsr_widened_16bit``), else f32 (the layer casts its input to f32
    and its output back); NotImplementedError for dtypes other than float32/bfloat16/float16."""
    if dtype not in KERNEL_DTYPES:
        raise NotImplementedError(f"no CPU sparse kernel for dtype {dtype} (float32, bfloat16, float16 only)")
    ft = KERNEL_DTYPES[dtype]
    if ft == "f32" or not supports_16bit(fmt):
        return "f32"
    if fmt.own_kernels is None and emit_bsrvec.supports_map(fmt.level_map) and not (
            emit_bsrvec.pairs_layout(ft, *fmt.lmap.block) or knobs.get("bsr_widened_16bit")):
        return "f32"  # the widened 16-bit BSR kernel measured slower than the f32 one between casts
    return ft


def supports_16bit(fmt: SparseFormat) -> bool:
    """Whether ``fmt`` has bf16/fp16 CPU kernels: the hand CSR kernel (also N:M and COO, which 16-bit
    layers pack as CSR: ``runs_as_csr``), the hand BSR kernel (knob ``bsr_vector_kernel``), or a format's
    own module."""
    return (fmt.own_kernels is not None or emit_rowvec.supports(KernelSpec(fmt.label, fmt.level_map, 2, 2, 2))
            or isinstance(fmt, (NM, COO))
            or bool(knobs.get("bsr_vector_kernel") and emit_bsrvec.supports_map(fmt.level_map)))


def runs_as_csr(fmt: SparseFormat, dtype: torch.dtype) -> bool:
    """Whether a ``dtype`` weight in ``fmt`` is packed as CSR and runs CSR's 16-bit kernels: N:M and COO
    in bf16/fp16. Their own kernels are the sparsifier's f32 loops, which a 16-bit layer would run
    between casts; CSR stores exactly their nonzeros (an N:M weight's padding dropped) with 16-bit
    column indices, and measured faster than the cast f32 N:M/COO kernels (1-thread CPU time, 768x3072
    bf16, N = 1 and 64: 2:4 1.06-1.13x, 90% COO 1.5-2.3x; docs/kernels.md)."""
    return dtype in (torch.bfloat16, torch.float16) and fmt.own_kernels is None and isinstance(fmt, (NM, COO))


#: activations whose training forward runs the layer's linear part and leaves the activation to torch
#: (the keys of sparsec.targets.cpu.sparse_grad.UNFOLDED, named here so compiling need not import that module)
TRAIN_UNFOLDED = frozenset({"gelu", "silu"})


class SparseLinear(SparseModule):
    """``act(x @ W^T + bias) + residual`` with W in a sparse format, run by MLIR-compiled kernels.

    The layer computes in the weight's dtype (float32, bfloat16 or float16): a 16-bit layer stores
    16-bit values, takes and returns 16-bit activations, and accumulates in float32 inside the kernel.
    """

    def __init__(
        self,
        name: str,
        fmt: SparseFormat,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        activation: str | None,
        has_residual: bool,
        threads: int = 1,
    ) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise InputError(f"{name}: weight must be 2-d [out, in], got shape {tuple(weight.shape)}")
        if fmt.own_kernels is not None:  # its buffers are not level buffers: its own module runs it
            raise InputError(f"{name}: format {fmt.label!r} brings its own {fmt.own_kernels!r} kernels; run it "
                             "through the CPU target's module for it (CpuTarget.module), not SparseLinear")
        self.layer_name = name
        #: the format the layer was compiled to (its label in ``extra_repr``); ``fmt`` is the one packed and
        #: run: CSR for a 16-bit N:M or COO layer (``runs_as_csr``), else the same
        self.compiled_format = fmt.label
        if runs_as_csr(fmt, weight.dtype):
            fmt = CSR()
        self.fmt = fmt
        self.out_features, self.in_features = weight.shape
        self.activation = activation
        self.has_residual = has_residual
        self.dtype = weight.dtype if weight.dtype in KERNEL_DTYPES else torch.float32
        self.kernel_dtype = self._kernel_dtype(weight)
        #: the dtype the kernels read and write: the layer's own, or f32 for a 16-bit layer in a format
        #: without 16-bit kernels (the input is cast to f32 and the output back)
        self.io_dtype = self.dtype if self.kernel_dtype != "f32" else torch.float32
        self._use_slabs(self._pack(weight.detach().float(), bias, max(1, threads)))
        #: the explicit pattern (bool [out, in]) this layer stores, zeros included, when ``repack`` set one;
        #: None: the weight's nonzeros when it was packed
        self.pattern: torch.Tensor | None = None
        #: training state (sparse_grad.Trainable) when lower found the parameter this weight is
        self.trainable = None
        self._handle = None
        #: (weight, bias) parameters of the user's model this layer computes with; set by lower
        self.train_refs: tuple | None = None

    def _use_slabs(self, slabs: list) -> None:
        """Take ``slabs`` (``_pack``'s) as the packed weight: kernel buffers, descriptors, kernel choices."""
        self.slabs = slabs
        self.stored = sum(p.stored for p, _, _ in self.slabs)
        self.nbytes = sum(p.nbytes for p, _, _ in self.slabs)
        # Weight and bias arguments never change: build their descriptors once per slab.
        names = self.fmt.lmap.buffer_names()
        #: the hand BSR kernel reads X as [N, in] and writes Y as [N, out] (no layout copies), its values
        #: stored with each block transposed; in f32 or the layer's 16-bit dtype (``kernel_dtype``)
        self.bsr_natural = bool(knobs.get("bsr_vector_kernel") and emit_bsrvec.supports_map(self.fmt.level_map))
        #: bf16 BSR on an AVX512-BF16 host: vdpbf16ps on pairs of block columns, values pair-interleaved
        self.bsr_pairs = self.bsr_natural and emit_bsrvec.pairs_layout(self.kernel_dtype, *self.fmt.lmap.block)
        #: the kernels read X as [N, in] and write Y as [N, out] (BSR at any N, f32 CSR at N >= 2)
        self.natural = self.bsr_natural or (self._csr_kernel() and knobs.get("csr_natural_kernel")
                                            and self.kernel_dtype == "f32")
        # The hand-written kernels read 16-bit column indices when the columns fit: less index traffic.
        hand = self._csr_kernel() or self.bsr_natural
        self.index_bits = 16 if hand and self.slabs[0][0].padded_shape[1] <= 32767 else 32
        # the kernels' view of each slab's buffers; kept here because descriptors hold raw pointers
        self._kernel_buffers = [[self._narrow(b, p.buffers[b]) for b in names] for p, _, _ in self.slabs]
        # CSR's scatter kernel walks the input in column tiles; each tile's row positions are one more buffer
        # (appended to the slab's kernel buffers, after the format's own)
        # (16-bit kernels are untiled: the partial sums kept in the output between tiles would be rounded)
        self.k_tile = (emit_rowvec.choose_k_tile(self.slabs[0][0].padded_shape[1])
                       if self._csr_kernel() and self.kernel_dtype == "f32" else 0)
        if self.k_tile:
            for (packed, _, _), bufs in zip(self.slabs, self._kernel_buffers, strict=True):
                bufs.append(aligned_copy(emit_rowvec.tile_positions(
                    packed.buffers[names[0]], packed.buffers[names[1]], packed.padded_shape[1], self.k_tile)))
        self._bind()

    def repack(self, pattern: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Store exactly ``pattern`` (bool [out, in]) from now on, with ``weight``'s values there (zeros
        included: a weight RigL/SET just grew is zero and must be stored to get a gradient).

        A mask change during sparse training re-packs the layer's structure this way instead of a full
        recompile; training state (slot maps, the CSR copy of W^T, the twin) is rebuilt from the pattern."""
        if pattern.shape != (self.out_features, self.in_features) or pattern.dtype != torch.bool:
            raise InputError(f"{self.layer_name}: pattern must be bool {(self.out_features, self.in_features)}")
        self._use_slabs(self._pack(pattern.float(), bias, len(self.slabs)))
        self.pattern = pattern.detach().clone()
        from sparsec.targets.cpu import sparse_grad

        self.trainable = None
        self.enable_training(weight, bias)  # slot maps (and later W^T, the twin) from the pattern
        if not sparse_grad.refresh_values(self):
            raise InputError(f"{self.layer_name}: the weight has nonzeros outside the pattern to re-pack to")

    def _kernel_dtype(self, weight: torch.Tensor) -> str:
        """The kernels' element type for this weight (see ``kernel_dtype``)."""
        return kernel_dtype(weight.dtype, self.fmt) if weight.is_floating_point() else "f32"

    def _bind(self) -> None:
        """The kernels' argument descriptors of the packed buffers (raw pointers: never pickled).

        A re-bind (value refresh, re-pack) waits for a prepared call in flight (``_plan_lock``), so no plan
        built on the old buffers outlives it; a general-path call in flight keeps the old buffers alive
        through its arguments' owners and finishes on the old values."""
        lock = self.__dict__.get("_plan_lock")
        if lock is None:
            #: n -> prepared call of the natural kernels (``_plan``); its descriptors are rewritten per
            #: call, so one call at a time uses it (a concurrent call builds its own arguments)
            self._plan_lock = lock = threading.Lock()
        with lock:
            own = len(self.fmt.lmap.buffer_names())  # the format's buffers; a tile-position buffer follows
            self._fixed_args = [[ArgRef(numpy_descriptor(a), a) for a in bufs[:own]]
                                for bufs in self._kernel_buffers]
            self._tile_args = [ArgRef(numpy_descriptor(bufs[own]), bufs[own])
                               for bufs in self._kernel_buffers if len(bufs) > own]
            self._bias_args = [ArgRef(torch_descriptor(b), b) if b is not None else None for _, b, _ in self.slabs]
            self._kernels: dict[int, list[CompiledKernel]] = {}
            self._plans: dict[int, natural_call.Plan | None] = {}

    #: what a saved model does not store: descriptors and kernel handles (rebuilt on load), training state
    #: (rebuilt on the first backward)
    _TRANSIENT = ("_fixed_args", "_tile_args", "_bias_args", "_kernels", "_plans", "_plan_lock", "trainable",
                  "_handle")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.trainable, self._handle = None, None
        self.__dict__.setdefault("bsr_pairs", False)  # models saved before the paired layout existed
        if self.bsr_pairs and not emit_bsrvec.host_has_bf16_dot():
            self._use_slabs(self.slabs)  # saved on an AVX512-BF16 host: re-derive the transposed layout
            return
        self._bind()

    def enable_training(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Route calls that need grad through ``sparsec::sparse_linear`` with grads for these parameters."""
        from sparsec.targets.cpu import sparse_grad

        self._check_grad_dtype()
        self.trainable = sparse_grad.Trainable(self, weight, bias)
        self._handle = sparse_grad.register(self)

    def _check_grad_dtype(self) -> None:
        if self.dtype != torch.float32:
            raise NotImplementedError(
                f"{self.layer_name}: gradients through {self.dtype} sparse kernels are not implemented; run "
                "inference under torch.no_grad() or torch.inference_mode(), or train in float32")

    def adopt_values(self, arrays: list[np.ndarray]) -> None:
        """Use ``arrays`` (one float32 array per slab, same size) as the slabs' packed values from now on.

        Training keeps every slab's values as views of one buffer (sparse_grad.Trainable), so one gather
        refreshes them; the kernels' argument descriptors are rebuilt for the new memory."""
        names = self.fmt.lmap.buffer_names()
        at = names.index("values")
        for (packed, _, _), bufs, a in zip(self.slabs, self._kernel_buffers, arrays, strict=True):
            if a.shape != packed.buffers["values"].shape or a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError(f"{self.layer_name}: adopted values must match the slab's float32 values")
            packed.buffers["values"] = a
            bufs[at] = self._narrow("values", a)
        self._bind()

    def linear_part(self, name: str) -> SparseLinear:
        """This layer without its activation and residual, on copies of its packed slabs (no packing): the
        linear part ``x W^T + b`` that the training forward of a gelu/silu layer runs (sparse_grad._twin)."""
        keep = {id(t): t for t in (self.train_refs or ()) if t is not None}  # the user's parameters, not copies
        # a bias slab of a loaded model is a view of the mapped tensors file: deepcopy would copy the whole
        # storage under it (~90 MB for BERT-base, per twin); clone just the bias
        keep.update({id(b): b.clone() for _, b, _ in self.slabs if b is not None})
        if self.pattern is not None:  # read only (a re-pack replaces it)
            keep[id(self.pattern)] = self.pattern
        twin = copy.deepcopy(self, keep)
        twin.layer_name, twin.activation, twin.has_residual, twin.train_refs = name, None, False, None
        return twin

    def prepare(self, n: int) -> list[CompiledKernel]:
        """Every kernel a call with ``n`` input rows may run, compiled or loaded now so that no call pays for
        it: the layer's own and, when its parameters take gradients through gelu/silu (which the training
        forward leaves to torch, sparse_grad.UNFOLDED), those of its linear part."""
        ks = list(self.kernels(n))
        refs = [t for t in self.train_refs or () if t is not None]
        if self.activation in TRAIN_UNFOLDED and self.dtype == torch.float32 and any(t.requires_grad for t in refs):
            key = ("linear", n)
            if key not in self._kernels:
                self._kernels[key] = [compile_kernel(replace(self.spec(p, n), activation=None, residual=False))
                                      for p, _, _ in self.slabs]
            ks.extend(self._kernels[key])
        return ks

    def plain(self, name: str, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None) -> SparseLinear:
        """A plain ``SparseLinear`` (no activation, no residual) on this layer's threads: the backward's
        transposed and pre-activation twins (sparsec/targets/cpu/sparse_grad.py builds them through this, so
        that it need not import this module, which imports it)."""
        return SparseLinear(name, fmt, weight, bias, None, False, threads=len(self.slabs))

    def _pack(self, w: torch.Tensor, bias: torch.Tensor | None, threads: int):
        """Split rows into ``threads`` slabs of about equal nonzeros (``slab_bounds``) and pack each one."""
        slabs = []
        for r0, r1 in slab_bounds(w, self.fmt.lmap.block[0], threads):
            packed = self.fmt.pack(w[r0:r1])
            b = None
            if bias is not None:
                b = torch.zeros(packed.padded_shape[0])
                b[: r1 - r0] = bias.detach().float()[r0:r1]
            slabs.append((packed, b, (r0, r1)))
        return slabs

    def _csr_kernel(self) -> bool:
        return emit_rowvec.supports(KernelSpec(self.fmt.label, self.fmt.level_map, 2, 2, 2))

    def _narrow(self, name: str, buf):
        """The buffer as the kernel reads it: coordinates as int16 when ``index_bits`` is 16; for the
        natural BSR kernel, values with each block transposed; 16-bit kernels' values as the bits of
        their dtype (numpy has no bfloat16: an int16 array of the same bytes)."""
        if self.index_bits == 16 and name.startswith("crd"):
            return aligned_copy(buf.astype("int16"))
        if name != "values":
            return buf
        if self.bsr_natural:  # transposed blocks, or bf16 column pairs for vdpbf16ps (``bsr_pairs``)
            bh, bw = self.fmt.lmap.block
            buf = (emit_bsrvec.pair_blocks if self.bsr_pairs else emit_bsrvec.transpose_blocks)(buf, bh, bw)
            if self.kernel_dtype == "f32":
                return aligned_copy(buf)
        if self.kernel_dtype != "f32":  # one rounding of the f32 packed values to the layer's dtype
            return aligned_copy(torch.from_numpy(np.ascontiguousarray(buf)).to(self.dtype).view(torch.int16).numpy())
        return buf

    def sync_values(self) -> None:
        """Re-derive the kernels' copies of the packed values after they changed in place (training)."""
        if not self.bsr_natural:
            return
        at = self.fmt.lmap.buffer_names().index("values")
        for (packed, _, _), bufs in zip(self.slabs, self._kernel_buffers, strict=True):
            np.copyto(bufs[at], self._narrow("values", packed.buffers["values"]))

    def spec(self, packed: PackedWeight, n: int) -> KernelSpec:
        """The kernel spec of one slab for ``n`` rows of input."""
        rows, cols = packed.padded_shape
        natural = self._natural_at(n)
        k_tile = self.k_tile if n > 1 else 0
        return KernelSpec(
            format=self.fmt.label,
            level_map=self.fmt.level_map,
            rows=rows,
            cols=cols,
            n=n,
            form="natural" if natural else "dot" if n == 1 else "scatter",
            bias=self.slabs[0][1] is not None,
            activation=self.activation,
            residual=self.has_residual,
            vl=vector_length(n) if n > 1 else 0,
            index_bits=self.index_bits,
            k_tile=k_tile,
            dtype=self.kernel_dtype,
            tiles_outer=(natural and self._csr_kernel() and emit_csrnat.choose_tiles_outer(rows, cols, n, k_tile)),
            block_pairs=self.bsr_pairs,
        )

    def _natural_at(self, n: int) -> bool:
        """Whether a call with ``n`` input rows runs the natural-layout kernels (CSR's N = 1 is the dot form)."""
        return self.bsr_natural or (self.natural and n > 1)

    def kernels(self, n: int) -> list[CompiledKernel]:
        """The compiled kernel of every slab for ``n`` input rows (compiled on first use)."""
        ks = self._kernels.get(n)
        if ks is None:
            ks = [compile_kernel(self.spec(p, n)) for p, _, _ in self.slabs]
            self._kernels[n] = ks
        return ks

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Run the fused layer on ``x`` [..., in]; ``residual`` [..., out] when the group fused one.

        With grad mode on and an input or the layer's parameters requiring grad, the call goes through
        the autograd-capable custom op (sparsec.targets.cpu.sparse_grad)."""
        if self.train_refs is not None:
            from sparsec.targets.cpu import sparse_grad

            if sparse_grad.needs_grad(self, x, residual):
                # the custom op needs only the handle: the training state (slot maps, O(nnz)) is built on the
                # first backward or refresh (sparse_grad.state), so a grad-enabled inference call pays nothing
                if self._handle is None:
                    self._check_grad_dtype()
                    self._handle = sparse_grad.register(self)
                return sparse_grad.train_forward(self, x, residual)
        return self.run(x, residual)

    def run(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The kernels' forward, no autograd."""
        if x.dtype != self.dtype:
            raise InputError(f"{self.layer_name}: input dtype {x.dtype}, this layer's kernel takes {self.dtype}")
        if residual is not None and residual.dtype != self.dtype:
            raise InputError(f"{self.layer_name}: residual dtype {residual.dtype}, this layer computes in {self.dtype}")
        if self.io_dtype != self.dtype:  # a 16-bit layer on f32 kernels
            y = self._run_io(x.to(self.io_dtype), residual.to(self.io_dtype) if residual is not None else None)
            return y.to(self.dtype)
        return self._run_io(x, residual)

    def _run_io(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The kernels' forward on checked inputs of dtype ``io_dtype``."""
        if x.device.type != "cpu":
            raise InputError(f"{self.layer_name}: input on {x.device}, the CPU kernel takes CPU tensors")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise InputError(
                f"{self.layer_name}: input shape {tuple(x.shape)}, expected [..., {self.in_features}]"
            )
        lead = x.shape[:-1]
        n = 1
        for s in lead:
            n *= int(s)
        if n == 0:
            out = torch.zeros(*lead, self.out_features, dtype=self.io_dtype)
            return out + residual if residual is not None else out
        x2 = x.reshape(n, self.in_features)
        r2 = residual.reshape(n, self.out_features) if residual is not None else None
        if self._natural_at(n):
            return natural_call.run(self, x2, r2, n).reshape(*lead, self.out_features)
        kernels = self.kernels(n)
        xt, x_args = self._scatter_input(x2, n)
        flat = self._flat_at(n)
        total_rows = sum(p.padded_shape[0] for p, _, _ in self.slabs)
        out = torch.empty((total_rows,) if flat else (total_rows, n), dtype=self.io_dtype)
        if knobs.get("poison_outputs"):
            out.fill_(float("nan"))
        tasks, offset = [], 0
        for s, ((packed, _, (r0, r1)), kern) in enumerate(zip(self.slabs, kernels, strict=True)):
            rows = packed.padded_shape[0]
            args = [*self._fixed_args[s], *(self._tile_args[s : s + 1] if n > 1 else []), *x_args]
            if self._bias_args[s] is not None:
                args.append(self._bias_args[s])
            res = None
            if r2 is not None:
                res = torch.zeros((rows,) if flat else (rows, n), dtype=self.io_dtype)
                res[: r1 - r0] = r2[:, r0:r1].reshape(-1) if flat else r2[:, r0:r1].t()
                args.append(ArgRef(torch_descriptor(res)))
            o = out[offset : offset + rows]
            args.append(ArgRef(torch_descriptor(o)))
            offset += rows
            # keep the buffers alive until the kernel ran: the descriptors hold raw pointers
            tasks.append((kern, args, (res, o, xt)))
        run_slabs(tasks, self.stored, n)
        if total_rows != self.out_features:
            out = self._gather_rows(out)
        y = out.reshape(1, -1) if flat else out.t()
        return y.reshape(*lead, self.out_features)

    def _flat_at(self, n: int) -> bool:
        """Whether a call with ``n`` input rows passes x, the residual and the output as vectors (the
        dot form at N = 1) rather than as [cols, N] / [rows, N] matrices."""
        return n == 1

    def _scatter_input(self, x2: torch.Tensor, n: int) -> tuple[object, list[ArgRef]]:
        """X^T as the Y^T kernels read it ([cols, N], padded; a vector at N = 1), and its argument
        references: (what must stay alive while the kernels run, the arguments)."""
        cols = self.slabs[0][0].padded_shape[1]
        if n == 1:
            xt = x2.reshape(-1)
            if cols != self.in_features or not xt.is_contiguous():
                xt = torch.zeros(cols, dtype=self.io_dtype).copy_(torch.nn.functional.pad(xt, (0, cols - self.in_features)))
        else:
            xt = x2.t()
            if cols != self.in_features:
                xt = torch.nn.functional.pad(xt, (0, 0, 0, cols - self.in_features))
            xt = xt.contiguous()
        return xt, [ArgRef(torch_descriptor(xt))]

    def _gather_rows(self, out: torch.Tensor) -> torch.Tensor:
        """Drop the padding rows each slab added (only when the format padded rows)."""
        parts, offset = [], 0
        for packed, _, (r0, r1) in self.slabs:
            parts.append(out[offset : offset + (r1 - r0)])
            offset += packed.padded_shape[0]
        return torch.cat(parts)

    def _format_repr(self) -> str:
        """The compiled format's label, and the one it runs as when they differ (``runs_as_csr``)."""
        label = self.__dict__.get("compiled_format", self.fmt.label)  # models saved before it existed
        return label if label == self.fmt.label else f"{label} (as {self.fmt.label})"

    def extra_repr(self) -> str:
        return (
            f"{self.layer_name}: {self.in_features}->{self.out_features} format={self._format_repr()} "
            f"stored={self.stored} activation={self.activation} residual={self.has_residual} "
            f"slabs={len(self.slabs)}"
        )


def slab_bounds(w: torch.Tensor, row_block: int, threads: int) -> list[tuple[int, int]]:
    """Row ranges of ``threads`` slabs holding about equal nonzeros (a thread's work is its nonzeros).

    Cuts fall on multiples of knob ``slab_row_quantum`` (rounded up to the format's row block), so layers
    of one shape keep sharing a few slab shapes and their compiled kernels; equal row counts when every
    cut would land on the same quantum, or the weight is all zero."""
    rows = w.shape[0]
    quantum = max(row_block, -(-knobs.get("slab_row_quantum") // row_block) * row_block)
    per = -(-rows // threads)
    per = -(-per // row_block) * row_block
    even = [(r0, min(rows, r0 + per)) for r0 in range(0, rows, per)]
    nnz = (w != 0).sum(1).cumsum(0)
    total = int(nnz[-1]) if rows else 0
    if threads <= 1 or total == 0 or rows <= quantum:
        return even
    cuts = [0]
    for t in range(1, threads):
        r = int(torch.searchsorted(nnz, total * t / threads)) + 1  # rows [0, r) hold >= t/threads of them
        r = min(rows, max(cuts[-1] + quantum, round(r / quantum) * quantum))
        if r >= rows:
            break
        cuts.append(r)
    cuts.append(rows)
    return list(zip(cuts[:-1], cuts[1:], strict=True))
