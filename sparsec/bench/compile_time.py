"""Cold and warm compile time of BERT, each in a fresh process.

``cold``: a new process with an empty ``SPARSEC_CACHE_DIR`` (calibration and every kernel from scratch).
``warm``: a second new process on the same cache directory (what the on-disk caches save).
``warm_inprocess``: a second ``sparse_compile`` of the same model inside the warm process.
The timed region is the ``sparse_compile`` call only: imports and building the model come before it.

Run as ``python -m sparsec.bench.compile_time STATE LAYERS SEED THREADS``: loads the pruned state dict the
parent saved, compiles twice and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _child(state: str, layers: int, seed: int, threads: int) -> dict:
    import logging

    torch.set_num_threads(threads)
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    import sparsec
    from sparsec.bench.bert import bert_model

    model, inputs = bert_model(layers, seed)
    model.load_state_dict(torch.load(state, weights_only=True))
    t = time.perf_counter()
    sparsec.sparse_compile(model, inputs, target="cpu")
    first = time.perf_counter() - t
    t = time.perf_counter()
    sparsec.sparse_compile(model, inputs, target="cpu")
    second = time.perf_counter() - t
    return {"first_s": first, "second_s": second}


def _run(state: Path, layers: int, seed: int, threads: int, cache: str) -> dict:
    root = str(Path(__file__).resolve().parents[2])  # so the child imports this sparsec, installed or not
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, SPARSEC_CACHE_DIR=cache, PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, "-m", "sparsec.bench.compile_time", str(state), str(layers), str(seed), str(threads)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compile-time child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cold_and_warm(model: torch.nn.Module, layers: int, seed: int, threads: int) -> dict:
    """Compile times of ``model`` (a pruned ``bert_model(layers, seed)``) cold and warm, in new processes."""
    with tempfile.TemporaryDirectory(prefix="sparsec-bench-") as tmp:
        state = Path(tmp) / "state.pt"
        torch.save(model.state_dict(), state)
        cache = str(Path(tmp) / "cache")
        cold = _run(state, layers, seed, threads, cache)
        warm = _run(state, layers, seed, threads, cache)
    return {"cold_s": cold["first_s"], "warm_s": warm["first_s"], "warm_inprocess_s": warm["second_s"],
            "cold_second_s": cold["second_s"], "threads": threads}


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
