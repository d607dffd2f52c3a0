"""Kernel calls split across torch's own OpenMP threads (GNU libgomp), not a second thread pool.

torch's CPU wheel runs its parallel ops on libgomp threads that, after each parallel region, spin for a
while waiting for more work (OMP_WAIT_POLICY unset). A sparse layer's slabs run on sparsec's pool
threads right after such ops (a training step alternates them all the time): with two cores, the
spinning OpenMP worker and the pool thread then share one core. Measured on the 90% MLP training step
at 2 threads (1-thread CPU time 54 ms): 187 ms of CPU per step with the pool, 65 ms with
OMP_WAIT_POLICY=PASSIVE. Handing the slabs to libgomp itself (``GOMP_parallel``) gives the spinning
worker the work it waits for.

The claim loop of sparsec/targets/cpu/call_table.py is the parallel region's body: each thread takes the
next (kernel, argument pack) pair off an atomic counter and calls the kernel's packed C interface, so
no Python (and no GIL) runs inside the region. Without libgomp in the process (another OpenMP runtime,
a torch build without OpenMP) ``available()`` is False and callers use the pool.
"""

from __future__ import annotations

import ctypes
import threading

from sparsec.targets.cpu import call_table

_LOCK = threading.Lock()
_STATE: dict = {}


def _init() -> tuple | None:
    """(GOMP_parallel, the claim loop's address) or None; built once."""
    with _LOCK:
        if "value" not in _STATE:
            value = None
            path, loops = _gomp_path(), call_table.loops()
            if path is not None and loops is not None:
                try:
                    run = ctypes.CDLL(path).GOMP_parallel
                    run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                    run.restype = None
                    value = (run, loops[0])
                except (OSError, AttributeError):  # not a usable libgomp: the pool runs the slabs
                    value = None
            _STATE["value"] = value
        return _STATE["value"]


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
    run, loop = _init()
    table = call_table.CallTable(calls)
    run(loop, table.argv, min(threads, len(calls)), 0)
