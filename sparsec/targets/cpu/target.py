"""The CPU target: MLIR-compiled kernels (sparsec/codegen/mlir) run by the modules of this folder.

Everything the compiler asks of the CPU backend is answered here: the calibrated cost model, which
layers it keeps dense, which runtime module computes each operand kind (SparseLinear and its siblings),
the gather kernels, what autotune times, and the ``mlir`` / ``llvm`` stage texts.
"""

from __future__ import annotations

import dataclasses

import torch

from sparsec.formats.base import SparseFormat
from sparsec.formats.cost import DEFAULT_MACHINE, Machine, lowp_default_machine
from sparsec.runtime.module import SparseModule
from sparsec.targets.base import Target
from sparsec.targets.cpu import calibrate

#: 16-bit dtypes the CPU kernels take besides float32
LOWP = (torch.bfloat16, torch.float16)


class CpuTarget(Target):
    """``target="cpu"``: MLIR sparse_tensor kernels JIT-compiled for this CPU, called through ctypes."""

    name = "cpu"
    codegen_stages = ("mlir", "llvm")
    kernel_language = "MLIR"
    tunes_marked_layers = True
    gather_kinds = ("sddmm", "sum")
    runs_source_when_dense = True
    quantize_modes = ("int8",)

    def machine(self, threads: int, calibrate_on: bool, pinned: bool) -> tuple[Machine, str]:
        """The calibrated rates of this CPU at ``threads`` (cached on disk), or the built-in ones."""
        if calibrate_on and not pinned:  # saved formats need no rates
            return calibrate.machine(threads), f"calibration at {threads} thread(s): {calibrate.describe(threads)}"
        status = ("built-in rates: the saved model's formats are kept, so no rates are measured" if pinned
                  else "built-in rates (calibrate=False)")
        return dataclasses.replace(DEFAULT_MACHINE, threads=threads), status

    def layer_machine(self, layer, ctx) -> Machine:
        """A 16-bit layer's rates come from its own calibration (torch's bf16/fp16 GEMM and the 16-bit
        CSR kernels, measured), or the built-in 16-bit rates without one. Formats without 16-bit kernels
        (BSR, N:M, COO run f32 kernels between casts) keep the fp32 rates of their kernel family; the
        casts are not priced."""
        if layer.dtype not in LOWP:
            return ctx.machine
        if ctx.options.calibrate and not ctx.pinned_formats:
            return calibrate.machine(ctx.machine.threads, layer.dtype)
        return lowp_default_machine(layer.dtype, ctx.machine.threads)

    def machine_key(self, threads: int, dtype: torch.dtype = torch.float32) -> str:
        """The calibration's key: CPU, cores, threads, package versions (and a 16-bit dtype)."""
        return calibrate.machine_key(threads, dtype)

    def rejects_layer(self, layer) -> str | None:
        """Dtypes without CPU kernels; 16-bit weights of kinds other than Linear."""
        if layer.dtype not in (torch.float32, *LOWP):
            return f"dtype {layer.dtype} (the CPU kernels take fp32/bf16/fp16)"
        if layer.dtype in LOWP and layer.m.kind != "linear":
            return f"dtype {layer.dtype}: 16-bit CPU kernels run Linear-shaped weights only"
        return None

    def module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
               threads: int) -> SparseModule:
        """The module of the format's own kernels (``fmt.own_kernels``: CompactLinear for "bitmap"), else SparseLinear or the module
        of the match's kind (left operand, diag scaling, conv2d, bucketed rows)."""
        from sparsec.targets.cpu.sparse_conv import SparseConv2d
        from sparsec.targets.cpu.sparse_left import SparseLeft
        from sparsec.targets.cpu.sparse_linear import SparseLinear
        from sparsec.targets.cpu.sparse_rows import BucketedSparseLinear

        m = layer.m
        common = (layer.name, fmt, weight, bias, layer.activation, layer.residual is not None, threads)
        if fmt.own_kernels is not None:  # a format with kernels of its own (accepts_layer admitted this kind)
            return self._own_module(fmt)(*common)
        if m.kind == "conv2d":
            return SparseConv2d(*common, **m.params)
        if m.kind in ("left", "diag"):
            return SparseLeft(*common)
        if m.params.get("bucket_rows"):
            return BucketedSparseLinear(*common)
        return SparseLinear(*common)

    def rejects_quantized(self, mode: str, fmt: SparseFormat) -> str | None:
        """int8 runs the CSR kernel and oneDNN's dense int8 GEMM (sparsec/targets/cpu/int8_linear.py)."""
        from sparsec.targets.cpu.int8_linear import int8_kernel

        return None if int8_kernel(fmt) else "no int8 kernel for this format (int8 runs CSR and dense)"

    def quantized_module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                         threads: int) -> torch.nn.Module:
        """Int8SparseLinear (CSR) or Int8DenseLinear."""
        from sparsec.targets.cpu.int8_linear import int8_module

        return int8_module(layer.name, fmt, weight, bias, layer.activation, layer.residual is not None, threads)

    def measure_quantization(self, gm, inputs: tuple) -> None:
        """Each int8 module's ``quant_error`` on ``inputs`` (sparsec/targets/cpu/int8_linear.py)."""
        from sparsec.targets.cpu.int8_linear import measure_errors

        measure_errors(gm, inputs)

    def float_module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                     has_residual: bool, threads: int) -> torch.nn.Module:
        """The f32 SparseLinear of ``fmt`` (int8 layers are plain Linears in CSR), or Float32Linear for a
        dense layer."""
        from sparsec.targets.cpu.int8_linear import Float32Linear
        from sparsec.targets.cpu.sparse_linear import SparseLinear

        if fmt.label == "dense":
            return Float32Linear(layer.name, weight, bias, layer.activation, has_residual)
        return SparseLinear(layer.name, fmt, weight, bias, layer.activation, has_residual, threads)

    def linear_module(self, name: str, fmt: SparseFormat, weight: torch.Tensor, threads: int) -> SparseModule:
        """A plain SparseLinear, or the format's own module (what autotune times)."""
        from sparsec.targets.cpu.sparse_linear import SparseLinear

        cls = SparseLinear if fmt.own_kernels is None else self._own_module(fmt)
        return cls(name, fmt, weight, None, None, False, threads)

    def _own_module(self, fmt: SparseFormat) -> type[SparseModule]:
        """The runtime module class of a format that brings its own kernels (``fmt.own_kernels``)."""
        from sparsec.targets.cpu.compact_linear import CompactLinear
        from sparsec.targets.cpu.hybrid_linear import HybridLinear

        families = {"bitmap": CompactLinear, "hybrid": HybridLinear}
        if fmt.own_kernels not in families:
            raise NotImplementedError(f"format {fmt.label!r}: the CPU target has no {fmt.own_kernels!r} kernels "
                                      f"(known: {', '.join(families)})")
        return families[fmt.own_kernels]

    def trains_parameters(self, module: SparseModule) -> bool:
        """Whether ``module`` can give gradients to the model's own weight and bias (a plain SparseLinear
        or CompactLinear)."""
        from sparsec.targets.cpu.compact_linear import CompactLinear
        from sparsec.targets.cpu.sparse_linear import SparseLinear

        return type(module) in (SparseLinear, CompactLinear)

    def gather_module(self, kind: str, name: str, s: torch.Tensor, *args) -> SparseModule:
        """SparseSDDMM (``kind="sddmm"``) or SparseMaskedSum (``"sum"``, args: dims, keepdim)."""
        from sparsec.targets.cpu.sparse_gather import SparseMaskedSum, SparseSDDMM

        if kind == "sddmm":
            return SparseSDDMM(name, s)
        if kind == "sum":
            return SparseMaskedSum(name, s, *args)
        return super().gather_module(kind, name, s, *args)

    def time(self, layer, labels: list[str], weight: torch.Tensor, threads: int) -> dict[str, dict[str, float]]:
        """Times in the layer's dtype when it is 16-bit (the compiled layer runs in it: torch's bf16/fp16
        GEMM for dense, the 16-bit or cast f32 kernels, a format's own module), else in float32."""
        weight = weight.detach()
        return super().time(layer, labels, weight if weight.dtype in LOWP else weight.float(), threads)

    def codegen_text(self, layers: list, stage: str) -> str:
        """The MLIR (``mlir``) or LLVM IR (``llvm``) of every distinct kernel the layers run."""
        kernels = {}
        for layer in layers:
            if isinstance(layer.module, SparseModule):
                for k in layer.module.kernels(layer.n):
                    kernels[k.spec] = k
        return "\n".join(f"// kernel {k.spec.name}\n{getattr(k, stage)}" for k in kernels.values())
