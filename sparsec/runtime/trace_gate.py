"""A process-wide gate between graph capture and model execution.

``torch.export`` and ``torch.fx.symbolic_trace`` patch ``torch.nn.Module.__call__`` for the whole process
while they trace. A compiled model that runs its graph (which calls its runtime modules) in another thread
at that moment is intercepted by the tracer: the call fails with errors from inside torch (seen: "release
unlocked lock", "module is not installed as a submodule") or pollutes the trace. So captures take the gate
exclusively and runs share it: runs never wait for each other, only for a capture in progress.

A thread that already holds the gate (a run that compiles a nested model, a capture that runs a compiled
submodule) passes through; only the other threads wait.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_COND = threading.Condition(threading.Lock())
_STATE = {"runs": 0, "tracer": None}  # runs in progress; ident of the thread capturing (None: nobody)
_MINE = threading.local()  # this thread's run depth


@contextmanager
def running() -> Iterator[None]:
    """Hold the gate shared while a compiled model executes (waits only while another thread captures)."""
    me = threading.get_ident()
    with _COND:
        while _STATE["tracer"] not in (None, me):
            _COND.wait()
        _STATE["runs"] += 1
    _MINE.depth = getattr(_MINE, "depth", 0) + 1
    try:
        yield
    finally:
        _MINE.depth -= 1
        with _COND:
            _STATE["runs"] -= 1
            if _STATE["runs"] == 0:
                _COND.notify_all()


@contextmanager
def tracing() -> Iterator[None]:
    """Hold the gate exclusively while torch traces a module (waits for other threads' runs to finish)."""
    me = threading.get_ident()
    with _COND:
        if _STATE["tracer"] == me:  # a nested capture on this thread
            reentered = True
        else:
            reentered = False
            # this thread's own runs (a capture started from inside a run) do not count
            while _STATE["tracer"] is not None or _STATE["runs"] > getattr(_MINE, "depth", 0):
                _COND.wait()
            _STATE["tracer"] = me
    try:
        yield
    finally:
        if not reentered:
            with _COND:
                _STATE["tracer"] = None
                _COND.notify_all()
