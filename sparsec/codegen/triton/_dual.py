"""One kernel source, two executables: a compiled ``JITFunction`` and an interpreted twin.

Why not plain ``@triton.jit``: it reads ``TRITON_INTERPRET`` at decoration time and returns either a
``JITFunction`` or an ``InterpretedFunction`` for the life of the process. sparsec needs both in one
process (CPU tests and ``target="interpret"`` next to CUDA launches and ``triton.compile`` for a
``GPUTarget``), so:

* :func:`kernel` always builds a ``JITFunction`` (what the GPU launch and ``triton.compile`` use);
* :func:`interpreted` builds, on first use, an ``InterpretedFunction`` over a *copy* of the function
  whose globals are a private dict in which every ``JITFunction`` helper (e.g. the shared epilogue)
  is replaced by its own interpreted twin. The interpreter executes helper calls as Python, and a
  ``JITFunction`` refuses to be called outside a compiled kernel, hence the swap. The private dict
  also keeps the interpreter from writing its own names into the real module's globals.

Kernels only call Triton builtins and sparsec helpers made with :func:`kernel`; they avoid the
``@jit`` functions of ``triton.language.standard`` (``tl.sum``, ``tl.cdiv``, ``tl.sigmoid``...),
which are ``JITFunction`` objects when ``TRITON_INTERPRET`` was unset at import and so cannot run
under an interpreter switched on later.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

_TWINS: dict[int, InterpretedFunction] = {}
# The interpreter keeps the current program id in a module-level builder: launches must not interleave.
_INTERPRETER_LOCK = threading.RLock()


def kernel(fn: Callable[..., Any]) -> JITFunction:
    """Make a compiled-kind Triton kernel from a Python function, whatever ``TRITON_INTERPRET`` says."""
    return JITFunction(fn)


def interpreted(jit_fn: JITFunction) -> InterpretedFunction:
    """Return (building once) the interpreted twin of ``jit_fn`` (see module docstring)."""
    twin = _TWINS.get(id(jit_fn))
    if twin is not None:
        return twin
    fn = jit_fn.fn
    private_globals = dict(fn.__globals__)
    clone = types.FunctionType(fn.__code__, private_globals, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__
    clone.__module__ = fn.__module__
    clone.__annotations__ = dict(fn.__annotations__)
    clone.__doc__ = fn.__doc__
    twin = InterpretedFunction(clone)
    # Register before resolving helpers so self- or mutually-referencing kernels terminate.
    _TWINS[id(jit_fn)] = twin
    for name, value in list(private_globals.items()):
        if isinstance(value, JITFunction):
            private_globals[name] = interpreted(value)
    return twin


@dataclass
class Launch:
    """Everything needed to run or compile one kernel launch.

    ``args`` holds the runtime arguments and ``constexprs`` the compile-time ones, both by parameter
    name; together they cover every parameter of ``kernel``. ``options`` are compiler options
    (``num_warps``, ``num_stages``) ignored by the interpreter.
    """

    kernel: JITFunction
    grid: tuple[int, ...]
    args: dict[str, Any]
    constexprs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)

    def ordered(self) -> list[Any]:
        """Arguments in the kernel's parameter order (checks that none is missing or extra)."""
        names: Sequence[str] = self.kernel.arg_names
        given = set(self.args) | set(self.constexprs)
        missing, extra = set(names) - given, given - set(names)
        if missing or extra:
            raise TypeError(f"{self.kernel.__name__}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        return [self.constexprs[n] if n in self.constexprs else self.args[n] for n in names]


def run(launch: Launch, interpret: bool) -> None:
    """Execute ``launch`` in the interpreter (CPU) or as a compiled kernel (CUDA)."""
    if any(g == 0 for g in launch.grid):
        return
    if interpret:
        with _INTERPRETER_LOCK:
            interpreted(launch.kernel)[launch.grid](*launch.ordered())
    else:
        launch.kernel[launch.grid](*launch.ordered(), **launch.options)


_TRITON_DTYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.uint8: "u8",
    torch.int8: "i8",
    torch.int16: "i16",
}


def signature(launch: Launch) -> tuple[dict[str, str], dict[str, Any], dict[tuple[int, ...], list]]:
    """Return (signature, constexprs, attrs) for ``triton.compiler.ASTSource`` describing ``launch``.

    Mirrors the specialization the JIT applies at a real launch (``native_specialize_impl``), so an
    ahead-of-time compile produces the kernel a GPU launch would: tensors become typed pointers;
    integers 32- or 64-bit, except that an integer equal to 1 becomes the constant 1 (unit strides
    then make loads provably contiguous); ``None`` a constexpr; pointers at 16-byte aligned addresses
    and integers divisible by 16 get the ``tt.divisibility`` hint that enables vectorized access.
    """
    sig: dict[str, str] = {}
    consts: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, name in enumerate(launch.kernel.arg_names):
        if name in launch.constexprs:
            sig[name] = "constexpr"
            consts[name] = launch.constexprs[name]
            continue
        value = launch.args[name]
        if value is None or (type(value) is int and value == 1):
            sig[name] = "constexpr"
            consts[name] = value
        elif isinstance(value, torch.Tensor):
            sig[name] = "*" + _TRITON_DTYPES[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            sig[name] = "u1"
        elif isinstance(value, int):
            sig[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{launch.kernel.__name__}: cannot type argument {name}={value!r}")
    return sig, consts, attrs
