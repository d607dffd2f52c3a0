"""bench_hybrid's weights have the patterns it names, and one case runs every format, checked (no timing asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_hybrid.py"
    spec = importlib.util.spec_from_file_location("bench_hybrid", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("pattern", ["random", "blocks+outliers", "blocks+0.1%", "50/50"])
def test_weights_are_90_percent_sparse(pattern):
    w = _bench().weight(pattern, 768, 768, 0)
    assert float((w != 0).float().mean()) == pytest.approx(0.1, abs=0.02)


def test_one_case_runs_every_format():
    bench = _bench()
    r = bench.case("blocks+outliers", 96, 128, 8, threads=1, rounds=1, reps=1, cpu_time=True)
    assert "hybrid16x16" in r["times"] and "csr" in r["times"] and "torch" in r["times"]
    assert r["chosen"] in ("dense", *bench.FORMATS)
