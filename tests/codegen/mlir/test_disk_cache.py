"""The on-disk kernel cache: reused across processes, rebuilt when corrupt, safe under concurrency."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from sparsec.codegen.mlir import disk_cache, jit
from sparsec.codegen.spec import KernelSpec
from sparsec.formats import registry
from sparsec.targets.cpu.sparse_linear import SparseLinear
from tests.conftest import assert_close, random_weight, reference

SCRIPT = textwrap.dedent(
    """
    import torch, sys
    from sparsec.codegen.mlir import jit
    from sparsec.formats import registry
    from sparsec.targets.cpu.sparse_linear import SparseLinear
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g) * (torch.rand(24, 40, generator=g) < 0.3)
    x = torch.randn(6, 40, generator=g)
    y = SparseLinear("t", registry.get_format("csr"), w, None, "silu", False)(x)
    err = (y - torch.nn.functional.silu(x @ w.t())).abs().max().item()
    print(err, jit.STATS["compiled"], jit.STATS["disk_hits"])
    """
)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEC_CACHE_DIR", str(tmp_path))
    jit.clear_cache()
    yield tmp_path
    jit.clear_cache()


def _run(env_dir) -> subprocess.Popen:
    env = {**__import__("os").environ, "SPARSEC_CACHE_DIR": str(env_dir)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_second_process_loads_from_disk(fresh_cache):
    first = _run(fresh_cache).communicate(timeout=300)[0].split()
    second = _run(fresh_cache).communicate(timeout=300)[0].split()
    assert float(first[0]) < 1e-5 and first[1:] == ["1", "0"]
    assert float(second[0]) < 1e-5 and second[1:] == ["0", "1"]


def test_two_processes_compiling_at_once(fresh_cache):
    procs = [_run(fresh_cache) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for out, err in outs:
        assert float(out.split()[0]) < 1e-5, err
    third = _run(fresh_cache).communicate(timeout=300)[0].split()
    assert third[1:] == ["0", "1"], "a complete entry was left behind"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "drop_record"])
def test_corrupt_entry_is_rebuilt(fresh_cache, damage, caplog):
    fmt = registry.get_format("csr")
    w, x = random_weight(16, 24, 0.3, 1), torch.randn(4, 24)
    SparseLinear("t", fmt, w, None, "relu", False)(x)
    so = next((fresh_cache / "kernels").glob("*.so"))
    if damage == "truncate":
        so.write_bytes(so.read_bytes()[:100])
    elif damage == "garbage":
        so.write_bytes(b"\x7fELF not really")
    else:
        so.with_suffix(".json").unlink()
    jit.clear_cache()
    with caplog.at_level(logging.WARNING, logger="sparsec"):
        y = SparseLinear("t", fmt, w, None, "relu", False)(x)
    assert_close(y, reference(x, w, None, "relu"))
    if damage != "drop_record":
        assert "unusable" in caplog.text
    assert jit.STATS["compiled"] >= 1


def test_key_changes_with_everything_that_matters():
    base = KernelSpec("csr", "(i, j) -> (i : dense, j : compressed)", 8, 8, 4, vl=4)
    variants = [
        KernelSpec("csr", base.level_map, 8, 8, 5, vl=4),
        KernelSpec("csr", base.level_map, 8, 8, 4, vl=4, activation="relu"),
        KernelSpec("csr", base.level_map, 8, 8, 4, vl=4, bias=True),
        KernelSpec("csr", base.level_map, 16, 8, 4, vl=4),
    ]
    keys = {disk_cache._key(base, 3), disk_cache._key(base, 2)} | {disk_cache._key(v, 3) for v in variants}
    assert len(keys) == 6
