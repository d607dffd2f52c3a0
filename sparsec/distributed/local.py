"""Run a function on N local gloo processes over the loopback interface, with a timeout and cleanup.

For tests, examples and benchmarks that simulate several workers on one machine: every rank joins a
``torch.distributed`` gloo process group at ``tcp://127.0.0.1:<free port>`` (nothing leaves the machine),
runs ``fn(rank, world, *args)``, and its return value comes back to the caller (through ``torch.save``
into a temporary directory). Processes come from a forkserver that has imported torch and sparsec once,
so each later run starts in about 0.1 s instead of the seconds a fresh interpreter needs (``spawn``). The
forkserver holds no state between runs and exits with the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sparsec.errors import InputError

_PRELOAD = ["torch", "torch.distributed", "torch.nn.parallel", "sparsec.distributed", "sparsec.distributed.local"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world: int, port: int, outdir: str, args: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(outdir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_local(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 60.0, threads: int = 1,
              preload: Sequence[str] = ()) -> list:
    """Run ``fn(rank, world, *args)`` on ``world`` local gloo processes; return each rank's result.

    ``fn`` must be importable (a module-level function). Raises ``TimeoutError`` when the ranks have not
    finished after ``timeout`` seconds and re-raises a rank's exception; either way every process is
    terminated and joined before this returns. ``threads``: torch threads per rank. ``preload``: more
    modules for the forkserver to import (only the first call of a process decides the list).
    """
    if world < 1:
        raise InputError(f"world must be >= 1, got {world}")
    multiprocessing.set_forkserver_preload([*_PRELOAD, *preload])
    with tempfile.TemporaryDirectory() as outdir:
        ctx = mp.start_processes(_entry, args=(fn, world, free_port(), outdir, args, threads), nprocs=world,
                                 join=False, start_method="forkserver")
        try:
            # join returns False each time one process ends while others still run (and raises on a
            # failed one), so wait in a loop until all are done or the deadline passes
            deadline = time.monotonic() + timeout
            while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world} ranks did not finish within {timeout} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        return [torch.load(os.path.join(outdir, f"{r}.pt"), weights_only=False) for r in range(world)]
