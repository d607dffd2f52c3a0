"""Slab kernels run by the caller and pool threads off one counter (targets/cpu/steal.py): same results as
one thread, and the caller never waits for a helper thread that is not running."""

import threading

import pytest
import torch

from sparsec import knobs
from sparsec.formats import registry
from sparsec.targets.cpu import steal, threads
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.conftest import random_weight

pytestmark = pytest.mark.skipif(not steal.available(), reason="no MLIR execution engine")


@pytest.mark.parametrize("fmt,slabs,n", [("csr", 2, 64), ("csr", 3, 1), ("csr", 5, 17), ("bsr8x8", 4, 9)])
def test_layer_equals_one_thread_and_dense(fmt, slabs, n):
    """More slabs than threads too: whoever is free takes the next slab; poisoned outputs catch a slab
    that nobody ran."""
    w = random_weight(200, 96, 0.2, 3)
    b = torch.randn(200)
    layer = SparseLinear("l", registry.get_format(fmt), w, b, "relu", False, threads=slabs)
    x = torch.randn(n, 96)
    with knobs.scope(steal_dispatch=False, omp_dispatch=False, parallel_min_work=0, poison_outputs=True):
        pool = layer(x)
    with knobs.scope(steal_dispatch=True, parallel_min_work=0, poison_outputs=True):
        for _ in range(5):
            got = layer(x)
            torch.testing.assert_close(got, pool, rtol=0, atol=0)
    torch.testing.assert_close(got, torch.relu(x @ w.t() + b), rtol=1e-4, atol=1e-4)


def test_caller_runs_every_slab_when_the_helpers_are_held_up():
    """A helper kept off its core (here: the pool's threads are all busy) does not hold the call up: the
    caller takes every slab itself; the helper's late start then finds nothing left."""
    w = random_weight(300, 64, 0.3, 4)
    layer = SparseLinear("l", registry.get_format("csr"), w, None, None, False, threads=3)
    x = torch.randn(16, 64)
    want = x @ w.t()
    ex = threads.pool(2)
    release = threading.Event()
    blockers = [ex.submit(release.wait, 30) for _ in range(threads._SIZE)]
    try:
        with knobs.scope(steal_dispatch=True, parallel_min_work=0, poison_outputs=True):
            got = layer(x)
        assert not release.is_set()  # finished while every pool thread was still held
    finally:
        release.set()
        for f in blockers:
            f.result()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
