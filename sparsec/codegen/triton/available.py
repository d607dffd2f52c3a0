"""Availability checks and the interpret-mode switch for the Triton kernel layer.

Two execution modes coexist in one process:

* **compiled**: the kernel is a ``triton.runtime.JITFunction`` launched on CUDA tensors;
* **interpreted**: the same Python source is run by Triton's CPU interpreter on CPU tensors.

Triton itself decides between the two once, when ``@triton.jit`` decorates a function, by reading
``TRITON_INTERPRET``. sparsec does not rely on that: every kernel is built as a ``JITFunction``
explicitly and its interpreted twin is created on demand (see ``_dual.py``), so the mode is a
per-call decision made here.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

import torch

from sparsec import knobs

_override: bool | None = None


def triton_available() -> bool:
    """Return True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def cuda_available() -> bool:
    """Return True when a CUDA GPU is visible to torch (compiled kernels need one)."""
    return bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0


def env_interpret() -> bool:
    """Return True when ``TRITON_INTERPRET`` asks for the interpreter (``1``/``true``/``yes``/``on``)."""
    return bool(knobs.get("triton_interpret"))


def set_interpret(flag: bool | None) -> None:
    """Force (True), forbid (False) or reset to automatic (None) the interpreter for every launch.

    This is the switch the compiler's ``target="interpret"`` uses; it overrides ``TRITON_INTERPRET``.
    """
    global _override
    _override = flag


def get_interpret_override() -> bool | None:
    """Return the value last given to :func:`set_interpret` (None = automatic)."""
    return _override


@contextlib.contextmanager
def interpret_mode(flag: bool = True) -> Iterator[None]:
    """Context manager form of :func:`set_interpret` that restores the previous setting on exit."""
    previous = _override
    set_interpret(flag)
    try:
        yield
    finally:
        set_interpret(previous)


def should_interpret(device: torch.device, interpret: bool | None = None) -> bool:
    """Decide whether a launch on tensors living on ``device`` runs in the interpreter.

    Precedence: the per-call ``interpret`` argument, then :func:`set_interpret`, then
    ``TRITON_INTERPRET``, then the device (CPU tensors -> interpreter, CUDA tensors -> compiled).
    """
    if interpret is not None:
        choice = interpret
    elif _override is not None:
        choice = _override
    elif env_interpret():
        choice = True
    else:
        choice = device.type != "cuda"
    if not choice and device.type != "cuda":
        raise RuntimeError(
            f"compiled Triton kernels need CUDA tensors, got tensors on {device}; "
            "pass interpret=True (or set_interpret(True)) to run them in the Triton interpreter"
        )
    if not choice and not triton_available():
        raise RuntimeError("triton is not installed; the Triton kernels are unavailable")
    return choice
