"""Kernel calls split across threads without waiting for a thread that is not running (work stealing).

An OpenMP parallel region (sparsec/targets/cpu/omp.py) ends in a barrier that every thread of the team
must reach: when another process holds one of the two cores, the second thread is not scheduled for up
to a time slice, and the caller waits for it. Measured on the 2-core machine with one busy process
beside it (768x768 CSR at 90%, N=128): 0.42 ms on one thread, 0.55 ms on two with the libgomp dispatch,
and 20 ms when torch itself runs one thread (its libgomp worker sleeps). Here the caller and a helper
thread take calls off one atomic counter; the caller runs calls until none is left, then waits only for
the calls the helper *claimed* (an atomic count of finished calls), never for the helper to arrive. A
helper that wakes late finds nothing to do and returns; a busy machine costs at most one thread's worth
of time, never a time slice.

A tiny JIT-compiled loop (MLIR LLVM dialect) claims and runs the calls; ctypes drops the GIL while it
runs, so the helper (a pool thread) and the caller run kernels in parallel with no Python in between.
"""

from __future__ import annotations

import ctypes
import threading

#: data layout: [n calls, next to claim, finished, (kernel address, argument pack address) per call]
_LOOP = """
module {
  llvm.func @sparsec_steal(%data: !llvm.ptr) {
    %one = llvm.mlir.constant(1 : i64) : i64
    %two = llvm.mlir.constant(2 : i64) : i64
    %three = llvm.mlir.constant(3 : i64) : i64
    %n = llvm.load %data : !llvm.ptr -> i64
    %cnt = llvm.getelementptr %data[1] : (!llvm.ptr) -> !llvm.ptr, i64
    %done = llvm.getelementptr %data[2] : (!llvm.ptr) -> !llvm.ptr, i64
    llvm.br ^loop
  ^loop:
    %i = llvm.atomicrmw add %cnt, %one seq_cst : !llvm.ptr, i64
    %more = llvm.icmp "slt" %i, %n : i64
    llvm.cond_br %more, ^body, ^out
  ^body:
    %slot = llvm.mul %i, %two : i64
    %off = llvm.add %slot, %three : i64
    %fpp = llvm.getelementptr %data[%off] : (!llvm.ptr, i64) -> !llvm.ptr, i64
    %fn = llvm.load %fpp : !llvm.ptr -> !llvm.ptr
    %app = llvm.getelementptr %fpp[1] : (!llvm.ptr) -> !llvm.ptr, i64
    %args = llvm.load %app : !llvm.ptr -> !llvm.ptr
    llvm.call %fn(%args) : !llvm.ptr, (!llvm.ptr) -> ()
    %d = llvm.atomicrmw add %done, %one seq_cst : !llvm.ptr, i64
    llvm.br ^loop
  ^out:
    llvm.return
  }
  llvm.func @sparsec_steal_wait(%data: !llvm.ptr) {
    %zero = llvm.mlir.constant(0 : i64) : i64
    llvm.call @sparsec_steal(%data) : (!llvm.ptr) -> ()
    %n = llvm.load %data : !llvm.ptr -> i64
    %done = llvm.getelementptr %data[2] : (!llvm.ptr) -> !llvm.ptr, i64
    llvm.br ^spin
  ^spin:
    %d = llvm.atomicrmw add %done, %zero seq_cst : !llvm.ptr, i64
    %wait = llvm.icmp "slt" %d, %n : i64
    llvm.cond_br %wait, ^spin, ^out
  ^out:
    llvm.return
  }
}
"""

_LOCK = threading.Lock()
_STATE: dict = {}
_PACKED = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _init() -> tuple | None:
    """(helper loop, caller loop, the engine that holds them) as ctypes calls, or None; built once."""
    with _LOCK:
        if "value" in _STATE:
            return _STATE["value"]
        value = None
        try:
            from torch_mlir import execution_engine, ir

            with ir.Context(), ir.Location.unknown():
                engine = execution_engine.ExecutionEngine(ir.Module.parse(_LOOP), opt_level=2, shared_libs=[])
                value = (_PACKED(engine.raw_lookup("sparsec_steal")),
                         _PACKED(engine.raw_lookup("sparsec_steal_wait")), engine)
        except Exception:  # noqa: BLE001 - no JIT: callers use the pool
            value = None
        _STATE["value"] = value
        return value


def available() -> bool:
    """Whether kernel calls can be run by the stealing loop in this process."""
    return _init() is not None


def run_calls(calls: list, helpers: int, executor) -> None:
    """Call every ``(kernel, argument refs)`` of ``calls`` on this thread and up to ``helpers`` threads of
    ``executor`` (a concurrent.futures executor); returns when every call finished (a helper may return
    later, finding nothing left). The caller keeps the arguments' buffers alive (``available()`` must be
    True)."""
    helper, caller, _ = _init()
    data = (ctypes.c_void_p * (3 + 2 * len(calls)))()
    data[0], data[1], data[2] = len(calls), 0, 0
    packs = []
    for i, (kernel, refs) in enumerate(calls):
        pack = (ctypes.c_void_p * len(refs))(*[r.address for r in refs])
        packs.append(pack)
        data[3 + 2 * i] = kernel.address
        data[4 + 2 * i] = ctypes.addressof(pack)
    # the packed wrapper ``void f(void **args)``: args[0] points at the argument (the data pointer)
    holder = ctypes.c_void_p(ctypes.addressof(data))
    argv = (ctypes.c_void_p * 1)(ctypes.addressof(holder))
    keep = (data, packs, holder, argv)  # a helper that starts late still reads the counters: keep them alive
    workers = min(helpers, len(calls) - 1)
    for _ in range(workers):
        executor.submit(lambda k=keep: helper(ctypes.addressof(k[3])))
    caller(ctypes.addressof(argv))
