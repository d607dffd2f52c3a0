"""A table of kernel calls that threads claim off one atomic counter, and the JIT-compiled loops that run it.

Both ways of splitting a layer's slabs across threads run the same loop: torch's libgomp threads
(sparsec/targets/cpu/omp.py: the loop is the parallel region's body) and the caller plus pool threads
(sparsec/targets/cpu/steal.py: the caller then waits only for the calls a helper claimed). Each thread
takes the next (kernel, argument pack) pair and calls the kernel's packed C interface, so no Python (and
no GIL) runs between calls.

Table layout (pointer-sized words): [n calls, next to claim, finished, (kernel address, argument pack
address) per call].
"""

from __future__ import annotations

import ctypes
import threading

_LOOPS = """
module {
  llvm.func @sparsec_claim(%data: !llvm.ptr) {
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
  llvm.func @sparsec_claim_wait(%data: !llvm.ptr) {
    %zero = llvm.mlir.constant(0 : i64) : i64
    llvm.call @sparsec_claim(%data) : (!llvm.ptr) -> ()
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


def loops() -> tuple[int, int] | None:
    """Addresses of the packed wrappers ``void f(void **args)`` of the claim loop and of the claim loop that
    then waits for every claimed call to finish, or None without an MLIR execution engine; built once."""
    with _LOCK:
        if "value" not in _STATE:
            try:
                from torch_mlir import execution_engine, ir

                with ir.Context(), ir.Location.unknown():
                    engine = execution_engine.ExecutionEngine(ir.Module.parse(_LOOPS), opt_level=2,
                                                              shared_libs=[])
                    _STATE["engine"] = engine  # owns the code the addresses point at
                    _STATE["value"] = (engine.raw_lookup("sparsec_claim"), engine.raw_lookup("sparsec_claim_wait"))
            except Exception:  # noqa: BLE001 - no JIT: callers use the pool
                _STATE["value"] = None
        return _STATE["value"]


class CallTable:
    """The table of ``(kernel, argument refs)`` calls, and ``argv``: the address to hand a loop's packed
    wrapper. Holds every buffer the loops read; a helper that starts late still reads the counters, so
    keep the table alive until every thread that may read it has returned."""

    def __init__(self, calls: list) -> None:
        self.data = (ctypes.c_void_p * (3 + 2 * len(calls)))()
        self.data[0], self.data[1], self.data[2] = len(calls), 0, 0
        self.packs = []
        for i, (kernel, refs) in enumerate(calls):
            pack = (ctypes.c_void_p * len(refs))(*[r.address for r in refs])
            self.packs.append(pack)
            self.data[3 + 2 * i] = kernel.address
            self.data[4 + 2 * i] = ctypes.addressof(pack)
        # the packed wrapper ``void f(void **args)``: args[0] points at the argument (the table's address)
        self.holder = ctypes.c_void_p(ctypes.addressof(self.data))
        self.argv_array = (ctypes.c_void_p * 1)(ctypes.addressof(self.holder))
        self.argv = ctypes.addressof(self.argv_array)
