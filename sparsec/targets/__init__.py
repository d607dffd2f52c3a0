"""sparsec.targets: one object per backend (the Target interface, base.py), one folder per backend.

``cpu/`` holds the CPU backend (MLIR kernels, their runtime modules, calibration, threads, target.py);
``gpu/`` the Triton backend, as ``"gpu"`` (CUDA) and ``"interpret"`` (Triton's interpreter on the CPU).
``get_target(name)`` returns the Target a compile's passes receive as ``ctx.target``.
"""

from __future__ import annotations

from sparsec.targets.base import Target

#: every target name ``sparse_compile(target=...)`` takes besides "auto", in the order stages are listed
TARGET_NAMES = ("cpu", "gpu", "interpret")


def get_target(name: str) -> Target:
    """The Target called ``name`` ("cpu", "gpu" or "interpret"); ValueError for any other name."""
    if name == "cpu":
        from sparsec.targets.cpu.target import CpuTarget

        return CpuTarget()
    if name in ("gpu", "interpret"):
        from sparsec.targets.gpu.target import GpuTarget

        return GpuTarget(interpret=name == "interpret")
    raise ValueError(f"target {name!r} is not one of {TARGET_NAMES}")


__all__ = ["Target", "TARGET_NAMES", "get_target"]
