"""The GPU targets: Triton kernels (sparsec/codegen/triton) run by TritonLinear.

``target="gpu"`` runs them compiled on a CUDA GPU; ``target="interpret"`` runs the very same kernels in
Triton's interpreter on the CPU (TRITON_INTERPRET semantics, for machines without a GPU). Everything the
compiler asks of these backends is answered here: the GPU cost model, which layers and formats have a
Triton kernel, the runtime module, what autotune times, and the ``triton`` / ``ttgir`` / ``ptx`` stages.
"""

from __future__ import annotations

import hashlib
import importlib.metadata

import torch

from sparsec.formats.base import SparseFormat
from sparsec.formats.cost import GPU_MACHINE, Machine
from sparsec.host import cpu_name
from sparsec.runtime.module import SparseModule
from sparsec.targets.base import Target
from sparsec.targets.gpu.triton_linear import TritonLinear, triton_kernel
from sparsec.version import __version__


class GpuTarget(Target):
    """``target="gpu"`` (``interpret=False``) or ``target="interpret"`` (``interpret=True``)."""

    codegen_stages = ("triton", "ttgir", "ptx")
    kernel_language = "Triton"

    def __init__(self, interpret: bool) -> None:
        self.interpret = interpret
        self.name = "interpret" if interpret else "gpu"

    def unavailable(self) -> str | None:
        """Both need the triton package; "gpu" also a visible CUDA GPU."""
        from sparsec.codegen.triton import cuda_available, triton_available

        if not triton_available():
            return f"target={self.name!r} needs the triton package (pip install triton)"
        if not self.interpret and not cuda_available():
            return "target='gpu' needs a CUDA GPU and none is visible; use target='cpu' or 'interpret'"
        return None

    def machine(self, threads: int, calibrate_on: bool, pinned: bool) -> tuple[Machine, str]:
        """The GPU cost model's built-in rates (nothing is calibrated on a GPU)."""
        return GPU_MACHINE, "the GPU cost model's built-in rates (uncalibrated; calibration measures the CPU only)"

    def machine_key(self, threads: int, dtype: torch.dtype = torch.float32) -> str:
        """The device (the GPU's name; the host CPU's for the interpreter), the dtype and package versions."""
        device = torch.cuda.get_device_name() if not self.interpret and torch.cuda.is_available() else cpu_name()
        try:
            triton = importlib.metadata.version("triton")
        except importlib.metadata.PackageNotFoundError:
            triton = "none"
        parts = [self.name, device, str(dtype), torch.__version__, triton, __version__]
        return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]

    def rejects_layer(self, layer) -> str | None:
        """Only Linear-shaped weights (the kernels compute ``x @ W^T``) in fp32/fp16/bf16."""
        if layer.m.kind != "linear":
            return f"the GPU path runs Linear-shaped weights only (this is {layer.m.kind})"
        if layer.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return f"dtype {layer.dtype} (the GPU kernels take fp32/fp16/bf16)"
        return None

    def rejects(self, layer, fmt: SparseFormat) -> str | None:
        """A format runs here when its level map is one a Triton kernel family reads (csr, bsr, nm)."""
        return None if triton_kernel(fmt) is not None else "no Triton kernel for this format"

    def module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
               threads: int) -> SparseModule:
        """TritonLinear with the layer's activation and residual fused."""
        return TritonLinear(layer.name, fmt, weight, bias, layer.activation, layer.residual is not None,
                            interpret=self.interpret)

    def linear_module(self, name: str, fmt: SparseFormat, weight: torch.Tensor, threads: int) -> SparseModule:
        """A plain TritonLinear (what autotune times)."""
        return TritonLinear(name, fmt, weight, None, None, False, interpret=self.interpret)

    def tune_threads(self, threads: int) -> int:
        """One: a Triton module has no thread count of its own."""
        return 1

    def sync(self) -> None:
        """Wait for the GPU's queued kernels (the interpreter runs synchronously)."""
        if not self.interpret and torch.cuda.is_available():
            torch.cuda.synchronize()

    def time(self, layer, labels: list[str], weight: torch.Tensor, threads: int) -> dict[str, dict[str, float]]:
        """Wall times of dense and TritonLinear candidates on the weight's device and dtype. On a GPU the
        host's CPU time says nothing about the kernel, so "cpu1" repeats the wall times there."""
        measured = super().time(layer, labels, weight.detach(), 1)
        if not self.interpret:
            measured["cpu1"] = dict(measured["wall"])
        return measured

    def codegen_text(self, layers: list, stage: str, arch: int = 90) -> str:
        """Triton source, or the ttgir / PTX compiled for ``sm_{arch}``, of every distinct GPU kernel."""
        from sparsec.codegen import triton as tk

        seen, parts = set(), []
        for layer in layers:
            mod = layer.module
            if not isinstance(mod, TritonLinear):
                continue
            if stage == "triton":
                key = mod.family
                text = tk.kernel_source(mod.family) if key not in seen else None
            else:
                variant = mod.variant()
                key = (mod.family, str(mod.dtype), tuple(sorted(variant.items())))
                text = None
                if key not in seen:
                    text = tk.compile_for_target(mod.family, arch=arch, dtype=mod.dtype, **variant)[stage]
            if text is not None:
                seen.add(key)
                parts.append(f"// {layer.name}: {mod.family} kernel\n{text}")
        return "\n".join(parts)
