"""Kernel calls split across torch's own OpenMP threads (GNU libgomp), not a second thread pool.

torch's CPU wheel runs its parallel ops on libgomp threads that, after each parallel region, spin for a
while waiting for more work (OMP_WAIT_POLICY unset). A sparse layer's slabs run on sparsec's pool
threads right after such ops (a training step alternates them all the time): with two cores, the
spinning OpenMP worker and the pool thread then share one core. Measured on the 90% MLP training step
at 2 threads (1-thread CPU time 54 ms): 187 ms of CPU per step with the pool, 65 ms with
OMP_WAIT_POLICY=PASSIVE. Handing the slabs to libgomp itself (``GOMP_parallel``) gives the spinning
worker the work it waits for.

A tiny JIT-compiled trampoline (MLIR LLVM dialect) is the parallel region's body: each thread takes the
next (kernel, argument pack) pair off an atomic counter and calls the kernel's packed C interface, so
no Python (and no GIL) runs inside the region. Without libgomp in the process (another OpenMP runtime,
a torch build without OpenMP) ``available()`` is False and callers use the pool.
"""

from __future__ import annotations

import ctypes
import threading

_TRAMPOLINE = """
module {
  llvm.func @sparsec_slab_trampoline(%data: !llvm.ptr) {
    %one = llvm.mlir.constant(1 : i64) : i64
    %two = llvm.mlir.constant(2 : i64) : i64
    %n = llvm.load %data : !llvm.ptr -> i64
    %cnt = llvm.getelementptr %data[1] : (!llvm.ptr) -> !llvm.ptr, i64
    llvm.br ^loop
  ^loop:
    %i = llvm.atomicrmw add %cnt, %one seq_cst : !llvm.ptr, i64
    %more = llvm.icmp "slt" %i, %n : i64
    llvm.cond_br %more, ^body, ^done
  ^body:
    %slot = llvm.mul %i, %two : i64
    %off = llvm.add %slot, %two : i64
    %fpp = llvm.getelementptr %data[%off] : (!llvm.ptr, i64) -> !llvm.ptr, i64
    %fn = llvm.load %fpp : !llvm.ptr -> !llvm.ptr
    %app = llvm.getelementptr %fpp[1] : (!llvm.ptr) -> !llvm.ptr, i64
    %args = llvm.load %app : !llvm.ptr -> !llvm.ptr
    llvm.call %fn(%args) : !llvm.ptr, (!llvm.ptr) -> ()
    llvm.br ^loop
  ^done:
    llvm.return
  }
}
"""

_LOCK = threading.Lock()
_STATE: dict = {}


def _init() -> tuple | None:
    """(GOMP_parallel, the trampoline's address, the engine that holds it) or None; built once."""
    with _LOCK:
        if "value" in _STATE:
            return _STATE["value"]
        value = None
        try:
            path = _gomp_path()
            if path is not None:
                from torch_mlir import execution_engine, ir

                run = ctypes.CDLL(path).GOMP_parallel
                run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                run.restype = None
                with ir.Context(), ir.Location.unknown():
                    engine = execution_engine.ExecutionEngine(ir.Module.parse(_TRAMPOLINE), opt_level=2,
                                                              shared_libs=[])
                    value = (run, engine.raw_lookup("sparsec_slab_trampoline"), engine)
        except Exception:  # noqa: BLE001 - no libgomp / no JIT: the pool runs the slabs
            value = None
        _STATE["value"] = value
        return value


def _gomp_path() -> str | None:
    """The libgomp the process has loaded (torch's), or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libgomp" in line and line.rstrip().endswith(".so.1"):
                    return line.split()[-1]
    except OSError:
        return None
    return None


def available() -> bool:
    """Whether kernel calls can be split across libgomp's threads in this process."""
    return _init() is not None


def run_calls(calls: list, threads: int) -> None:
    """Call every ``(kernel, argument refs)`` of ``calls`` on up to ``threads`` libgomp threads; returns when
    all ran. The caller keeps the arguments' buffers alive (``available()`` must be True)."""
    run, trampoline, _ = _init()
    data = (ctypes.c_void_p * (2 + 2 * len(calls)))()
    data[0], data[1] = len(calls), 0
    packs = []
    for i, (kernel, refs) in enumerate(calls):
        pack = (ctypes.c_void_p * len(refs))(*[r.address for r in refs])
        packs.append(pack)
        data[2 + 2 * i] = kernel.address
        data[3 + 2 * i] = ctypes.addressof(pack)
    # ``raw_lookup`` gives the engine's packed wrapper ``void f(void **args)``: args[0] points at the argument
    holder = ctypes.c_void_p(ctypes.addressof(data))
    argv = (ctypes.c_void_p * 1)(ctypes.addressof(holder))
    run(trampoline, ctypes.addressof(argv), min(threads, len(calls)), 0)
