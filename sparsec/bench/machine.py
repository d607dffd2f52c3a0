"""What the results depend on: CPU, cores, threads, library versions, commit, load."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

from sparsec.host import cpu_name


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512vl") if f in flags) or "-"
    except OSError:
        pass
    return "?"


def _mem_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "not a git checkout"
    return head.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine_info(threads: int) -> dict:
    """Everything about this machine and software a timing depends on."""
    import sparsec
    from sparsec.targets.cpu.threads import default_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = _mem_gib()
    return {
        "cpu": cpu_name(), "cpu_flags": _cpu_flags(), "cores": cores, "logical_cpus": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None, "os": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_mlir": _version("torch-mlir"),
        "numpy": _version("numpy"), "scipy": _version("scipy"), "sparsec": sparsec.__version__,
        "commit": _git_commit(), "torch_threads": threads, "sparsec_threads": default_threads(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
