"""Ahead-of-time compilation of every kernel variant for an NVIDIA ``GPUTarget``, no GPU needed.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` runs the whole pipeline
(ttir -> ttgir -> llir -> ptx -> cubin, the last with the ``ptxas`` bundled in the triton wheel) on a
machine without a GPU. The launch is built by the very ``plan_*`` functions the runtime wrappers
use, over ``meta`` tensors of a representative shape, so what is compiled here is what a GPU
launch of that shape would compile (same constexprs, launch parameters and alignment hints).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from . import _dual
from .bsr import bsr_kernel, plan_bsr
from .csr import csr_kernel, plan_csr
from .epilogue import epilogue_kernel, plan_epilogue
from .nm import nm_kernel, plan_nm

STAGES = ("ttir", "ttgir", "llir", "ptx", "cubin")
_KERNELS: dict[str, JITFunction] = {"bsr": bsr_kernel, "csr": csr_kernel, "nm": nm_kernel, "epilogue": epilogue_kernel}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class KernelVariant:
    """One compiled specialization: kernel family, dtype, its structural parameter and the epilogue.

    ``block`` is the BSR block (bh, bw); ``pattern`` the N:M pattern (n, m); ``n_rows`` the dense
    dimension N the launch parameters are chosen for (16 = decode regime, 2048 = batched regime);
    ``out_features``/``in_features`` the representative layer shape; ``tf32`` lets fp32 tiles use
    TF32 tensor cores.
    """

    kernel: str
    dtype: torch.dtype = torch.float16
    block: tuple[int, int] | None = None
    pattern: tuple[int, int] | None = None
    n_rows: int = 2048
    out_features: int = 4096
    in_features: int = 4096
    activation: str | None = "gelu"
    bias: bool = True
    residual: bool = True
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.kernel not in _KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; expected one of {sorted(_KERNELS)}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype}")
        if self.kernel == "bsr" and self.block is None:
            object.__setattr__(self, "block", (32, 32))
        if self.kernel == "nm" and self.pattern is None:
            object.__setattr__(self, "pattern", (2, 4))

    @property
    def name(self) -> str:
        """A readable unique name, e.g. ``bsr_32x32_fp16_n256_gelu_bias_res``."""
        parts = [self.kernel]
        if self.kernel == "bsr":
            parts.append(f"{self.block[0]}x{self.block[1]}")
        if self.kernel == "nm":
            parts.append(f"{self.pattern[0]}of{self.pattern[1]}")
        parts += [str(self.dtype).removeprefix("torch."), f"n{self.n_rows}", self.activation or "noact"]
        parts += ["bias"] if self.bias else []
        parts += ["res"] if self.residual else []
        parts += ["tf32"] if self.tf32 and self.dtype == torch.float32 else []
        return "_".join(parts)

    @property
    def uses_mma(self) -> bool:
        """Whether tensor-core MMA instructions are expected in the PTX.

        True for the ``tl.dot`` kernels on fp16/bf16 tiles, and on fp32 tiles when ``tf32`` is set
        (exact fp32 dots run on FMA units); BSR blocks narrower than 16 use no dot.
        """
        dot = self.kernel != "epilogue" and not (self.kernel == "bsr" and self.block[1] < 16)
        return dot and (self.dtype != torch.float32 or self.tf32)


def kernel_names() -> list[str]:
    """The kernel families: ``bsr``, ``csr``, ``nm`` and the standalone ``epilogue``."""
    return sorted(_KERNELS)


def kernel_variants() -> list[KernelVariant]:
    """Every variant the runtime launches, as compiled by CI for sm_80 and sm_90.

    Per dtype: BSR blocks 16x16, 32x32, 64x64 and 16x64 / 64x16, CSR, N:M 2:4, 1:4 and 4:8 in the
    batched regime (N=2048), the decode regime (N=16) of BSR 32x32, CSR and 2:4, and the standalone
    epilogue; plus the fp32 TF32 variants of BSR 32x32, CSR and 2:4, a BSR 4x4 block (outer-product
    path), and, once in fp16, every activation and the bare (no bias/residual) epilogue.
    """
    variants: list[KernelVariant] = []
    for dtype in _DTYPES:
        for block in ((16, 16), (32, 32), (64, 64), (16, 64), (64, 16)):
            variants.append(KernelVariant("bsr", dtype, block=block))
        variants.append(KernelVariant("csr", dtype))
        for pattern in ((2, 4), (1, 4), (4, 8)):
            variants.append(KernelVariant("nm", dtype, pattern=pattern))
        variants.append(KernelVariant("bsr", dtype, block=(32, 32), n_rows=16))
        variants.append(KernelVariant("csr", dtype, n_rows=16))
        variants.append(KernelVariant("nm", dtype, pattern=(2, 4), n_rows=16))
        variants.append(KernelVariant("epilogue", dtype))
    for kind, extra in (("bsr", {"block": (32, 32)}), ("csr", {}), ("nm", {"pattern": (2, 4)})):
        variants.append(KernelVariant(kind, torch.float32, tf32=True, **extra))  # type: ignore[arg-type]
    variants.append(KernelVariant("bsr", torch.float16, block=(4, 4)))
    for act in (None, "relu", "silu", "tanh"):
        variants.append(KernelVariant("epilogue", torch.float16, activation=act, bias=False, residual=False))
    return variants


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def plan_variant(v: KernelVariant) -> _dual.Launch:
    """Build the launch a GPU would make for variant ``v`` (over ``meta`` tensors; nothing runs)."""
    out_f, in_f, n = v.out_features, v.in_features, v.n_rows
    x = _meta(n, in_f, dtype=v.dtype)
    y = _meta(n, out_f, dtype=v.dtype)
    bias = _meta(out_f, dtype=v.dtype) if v.bias else None
    res = _meta(n, out_f, dtype=v.dtype) if v.residual else None
    i32 = torch.int32
    if v.kernel == "bsr":
        bh, bw = v.block
        rows = -(-out_f // bh)
        nblocks = rows * -(-in_f // bw) // 10  # 90% block sparsity; only the dtype reaches the compiler
        return plan_bsr(x, _meta(rows + 1, dtype=i32), _meta(nblocks, dtype=i32), _meta(nblocks, bh, bw, dtype=v.dtype),
                        (bh, bw), out_f, y, bias, v.activation, res, interpret=False, tf32=v.tf32)
    if v.kernel == "csr":
        nnz = out_f * in_f // 20
        return plan_csr(x, _meta(out_f + 1, dtype=i32), _meta(nnz, dtype=i32), _meta(nnz, dtype=v.dtype), out_f, y,
                        bias, v.activation, res, interpret=False, tf32=v.tf32)
    if v.kernel == "nm":
        keep, m = v.pattern
        width = -(-in_f // m) * keep
        return plan_nm(x, _meta(out_f, width, dtype=v.dtype), _meta(out_f, width, dtype=torch.uint8), keep, m, y,
                       bias, v.activation, res, interpret=False, tf32=v.tf32)
    return plan_epilogue(_meta(n, out_f, dtype=v.dtype), y, bias, v.activation, res)


def compile_variant(v: KernelVariant, arch: int = 80) -> dict[str, str | bytes]:
    """Compile variant ``v`` for ``sm_<arch>`` and return its stages (see :func:`compile_for_target`)."""
    if isinstance(arch, bool) or not isinstance(arch, int) or arch < 75:
        raise ValueError(f"arch must be an int compute capability >= 75 (80 = A100, 90 = H100), got {arch!r}")
    launch = plan_variant(v)
    signature, constexprs, attrs = _dual.signature(launch)
    src = ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(launch.options))
    return {stage: compiled.asm[stage] for stage in STAGES}


def compile_for_target(
    kernel_name: str,
    arch: int = 80,
    dtype: torch.dtype = torch.float16,
    **variant: object,
) -> dict[str, str | bytes]:
    """Compile one kernel variant for an NVIDIA GPU of compute capability ``arch``; no GPU needed.

    Args:
        kernel_name: ``"bsr"``, ``"csr"``, ``"nm"`` or ``"epilogue"``.
        arch: 80 (A100, ``sm_80``), 90 (H100, ``sm_90a``), or another compute capability >= 75.
        dtype: torch.float32, torch.float16 or torch.bfloat16.
        **variant: other :class:`KernelVariant` fields, e.g. ``block=(64, 64)``, ``pattern=(1, 4)``,
            ``n_rows=16``, ``activation="relu"``, ``bias=False``, ``residual=False``.

    Returns:
        ``{"ttir": str, "ttgir": str, "llir": str, "ptx": str, "cubin": bytes}``.
    """
    return compile_variant(KernelVariant(kernel_name, dtype, **variant), arch)  # type: ignore[arg-type]


def compile_all(arch: int = 80) -> dict[str, dict[str, str | bytes]]:
    """Compile every variant of :func:`kernel_variants` for ``sm_<arch>``: ``{variant.name: stages}``."""
    return {v.name: compile_variant(v, arch) for v in kernel_variants()}


def kernel_source(kernel_name: str) -> str:
    """Return the Triton-Python source of a kernel family and the helpers it calls (``ir("triton")``)."""
    if kernel_name not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel_name!r}; expected one of {sorted(_KERNELS)}")
    seen: list[JITFunction] = []

    def visit(fn: JITFunction) -> None:
        if any(fn is s for s in seen):
            return
        seen.append(fn)
        for name, value in fn.fn.__globals__.items():
            if isinstance(value, JITFunction) and re.search(rf"\b{name}\(", fn.src):
                visit(value)

    visit(_KERNELS[kernel_name])
    return "\n\n".join(inspect.getsource(f.fn) for f in seen)


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, spill (local) memory, static shared memory and stack of a cubin's kernel.

    Read with the ``cuobjdump`` shipped in the triton wheel (no GPU needed); ``{}`` if it is missing.
    ``STACK`` (the per-thread stack frame) or ``LOCAL`` > 0 means register spills here.
    """
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    usage: dict[str, int] = {}
    for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text):
        usage.setdefault(key, int(value))
    return usage


def evidence_table(archs: tuple[int, ...] = (80, 90)) -> str:
    """Compile every variant for each arch and return a markdown table of its tensor-core instructions.

    Columns: variant, N-tile rows and warps chosen by the cost model, then per arch the distinct
    MMA instructions found in the PTX ("none (FMA)" when there are none) and registers per thread.
    """
    lines = ["| variant | BLOCK_N | warps | " + " | ".join(f"sm_{a} MMA in PTX | sm_{a} regs" for a in archs) + " |",
             "|---|---:|---:|" + "---|---:|" * len(archs)]
    for v in kernel_variants():
        launch = plan_variant(v)
        cells = []
        for arch in archs:
            stages = compile_variant(v, arch)
            found = sorted({line.split()[0] for line in stages["ptx"].splitlines()
                            if "mma.sync.aligned" in line or "wgmma.mma_async" in line})
            cells += [", ".join(f"`{f}`" for f in found) or "none (FMA)",
                      str(resource_usage(stages["cubin"]).get("REG", "?"))]
        lines.append(f"| {v.name} | {launch.constexprs.get('BLOCK_N')} | {launch.options['num_warps']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(evidence_table())
