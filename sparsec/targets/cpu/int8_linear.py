"""int8 layers of ``sparse_compile(..., quantize="int8")``: dynamic per-token activations, per-channel weights.

Both kinds compute ``act((Xq Wq^T) * sx[n] * sw[o] + bias) + residual``: ``Wq`` holds the weight quantized
symmetrically per output channel (``sw[o] = max|W[o]| / 127``), ``Xq`` the input quantized symmetrically per
token at every call (``sx[n] = max|X[n]| / 127``), values in [-127, 127]; ``Xq Wq^T`` is summed exactly in
int32. ``Int8SparseLinear`` runs an int8 CSR kernel whose epilogue dequantizes and applies bias, activation
and residual: on hosts with AVX512-VNNI + AVX512-BW (knob ``int8_vnni``) the ``vpdpbusd`` kernel
(sparsec/codegen/mlir/emit_int8_vnni.py: rows padded to quads of values, activations offset to u8 by the
input pass of emit_int8_quant.py) from knob ``int8_vnni_min_n`` input rows, else the 16-bit-lane kernel
(sparsec/codegen/mlir/emit_int8.py); ``Int8DenseLinear`` runs oneDNN's int8 GEMM
(``torch.ops.onednn.qlinear_pointwise``, u8 x s8 with int32 sums) and the same epilogue as torch ops; with
VNNI its activations keep 8 bits (quantized by emit_int8_quant_rows.py), else 7 bits (``DENSE_XMAX``) above
knob ``int8_dense_split_max_n`` rows; at or below it they keep 8 bits, split exactly into two 7-bit halves
stacked into one GEMM. ``torch._int_mm`` was no option on the AVX2 machine: 590 ms for 128x768x3072, 40x
torch's f32 GEMM (measured, 1 thread).

Each module measures its own quantization error once, on the compile's example inputs
(``measure_errors``): ``quant_error = max|y_int8 - y_fp32| / max|y_fp32|`` of the layer's output, the f32
reference computed from the unquantized weight on the same input. The report shows it per layer.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from sparsec import knobs
from sparsec.codegen.mlir import (
    emit_int8,
    emit_int8_quant,
    emit_int8_quant_rows,
    emit_int8_quant_t,
    emit_int8_vnni,
)
from sparsec.codegen.mlir.jit import (
    ArgRef,
    CompiledKernel,
    compile_kernel,
    numpy_descriptor,
    torch_descriptor,
)
from sparsec.codegen.spec import KernelSpec
from sparsec.errors import InputError
from sparsec.formats.base import PackedWeight, SparseFormat, aligned_copy
from sparsec.runtime.module import SparseModule
from sparsec.targets.cpu.sparse_linear import SparseLinear
from sparsec.targets.cpu.threads import run_slabs

#: the largest magnitude of a quantized value (symmetric: -128 is never produced, so two products fit in i16)
QMAX = 127
#: the most nonzeros a row may hold: below it the exact int32 sum cannot overflow (2**31 / 127**2)
ROW_NONZERO_LIMIT = 2**31 // (QMAX * QMAX)
#: the u8 offset of the VNNI kernel's activations (vpdpbusd multiplies unsigned by signed bytes)
U8_OFFSET = 128


def vnni_host() -> bool:
    """Whether int8 CSR layers pack for and run the VNNI kernel here: AVX512-VNNI + BW and knob ``int8_vnni``."""
    return bool(knobs.get("int8_vnni")) and emit_int8_vnni.available()


def int8_kernel(fmt: SparseFormat) -> bool:
    """Whether ``fmt`` has an int8 CPU kernel (CSR)."""
    return emit_int8.supports(KernelSpec(fmt.label, fmt.level_map, 2, 2, 2, dtype="i8"))


#: the largest magnitude of a dense layer's quantized activation: oneDNN's AVX2 int8 GEMM multiplies
#: u8 x s8 pairs into saturating int16 (``vpmaddubsw``), exact only while 2 * 127 * |u8| fits, so the
#: activation (offset by 64 to u8) keeps 7 bits, as fbgemm's ``reduce_range`` does (measured: 8-bit
#: activations are off by up to 46000 of a 240000 sum). Hosts with AVX512-VNNI (``vnni_host``) keep 8 bits:
#: oneDNN's ``vpdpbusd`` sums u8 x s8 quads in int32 without saturating
DENSE_XMAX = 63


def quantize_rows(t: torch.Tensor, qmax: int = QMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row of the 2-d float ``t``: (q int8 in [-qmax, qmax], scale f32
    [rows]) with ``t ~= q * scale[:, None]``; an all-zero row gets scale 1. NaN in a row makes its scale NaN."""
    t = t.float()
    amax = t.abs().amax(dim=1) if t.shape[1] else torch.zeros(t.shape[0])
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    # times the reciprocal rather than divided by the scale: what the VNNI input pass computes (a divide
    # per element cost it ~0.1 ms at 128 x 3072), bit for bit
    q = torch.round(t * (1 / scale)[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return q, scale


def _epilogue(y: torch.Tensor, bias, activation: str | None, residual) -> torch.Tensor:
    """bias, activation, residual on the f32 ``y`` (the torch twin of the kernels' epilogue)."""
    if bias is not None:
        y = y + bias
    if activation is not None:
        y = getattr(torch.nn.functional, activation)(y)
    return y + residual if residual is not None else y


def reference(x: torch.Tensor, weight: torch.Tensor, bias, activation: str | None, residual) -> torch.Tensor:
    """The fp32 layer: ``act(x W^T + bias) + residual``."""
    return _epilogue(x.float() @ weight.float().t(), bias, activation, residual)


class _Measured:
    """Mixin: measure the layer's quantization error on one call (``measure_errors`` switches it on)."""

    quant_error: float | None = None

    def _keep_reference(self, weight: torch.Tensor, bias) -> None:
        self._ref = (weight.detach().float().clone(), None if bias is None else bias.detach().float().clone())
        self._measuring = False

    def _no_grad(self, x: torch.Tensor, residual) -> None:
        """NotImplementedError for a call that would need gradients (int8 layers compute none)."""
        if torch.is_grad_enabled() and (x.requires_grad or (residual is not None and residual.requires_grad)):
            raise NotImplementedError(f"{self.layer_name}: gradients through int8 layers are not implemented; "
                                      "run under torch.no_grad() or compile without quantize")

    def _record(self, x: torch.Tensor, residual, y: torch.Tensor) -> None:
        ref = getattr(self, "_ref", None)
        if not getattr(self, "_measuring", False) or ref is None:
            return
        want = reference(x, ref[0], ref[1], self.activation, residual)
        scale = float(want.abs().max()) if want.numel() else 0.0
        err = float((y - want).abs().max()) if want.numel() else 0.0
        self.quant_error = err / scale if scale > 0 else err
        self._measuring, self._ref = False, None


def measure_errors(gm: torch.fx.GraphModule, inputs: tuple) -> None:
    """Run ``gm`` once on ``inputs`` with every int8 module recording its ``quant_error``, then drop the
    fp32 weights they kept for it."""
    mods = [m for m in gm.modules() if isinstance(m, _Measured)]
    for m in mods:
        m._measuring = True
    try:
        with torch.no_grad():
            torch.fx.Interpreter(gm).run(*inputs)
    finally:
        for m in mods:
            m._measuring, m._ref = False, None


class Int8SparseLinear(_Measured, SparseLinear):
    """A CSR layer with int8 weights: the input is quantized per token at every call (see the module doc)."""

    def __init__(self, name: str, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                 activation: str | None, has_residual: bool, threads: int = 1) -> None:
        if not int8_kernel(fmt):
            raise NotImplementedError(f"{name}: no int8 kernel for format {fmt.label} (int8 runs CSR and dense)")
        if weight.dtype != torch.float32:
            raise NotImplementedError(f"{name}: int8 quantization of {weight.dtype} layers is not implemented "
                                      "(float32 models only)")
        super().__init__(name, fmt, weight, bias, activation, has_residual, threads)
        self._keep_reference(weight, bias)

    def _kernel_dtype(self, weight: torch.Tensor) -> str:
        return "i8"

    def _use_slabs(self, slabs: list) -> None:
        #: every row stores a multiple of 4 values (zero weights added): the VNNI kernel's quads; still CSR,
        #: so the 16-bit-lane kernel runs on the same buffers (small N, a host without VNNI after a load)
        self.quads = vnni_host()
        if self.quads:
            slabs = [(_quad_packed(p), b, rows) for p, b, rows in slabs]
        super()._use_slabs(slabs)

    def _pack(self, w: torch.Tensor, bias: torch.Tensor | None, threads: int):
        """Quantize the weight per output channel, then pack the integer values (as floats) by slab."""
        wq, scale = quantize_rows(w)
        widest = int((wq != 0).sum(1).max()) if wq.numel() else 0
        if widest > ROW_NONZERO_LIMIT:  # the int32 sums could overflow (|w x| <= 127 * 127 per product)
            raise NotImplementedError(f"{self.layer_name}: a row with {widest} nonzeros: int8 sums are exact in "
                                      f"int32 up to {ROW_NONZERO_LIMIT} per row")
        #: the per-output-channel weight scales [out]
        self.weight_scale = scale
        slabs = super()._pack(wq.float(), bias, threads)
        self._scales = []
        for packed, _, (r0, r1) in slabs:
            s = np.zeros(packed.padded_shape[0], dtype=np.float32)
            s[: r1 - r0] = scale[r0:r1].numpy()
            self._scales.append(aligned_copy(s))
        return slabs

    def _narrow(self, name: str, buf):
        if name == "values":
            return aligned_copy(np.asarray(buf).astype(np.int8))
        return super()._narrow(name, buf)

    def _bind(self) -> None:
        super()._bind()
        for args, s in zip(self._fixed_args, self._scales, strict=True):
            args.append(ArgRef(numpy_descriptor(s), s))
        #: per slab, the VNNI kernel's fixed arguments: pos, crd, the values as i32 quads, 128 * row sums, sw
        self._vnni_args: list[list[ArgRef]] = []
        self._vnni_kernels: dict[int, list[CompiledKernel]] = {}
        if not self.quads:
            return
        for args, bufs in zip(self._fixed_args, self._kernel_buffers, strict=True):
            pos, vals = bufs[0], bufs[2]
            quads = vals.view(np.int32)
            csum = np.concatenate([[0], np.cumsum(vals, dtype=np.int64)])
            wsum = aligned_copy((U8_OFFSET * (csum[pos[1:]] - csum[pos[:-1]])).astype(np.int32))
            self._vnni_args.append([args[0], args[1], ArgRef(numpy_descriptor(quads), quads),
                                    ArgRef(numpy_descriptor(wsum), wsum), args[3]])

    _TRANSIENT = (*SparseLinear._TRANSIENT, "_ref", "_vnni_args", "_vnni_kernels")
    #: a layer saved before the VNNI kernel existed has plain CSR rows (no quads)
    quads = False

    def _vnni_at(self, n: int) -> bool:
        """Whether a call with ``n`` input rows runs the VNNI kernel."""
        return self.quads and n >= knobs.get("int8_vnni_min_n") and vnni_host()

    def vnni_spec(self, packed: PackedWeight, n: int) -> emit_int8_vnni.VnniSpec:
        """The VNNI kernel spec of one slab for ``n`` rows of input."""
        rows, cols = packed.padded_shape
        return emit_int8_vnni.VnniSpec(rows, cols, n, bias=self.slabs[0][1] is not None,
                                       activation=self.activation, residual=self.has_residual,
                                       index_bits=self.index_bits)

    def kernels(self, n: int) -> list[CompiledKernel]:
        """The compiled kernel of every slab for ``n`` input rows: the VNNI kernel where it runs."""
        if not self._vnni_at(n):
            return super().kernels(n)
        ks = self._vnni_kernels.get(n)
        if ks is None:
            ks = self._vnni_kernels[n] = [compile_kernel(self.vnni_spec(p, n)) for p, _, _ in self.slabs]
        return ks

    def spec(self, packed: PackedWeight, n: int) -> KernelSpec:
        return dataclasses.replace(super().spec(packed, n), form="scatter", k_tile=0, vl=0)

    def _flat_at(self, n: int) -> bool:
        return False

    def _scatter_input(self, x2: torch.Tensor, n: int):
        """The input quantized per token, as Xq^T [cols, N] int8, and its scales [N]."""
        cols = self.slabs[0][0].padded_shape[1]
        xq, sx = quantize_rows(x2)
        xt = torch.zeros(cols, n, dtype=torch.int8)
        xt[: self.in_features] = xq.t()
        return (xt, sx), [ArgRef(torch_descriptor(xt)), ArgRef(torch_descriptor(sx))]

    def _input_pass(self, n: int, transposed: bool) -> CompiledKernel:
        """The VNNI input pass for ``n`` rows from X (emit_int8_quant) or X^T (emit_int8_quant_t)."""
        key = ("quant_t" if transposed else "quant", n)
        kern = self._vnni_kernels.get(key)
        if kern is None:
            cols = self.slabs[0][0].padded_shape[1]
            spec = (emit_int8_quant_t.QuantTSpec if transposed else emit_int8_quant.QuantSpec)(n, self.in_features, cols)
            kern = self._vnni_kernels[key] = compile_kernel(spec)
        return kern

    def prepare(self, n: int) -> list[CompiledKernel]:
        """Every kernel a call with ``n`` rows may run, compiled now: with VNNI, both input passes too."""
        ks = super().prepare(n)
        if self._vnni_at(n):
            ks += [self._input_pass(n, False), self._input_pass(n, True)]
        return ks

    def _vnni_input(self, x2: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Xu^T [cols, padded_n(n)] (u8 values as int8 bits: xq + 128) with its N positions in the kernel's
        unpack order, and the scales sx [n]: one MLIR pass (emit_int8_quant; torch's ops took twice the
        kernel's time), reading X^T directly when the input is a transposed view (emit_int8_quant_t: what a
        previous CSR layer returns)."""
        cols, n_pad = self.slabs[0][0].padded_shape[1], emit_int8_vnni.padded_n(n)
        transposed = not x2.is_contiguous() and x2.t().is_contiguous()
        kern = self._input_pass(n, transposed)
        xin = x2.t() if transposed else x2.contiguous()
        sx, inv = torch.empty(n), torch.empty(n)
        # positions no token fills, and rows past in_features, are never read into a stored sum
        xt = torch.empty((cols, n_pad), dtype=torch.int8)
        kern.call_refs([ArgRef(torch_descriptor(xin)), ArgRef(torch_descriptor(sx)), ArgRef(torch_descriptor(inv)),
                        ArgRef(torch_descriptor(xt.view(torch.int32).reshape(-1)))])
        return xt, sx

    def _run_io(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        ok = x.device.type == "cpu" and x.dim() >= 1 and x.shape[-1] == self.in_features
        n = math.prod(x.shape[:-1]) if ok else 0
        if n == 0 or not self._vnni_at(n):  # bad inputs get SparseLinear's errors
            return super()._run_io(x, residual)
        lead = x.shape[:-1]
        x2 = x.reshape(n, self.in_features)
        r2 = residual.reshape(n, self.out_features) if residual is not None else None
        kernels = self.kernels(n)
        xt, sx = self._vnni_input(x2, n)
        x_args = [ArgRef(torch_descriptor(xt)), ArgRef(torch_descriptor(sx))]
        total_rows = sum(p.padded_shape[0] for p, _, _ in self.slabs)
        out = torch.empty((total_rows, n))
        if knobs.get("poison_outputs"):
            out.fill_(float("nan"))
        tasks, offset = [], 0
        for s, ((packed, _, (r0, r1)), kern) in enumerate(zip(self.slabs, kernels, strict=True)):
            rows = packed.padded_shape[0]
            args = [*self._vnni_args[s], *x_args]
            if self._bias_args[s] is not None:
                args.append(self._bias_args[s])
            res = None
            if r2 is not None:
                res = torch.zeros((rows, n))
                res[: r1 - r0] = r2[:, r0:r1].t()
                args.append(ArgRef(torch_descriptor(res)))
            o = out[offset : offset + rows]
            args.append(ArgRef(torch_descriptor(o)))
            offset += rows
            tasks.append((kern, args, (res, o, xt, sx)))  # the descriptors hold raw pointers: keep them alive
        run_slabs(tasks, self.stored, n)
        if total_rows != self.out_features:
            out = self._gather_rows(out)
        return out.t().reshape(*lead, self.out_features)

    def run(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        self._no_grad(x, residual)
        y = super().run(x, residual)
        self._record(x, residual, y)
        return y

    def enable_training(self, weight, bias) -> None:
        raise NotImplementedError(f"{self.layer_name}: gradients through int8 layers are not implemented")


class Int8DenseLinear(_Measured, SparseModule):
    """A dense layer with int8 weights: oneDNN's int8 GEMM on the per-token quantized input (module doc)."""

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None,
                 has_residual: bool) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise InputError(f"{name}: weight must be 2-d [out, in], got shape {tuple(weight.shape)}")
        if weight.dtype != torch.float32:
            raise NotImplementedError(f"{name}: int8 quantization of {weight.dtype} layers is not implemented "
                                      "(float32 models only)")
        self.layer_name = name
        self.out_features, self.in_features = weight.shape
        self.activation = activation
        self.has_residual = has_residual
        #: Wq [out, in] int8 and its per-output-channel scales
        self.weight_q, self.weight_scale = quantize_rows(weight.detach())
        self.bias = None if bias is None else bias.detach().float().clone()
        self.stored = int(weight.numel())
        self.nbytes = int(weight.numel()) + 4 * self.out_features
        self._prepack()
        self._keep_reference(weight, bias)

    def _prepack(self) -> None:
        """oneDNN's packed weight (an opaque tensor: rebuilt on load, never pickled)."""
        self._packed = torch.ops.onednn.qlinear_prepack(self.weight_q, [1, self.in_features])
        self._ones = torch.ones(self.out_features)
        self._zp = torch.zeros(self.out_features, dtype=torch.int64)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_packed", "_ref", "_quant")}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._prepack()

    def int32_sums(self, xq: torch.Tensor, offset: int = DENSE_XMAX + 1) -> torch.Tensor:
        """``Xq Wq^T`` of an int8 [n, in] input, as float32 (the int32 sums, exact while they stay below
        2**24). oneDNN takes u8 activations: ``xq + offset`` must lie in [0, 255] (the default offset: values
        in [-DENSE_XMAX - 1, DENSE_XMAX + 1], what AVX2's saturating pairs sum exactly; with VNNI, 128 and
        any int8 value)."""
        return self._u8_sums((xq.to(torch.int16) + offset).to(torch.uint8), offset)

    def _u8_sums(self, xu: torch.Tensor, offset: int) -> torch.Tensor:
        """oneDNN's GEMM of u8 activations ``xu`` (zero point ``offset``) with Wq, as float32."""
        return torch.ops.onednn.qlinear_pointwise(xu, 1.0, offset, self._packed, self._ones, self._zp,
                                                  None, 1.0, 0, torch.float32, "none", [], "")

    def _quantize_u8(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``quantize_rows(x2)`` offset to u8 (xq + 128) and the scales, by one MLIR pass
        (emit_int8_quant_rows: torch's ops took a third of a 768x3072 layer at N = 128)."""
        n = x2.shape[0]
        quant = self.__dict__.setdefault("_quant", {})
        kern = quant.get(n)
        if kern is None:
            kern = quant[n] = compile_kernel(emit_int8_quant_rows.QuantRowsSpec(n, self.in_features))
        x2 = x2.contiguous()
        sx, xu = torch.empty(n), torch.empty((n, self.in_features), dtype=torch.uint8)
        kern.call_refs([ArgRef(torch_descriptor(x2)), ArgRef(torch_descriptor(sx)),
                        ArgRef(torch_descriptor(xu.view(torch.int8)))])
        return xu, sx

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``act(x W^T + bias) + residual`` through int8 (x [..., in] float32)."""
        if x.dtype != torch.float32:
            raise InputError(f"{self.layer_name}: input dtype {x.dtype}, this int8 layer takes float32")
        self._no_grad(x, residual)
        if x.shape[-1] != self.in_features:
            raise InputError(f"{self.layer_name}: input shape {tuple(x.shape)}, expected [..., {self.in_features}]")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        r2 = residual.reshape(-1, self.out_features) if residual is not None else None
        n = x2.shape[0]
        if n == 0:
            y = torch.zeros(0, self.out_features)
        elif vnni_host():
            # oneDNN multiplies with vpdpbusd here: no 16-bit saturation, so 8-bit activations in one GEMM
            # (measured exact at +-127 extremes, 768 inputs)
            xu, sx = self._quantize_u8(x2)
            y = self._u8_sums(xu, U8_OFFSET).mul_(sx[:, None]).mul_(self.weight_scale)
        elif n <= knobs.get("int8_dense_split_max_n"):
            # 8-bit activations, exactly: xq = a + b with a = floor(xq / 2) in [-64, 63] and b in [-63, 64]
            # both fit the 7-bit path; one GEMM on [a; b] streams the weight once (small N is bytes-bound)
            xq, sx = quantize_rows(x2)
            a = torch.div(xq, 2, rounding_mode="floor").to(torch.int8)
            both = self.int32_sums(torch.cat([a, (xq - a).to(torch.int8)]))
            y = (both[:n] + both[n:]).mul_(sx[:, None]).mul_(self.weight_scale)
        else:
            xq, sx = quantize_rows(x2, DENSE_XMAX)
            y = self.int32_sums(xq).mul_(sx[:, None]).mul_(self.weight_scale)
        y = _epilogue(y, self.bias, self.activation, r2).reshape(*lead, self.out_features)
        self._record(x, residual, y)
        return y

    def extra_repr(self) -> str:
        return f"{self.layer_name}: {self.in_features}->{self.out_features} int8 dense (oneDNN qlinear)"


class Float32Linear(SparseModule):
    """A dense layer kept in float32 because its int8 error was above ``quantize_max_error``: torch's f32
    linear and the epilogue the int8 module had fused (bias, activation, residual)."""

    def __init__(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None,
                 has_residual: bool) -> None:
        super().__init__()
        self.layer_name = name
        self.out_features, self.in_features = weight.shape
        self.activation, self.has_residual = activation, has_residual
        self.weight = weight.detach().float().clone()
        self.bias = None if bias is None else bias.detach().float().clone()
        self.stored = int(weight.numel())
        self.nbytes = 4 * self.stored

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``act(x W^T + bias) + residual`` in float32 (x [..., in] float32)."""
        if x.dtype != torch.float32:
            raise InputError(f"{self.layer_name}: input dtype {x.dtype}, this layer takes float32")
        return _epilogue(torch.nn.functional.linear(x, self.weight), self.bias, self.activation, residual)

    def extra_repr(self) -> str:
        return f"{self.layer_name}: {self.in_features}->{self.out_features} float32 dense (int8 error too large)"


def _quad_packed(packed: PackedWeight) -> PackedWeight:
    """``packed`` (CSR) with every row's values padded to a multiple of 4 (emit_int8_vnni.pad_quads)."""
    pos, crd, vals = (packed.buffers[k] for k in ("pos1", "crd1", "values"))
    pos4, crd4, vals4 = emit_int8_vnni.pad_quads(pos, crd, vals)
    return dataclasses.replace(packed, buffers={"pos1": aligned_copy(pos4), "crd1": aligned_copy(crd4),
                                                "values": aligned_copy(vals4)})


def int8_module(name: str, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                activation: str | None, has_residual: bool, threads: int) -> torch.nn.Module:
    """The int8 runtime module of a layer select gave format ``fmt`` (CSR or dense)."""
    if fmt.label == "dense":
        return Int8DenseLinear(name, weight, bias, activation, has_residual)
    return Int8SparseLinear(name, fmt, weight, bias, activation, has_residual, threads)
