"""``sparsec bench --target gpu``: run benchmarks/bench_gpu.py's ``main`` when a CUDA GPU is present."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NO_GPU = ("sparsec bench --target gpu: no CUDA GPU is available (torch.cuda.is_available() is False). "
          "The GPU benchmark times Triton kernels on an NVIDIA GPU; on this machine run the CPU benchmark "
          "(sparsec bench --target cpu).")
#: --quick for the GPU benchmark: one shape, two N
GPU_QUICK = ["--shapes", "4096x4096", "--n", "1,256"]


def find_bench_gpu() -> Path | None:
    """benchmarks/bench_gpu.py of the current directory's checkout, else of the checkout sparsec lives in."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = root / "benchmarks" / "bench_gpu.py"
        if path.is_file():
            return path
    return None


def run_gpu(out: Path | None, quick: bool, extra: list[str]) -> int:
    """Exit status of bench_gpu.py's main; 2 with a message when there is no GPU or no script."""
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    path = find_bench_gpu()
    if path is None:
        print("sparsec bench --target gpu: benchmarks/bench_gpu.py not found (it ships with the source "
              "checkout, not the installed package); run from the repository root", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("sparsec_bench_gpu", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    argv = ([str(out)] if out is not None else []) + (GPU_QUICK if quick else []) + extra
    return int(module.main(argv))
