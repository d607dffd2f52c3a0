"""Run a function on N local gloo processes (127.0.0.1, a free port), with a timeout and full cleanup.

Processes come from a forkserver that has imported torch and sparsec once, so each run starts in about
0.1 s instead of the several seconds a fresh interpreter takes to import them (spawn). The forkserver
holds no state between runs and exits with the test process.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, outdir: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(outdir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


_PRELOAD = ["torch", "torch.distributed", "torch.nn.parallel", "sparsec.distributed", "tests.distributed.spawn"]


def run_ranks(fn, world: int, *args, timeout: float = 60.0) -> list:
    """Run ``fn(rank, world, *args)`` on ``world`` processes; return each rank's result (rank order)."""
    multiprocessing.set_forkserver_preload(_PRELOAD)  # takes effect when the forkserver first starts
    with tempfile.TemporaryDirectory() as outdir:
        ctx = mp.start_processes(_entry, args=(fn, world, free_port(), outdir, args), nprocs=world,
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
        return [torch.load(os.path.join(outdir, f"{r}.pt")) for r in range(world)]
