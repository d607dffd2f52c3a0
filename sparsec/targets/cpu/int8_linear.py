"""int8 layers of ``sparse_compile(..., quantize="int8")``: dynamic per-token activations, per-channel weights.

Both kinds compute ``act((Xq Wq^T) * sx[n] * sw[o] + bias) + residual``: ``Wq`` holds the weight quantized
symmetrically per output channel (``sw[o] = max|W[o]| / 127``), ``Xq`` the input quantized symmetrically per
token at every call (``sx[n] = max|X[n]| / 127``), values in [-127, 127]; ``Xq Wq^T`` is summed exactly in
int32. ``Int8SparseLinear`` runs the int8 CSR kernel (sparsec/codegen/mlir/emit_int8.py), whose epilogue
dequantizes and applies bias, activation and residual; ``Int8DenseLinear`` runs oneDNN's int8 GEMM
(``torch.ops.onednn.qlinear_pointwise``, u8 x s8 with int32 sums) and the same epilogue as torch ops; its
activations keep 7 bits (``DENSE_XMAX``) above knob ``int8_dense_split_max_n`` rows; at or below it they keep
8 bits, split exactly into two 7-bit halves stacked into one GEMM. ``torch._int_mm`` is no option on this CPU: 590 ms for
128x768x3072, 40x torch's f32 GEMM (measured, 1 thread).

Each module measures its own quantization error once, on the compile's example inputs
(``measure_errors``): ``quant_error = max|y_int8 - y_fp32| / max|y_fp32|`` of the layer's output, the f32
reference computed from the unquantized weight on the same input. The report shows it per layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from sparsec import knobs
from sparsec.codegen.mlir import emit_int8
from sparsec.codegen.mlir.jit import ArgRef, numpy_descriptor, torch_descriptor
from sparsec.codegen.spec import KernelSpec
from sparsec.errors import InputError
from sparsec.formats.base import PackedWeight, SparseFormat, aligned_copy
from sparsec.runtime.module import SparseModule
from sparsec.targets.cpu.sparse_linear import SparseLinear

#: the largest magnitude of a quantized value (symmetric: -128 is never produced, so two products fit in i16)
QMAX = 127
def int8_kernel(fmt: SparseFormat) -> bool:
    """Whether ``fmt`` has an int8 CPU kernel (CSR)."""
    return emit_int8.supports(KernelSpec(fmt.label, fmt.level_map, 2, 2, 2, dtype="i8"))


#: the largest magnitude of a dense layer's quantized activation: oneDNN's AVX2 int8 GEMM multiplies
#: u8 x s8 pairs into saturating int16 (``vpmaddubsw``), exact only while 2 * 127 * |u8| fits, so the
#: activation (offset by 64 to u8) keeps 7 bits, as fbgemm's ``reduce_range`` does (measured: 8-bit
#: activations are off by up to 46000 of a 240000 sum)
DENSE_XMAX = 63


def quantize_rows(t: torch.Tensor, qmax: int = QMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of each row of the 2-d float ``t``: (q int8 in [-qmax, qmax], scale f32
    [rows]) with ``t ~= q * scale[:, None]``; an all-zero row gets scale 1. NaN in a row makes its scale NaN."""
    t = t.float()
    amax = t.abs().amax(dim=1) if t.shape[1] else torch.zeros(t.shape[0])
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.round(t / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
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

    _TRANSIENT = (*SparseLinear._TRANSIENT, "_ref")

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

    def _pack(self, w: torch.Tensor, bias: torch.Tensor | None, threads: int):
        """Quantize the weight per output channel, then pack the integer values (as floats) by slab."""
        wq, scale = quantize_rows(w)
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
            args.append(ArgRef(numpy_descriptor(s)))

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
        return {k: v for k, v in self.__dict__.items() if k not in ("_packed", "_ref")}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._prepack()

    def int32_sums(self, xq: torch.Tensor) -> torch.Tensor:
        """``Xq Wq^T`` of an int8 [n, in] input with values in [-DENSE_XMAX - 1, DENSE_XMAX + 1], as float32
        (the int32 sums, exact while they stay below 2**24)."""
        xu = (xq.to(torch.int16) + (DENSE_XMAX + 1)).to(torch.uint8)
        return torch.ops.onednn.qlinear_pointwise(xu, 1.0, DENSE_XMAX + 1, self._packed, self._ones, self._zp,
                                                  None, 1.0, 0, torch.float32, "none", [], "")

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


def int8_module(name: str, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                activation: str | None, has_residual: bool, threads: int) -> torch.nn.Module:
    """The int8 runtime module of a layer select gave format ``fmt`` (CSR or dense)."""
    if fmt.label == "dense":
        return Int8DenseLinear(name, weight, bias, activation, has_residual)
    return Int8SparseLinear(name, fmt, weight, bias, activation, has_residual, threads)
