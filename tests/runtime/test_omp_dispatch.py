"""Slab kernels split across torch's libgomp threads (targets/cpu/omp.py) give the pool's results."""

import pytest
import torch

from sparsec import knobs
from sparsec.targets.cpu import omp
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.conftest import random_weight


def test_available_where_torch_uses_libgomp():
    """torch's CPU wheels use GNU libgomp: then the dispatch is on (elsewhere run_kernels uses the pool)."""
    assert omp.available() == (omp._gomp_path() is not None)


@pytest.mark.parametrize("threads,n", [(2, 64), (3, 1), (5, 17)])
def test_layer_equals_the_pool_and_dense(threads, n):
    """(The pool where libgomp is absent.) More slabs than OpenMP threads too: each thread takes the next slab off the trampoline's counter."""
    from sparsec.formats import registry

    w = random_weight(200, 96, 0.2, 3)
    b = torch.randn(200)
    layer = SparseLinear("l", registry.get_format("csr"), w, b, "relu", False, threads=threads)
    x = torch.randn(n, 96)
    with knobs.scope(omp_dispatch=False, parallel_min_work=0, poison_outputs=True):
        pool = layer(x)
    with knobs.scope(omp_dispatch=True, parallel_min_work=0, poison_outputs=True):
        got = layer(x)
    torch.testing.assert_close(got, pool, rtol=0, atol=0)
    torch.testing.assert_close(got, torch.relu(x @ w.t() + b), rtol=1e-4, atol=1e-4)
