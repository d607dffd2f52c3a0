"""A small persistent thread pool for splitting a kernel's rows across cores.

ctypes drops the GIL while a JIT-compiled kernel runs, so Python threads give real parallelism; a
persistent pool avoids paying thread start-up on every call (measured ~20-40 us per handoff).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None
_SIZE = 0


def pool(workers: int) -> ThreadPoolExecutor:
    """A shared pool with at least ``workers`` threads."""
    global _POOL, _SIZE
    if _POOL is None or _SIZE < workers:
        old = _POOL
        _POOL, _SIZE = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparsec"), workers
        if old is not None:
            old.shutdown(wait=False)
    return _POOL


def run_parallel(tasks: list) -> None:
    """Run zero-argument callables, the first on this thread and the rest on the pool; re-raise errors."""
    if len(tasks) == 1:
        tasks[0]()
        return
    futures = [pool(len(tasks) - 1).submit(t) for t in tasks[1:]]
    try:
        tasks[0]()
    finally:
        for f in futures:
            f.result()


def run_kernels(calls: list[tuple]) -> None:
    """Run ``(kernel, argument refs, buffers to keep alive)`` calls in parallel and return when all ran.

    By default the caller and pool threads steal the calls off one counter (sparsec/targets/cpu/steal.py:
    the caller never waits for a thread that another process keeps off its core); with knob
    ``steal_dispatch`` off, on torch's own OpenMP threads when the process has GNU libgomp
    (sparsec/targets/cpu/omp.py: its workers spin for work after torch's ops, and would compete with a
    second pool for the cores), else on the pool."""
    if len(calls) == 1:
        calls[0][0].call_refs(calls[0][1])
        return
    from sparsec import knobs
    from sparsec.targets.cpu import omp, steal

    if knobs.get("steal_dispatch") and steal.available():
        steal.run_calls([(c[0], c[1]) for c in calls], len(calls) - 1, pool(len(calls) - 1))
        return
    if knobs.get("omp_dispatch") and omp.available():
        omp.run_calls([(c[0], c[1]) for c in calls], len(calls))
        return
    run_parallel([lambda k=c[0], a=c[1]: k.call_refs(a) for c in calls])


def run_slabs(tasks: list[tuple], stored: int, n: int) -> None:
    """Run a layer's slab calls (``run_kernels``' tuples) for ``n`` rows of a weight storing ``stored``
    values: on this thread when the work is below knob ``parallel_min_work`` (the handoff would cost more
    than it saves), else in parallel."""
    from sparsec import knobs
    from sparsec.formats.cost import parallel_work

    if len(tasks) > 1 and parallel_work(stored, n) < knobs.get("parallel_min_work"):
        for kern, args, _ in tasks:
            kern.call_refs(args)
    else:
        run_kernels(tasks)


def default_threads() -> int:
    """Threads to use when the user did not say: torch's setting, capped by the cores we may use."""
    import torch

    avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), avail))
