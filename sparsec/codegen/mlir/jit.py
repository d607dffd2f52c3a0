"""JIT a kernel with MLIR's ExecutionEngine and call it on numpy/torch buffers without copies.

A kernel is compiled once per KernelSpec (process-wide cache; layers of equal spec share it). Calls
go through the engine's packed C interface with memref descriptors built directly in ctypes, so one
call costs a few microseconds of Python; ctypes releases the GIL, so threads run kernels in parallel.
"""

from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sparsec.codegen.mlir import disk_cache, emit_bsrvec, emit_csrnat, emit_int8, emit_rowvec
from sparsec.codegen.mlir.emit import emit_kernel
from sparsec.codegen.mlir.emit_sddmm import SddmmSpec
from sparsec.codegen.mlir.pipeline import pipeline_text, run_pipeline, vector_pipeline_text
from sparsec.codegen.spec import KernelSpec

_DESC_TYPES: dict[int, type] = {}


def descriptor_type(rank: int) -> type:
    """The ctypes struct of a ranked memref descriptor (allocated, aligned, offset, sizes, strides)."""
    if rank not in _DESC_TYPES:
        fields = [("allocated", ctypes.c_void_p), ("aligned", ctypes.c_void_p), ("offset", ctypes.c_int64)]
        if rank:
            fields += [("sizes", ctypes.c_int64 * rank), ("strides", ctypes.c_int64 * rank)]
        _DESC_TYPES[rank] = type(f"MemRef{rank}D", (ctypes.Structure,), {"_fields_": fields})
    return _DESC_TYPES[rank]


def make_descriptor(ptr: int, shape: tuple[int, ...], strides: tuple[int, ...]):
    """A memref descriptor for memory at ``ptr`` (strides in elements)."""
    rank = len(shape)
    cls = descriptor_type(rank)
    if rank == 0:
        return cls(ptr, ptr, 0)
    arr = ctypes.c_int64 * rank
    return cls(ptr, ptr, 0, arr(*shape), arr(*strides))


class ArgRef:
    """A kernel argument: a descriptor plus the pointer-to-it the packed C interface takes.

    Building these once for buffers that never change (packed weights, bias) keeps a call's Python
    cost to the few arguments that do (activation, residual, output).
    """

    __slots__ = ("desc", "holder", "address", "owner")

    def __init__(self, desc, owner: object = None) -> None:
        self.desc = desc
        # the memory the descriptor points at, kept alive while this argument is (a call in flight in
        # another thread keeps using the buffers a re-pack or value refresh has just replaced)
        self.owner = owner
        self.holder = ctypes.c_void_p(ctypes.addressof(desc))
        self.address = ctypes.addressof(self.holder)


def numpy_descriptor(a: np.ndarray):
    """Descriptor of a C-contiguous numpy array."""
    if not a.flags.c_contiguous:
        raise ValueError("kernel buffers must be C-contiguous")
    return make_descriptor(a.ctypes.data, a.shape, tuple(s // a.itemsize for s in a.strides))


def torch_descriptor(t: torch.Tensor):
    """Descriptor of a contiguous float32 CPU tensor (no copy: the kernel reads/writes its storage)."""
    return make_descriptor(t.data_ptr(), tuple(t.shape), tuple(t.stride()))


@dataclass
class CompiledKernel:
    """A JIT-compiled kernel and the texts of its stages."""

    spec: KernelSpec
    mlir: str
    llvm: str
    compile_seconds: float
    _engine: object = field(repr=False, default=None)
    _fn: object = field(repr=False, default=None)

    def __call__(self, descriptors: list) -> None:
        """Call with one descriptor per argument, in the kernel's argument order (weight buffers first)."""
        refs = [ArgRef(d) for d in descriptors]
        self.call_refs(refs)

    @property
    def address(self) -> int:
        """The address of the packed C interface ``void f(void **args)`` (threads.run_kernels calls it)."""
        return ctypes.cast(self._fn, ctypes.c_void_p).value

    def call_refs(self, refs: list[ArgRef]) -> None:
        """Call with prepared argument references (the caller keeps them, and their buffers, alive)."""
        self._fn((ctypes.c_void_p * len(refs))(*[r.address for r in refs]))

    def bound(self, refs: list[ArgRef]):
        """A zero-argument call of this kernel on ``refs`` (their pointer array built once; the caller may
        re-point the descriptors between calls, and keeps their buffers alive while a call runs)."""
        array = (ctypes.c_void_p * len(refs))(*[r.address for r in refs])
        fn = self._fn

        def call(keep=refs) -> None:
            fn(array)

        return call


_CACHE: dict[KernelSpec, CompiledKernel] = {}
_LOCK = threading.Lock()
STATS = {"compiled": 0, "hits": 0, "disk_hits": 0}


def compile_kernel(spec: KernelSpec | SddmmSpec, opt_level: int = 3) -> CompiledKernel:
    """The compiled kernel for ``spec``: from the process cache, the on-disk cache, or JIT-compiled.

    Freshly compiled kernels are written to the disk cache (sparsec/codegen/mlir/disk_cache.py) so
    the next process loads them in about a millisecond instead of compiling for 30-80 ms.
    """
    with _LOCK:
        hit = _CACHE.get(spec)
        if hit is not None:
            STATS["hits"] += 1
            return hit
        loaded = disk_cache.load(spec, opt_level)
        if loaded is not None:
            fn, lib, mlir_text, llvm_text = loaded
            kernel = CompiledKernel(spec, mlir_text, llvm_text, 0.0, lib, fn)
            _CACHE[spec] = kernel
            STATS["disk_hits"] += 1
            return kernel
        from torch_mlir import execution_engine, ir

        t0 = time.perf_counter()
        emit_mlir = getattr(spec, "emit_mlir", None)  # kernels that bring their own source (emit_sddmm)
        if emit_mlir is not None:
            source, pipeline = emit_mlir()
        elif emit_int8.supports(spec):  # int8 CSR: int32 sums, dequantizing epilogue
            source, pipeline = emit_int8.emit_int8_kernel(spec), vector_pipeline_text()
        elif emit_csrnat.supports(spec):  # hand-blocked CSR reading X [N, in], writing Y [N, out]
            source, pipeline = emit_csrnat.emit_csrnat_kernel(spec), vector_pipeline_text()
        elif emit_rowvec.supports(spec):  # hand-blocked CSR: faster than the sparsifier's loop
            source, pipeline = emit_rowvec.emit_rowvec_kernel(spec), vector_pipeline_text()
        elif emit_bsrvec.supports(spec):  # hand-blocked BSR in the natural layout
            source, pipeline = emit_bsrvec.emit_bsrvec_kernel(spec), vector_pipeline_text()
        else:
            source = emit_kernel(spec)
            pipeline = pipeline_text(spec.vl if spec.form == "scatter" else 0)
        with ir.Context(), ir.Location.unknown():
            module = ir.Module.parse(source)
            run_pipeline(module, pipeline, source, spec.name)
            llvm_text = str(module)
            engine = execution_engine.ExecutionEngine(module, opt_level=opt_level, shared_libs=[])
            fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(engine.lookup(spec.name))
        kernel = CompiledKernel(spec, source, llvm_text, time.perf_counter() - t0, engine, fn)
        disk_cache.store(spec, opt_level, engine, source, llvm_text)
        _CACHE[spec] = kernel
        STATS["compiled"] += 1
        return kernel


def clear_cache() -> None:
    """Forget every compiled kernel (tests; memory)."""
    with _LOCK:
        _CACHE.clear()
