"""benchmarks/bench_comm.py end to end on the smallest configuration: bytes targets, section, load flag.

Only bytes are asserted (they do not depend on the machine's load); step times are never asserted.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from sparsec.bench.sections import read_section

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_comm.py"


def _bench():
    # imported by name (not from a file spec) so that the spawned ranks can unpickle bench_rank:
    # multiprocessing hands the parent's sys.path to its children
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    return importlib.import_module("bench_comm")


def test_bench_comm_mlp_two_ranks_meets_byte_targets(tmp_path):
    out = tmp_path / "RESULTS.md"
    rc = _bench().main(["--models", "mlp", "--worlds", "2", "--steps", "1", "--budget", "200", "--out", str(out)])
    assert rc == 0  # every byte target met and nothing skipped
    md = read_section(out, "comm")
    rows = {line.split(" | ")[2]: line for line in md.splitlines() if line.startswith("| mlp | 2 |")}
    assert set(rows) == {"default", "masked", "topk1%", "powersgd"}
    assert "100.00%" in rows["default"]
    assert rows["masked"].split(" | ")[6] == "yes" and rows["topk1%"].split(" | ")[6] == "yes"


@pytest.mark.parametrize("start,end,flagged", [(0.1, 3.5, False), (2.0, 0.5, True)])
def test_loaded_flag_follows_the_load_before_the_run(start, end, flagged):
    bench = _bench()
    calls = [("all_reduce", 4000)]
    run = {"calls": calls, "bytes": 4000, "own_bytes": None, "dense": 4000, "density": 1.0,
           "wall": 0.01, "cpu": 0.01}
    runs = {("mlp", 2): {h: dict(run) for h in bench.HOOKS}}
    md, _ = bench.report(runs, (start, end), "python benchmarks/bench_comm.py")
    assert ("(loaded)" in md) is flagged
