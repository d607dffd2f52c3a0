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

The claim loops are sparsec/targets/cpu/call_table.py's; ctypes drops the GIL while it
runs, so the helper (a pool thread) and the caller run kernels in parallel with no Python in between.
"""

from __future__ import annotations

import ctypes
import functools

from sparsec.targets.cpu import call_table

_PACKED = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@functools.cache
def _loops() -> tuple | None:
    """(helper loop, caller loop) as ctypes calls (they drop the GIL), or None without a JIT; built once."""
    addresses = call_table.loops()
    return None if addresses is None else (_PACKED(addresses[0]), _PACKED(addresses[1]))


def available() -> bool:
    """Whether kernel calls can be run by the stealing loop in this process."""
    return call_table.loops() is not None


def run_calls(calls: list, helpers: int, executor) -> None:
    """Call every ``(kernel, argument refs)`` of ``calls`` on this thread and up to ``helpers`` threads of
    ``executor`` (a concurrent.futures executor); returns when every call finished (a helper may return
    later, finding nothing left). The caller keeps the arguments' buffers alive (``available()`` must be
    True)."""
    helper, caller = _loops()
    table = call_table.CallTable(calls)
    for _ in range(min(helpers, len(calls) - 1)):
        executor.submit(lambda t=table: helper(t.argv))  # the lambda keeps the table alive for a late helper
    caller(table.argv)
