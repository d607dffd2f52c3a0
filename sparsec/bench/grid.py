"""The benchmark grid: shapes x N x sparsity x pattern, every implementation checked and timed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from sparsec.bench.methods import RTOL, WeightSuite, rel_error
from sparsec.bench.timing import time_interleaved
from sparsec.bench.weights import make_weight
from sparsec.runtime.progress import progress

#: the issue's grid
FULL_SHAPES = ((768, 768), (3072, 768), (768, 3072), (4096, 4096))
FULL_NS = (1, 8, 64, 256)
FULL_SPARSITIES = (0.5, 0.7, 0.9, 0.95, 0.99)
FULL_PATTERNS = ("unstructured", "nm2:4", "block16", "block32")


@dataclass(frozen=True)
class GridConfig:
    """Which rows to run and how long to time each implementation."""

    shapes: tuple[tuple[int, int], ...] = FULL_SHAPES  # W [out, in]
    ns: tuple[int, ...] = FULL_NS  # rows of X
    sparsities: tuple[float, ...] = FULL_SPARSITIES
    patterns: tuple[str, ...] = FULL_PATTERNS
    budget_s: float = 0.12  # per implementation per row
    seed: int = 0


def grid_cases(cfg: GridConfig) -> list[tuple[tuple[int, int], str, float]]:
    """(shape, pattern, sparsity) of every weight: 2:4 only at 50%, the other patterns at each sparsity."""
    cases = []
    for shape in cfg.shapes:
        for pattern in cfg.patterns:
            levels = (0.5,) if pattern.startswith("nm") else cfg.sparsities
            cases += [(shape, pattern, s) for s in levels]
    return cases


def _raise(exc: Exception):
    """A stand-in compiled model that re-raises the compile error (recorded as that method's failure)."""

    def fail(_x: torch.Tensor) -> torch.Tensor:
        raise exc

    return fail


def _sx(v: dict) -> str:
    return f"{v['speedup']:6.2f}x" if v["speedup"] is not None else " failed"


def run_row(suite: WeightSuite, n: int, budget_s: float, seed: int) -> dict:
    """Check and time every implementation on one (weight, N); returns the row's record."""
    out_f, in_f = suite.weight.shape
    x = torch.randn(n, in_f, generator=torch.Generator().manual_seed(seed + n))
    try:
        cm, chosen, compile_s = suite.compile_chosen(x)
    except Exception as exc:  # noqa: BLE001 - a compiler failure is a result of the benchmark, not its end
        cm, chosen, compile_s = _raise(exc), "error", None
    methods = suite.methods(x, cm, chosen)
    ref = methods[0].fn()
    checks, failed = {}, {}
    for m in methods:  # the first call also warms up (JIT compiles each SparseLinear kernel for this N)
        try:
            checks[m.name] = rel_error(m.as_nt(m.fn()), ref)
        except Exception as exc:  # noqa: BLE001
            failed[m.name] = f"raised {type(exc).__name__}: {str(exc)[:300]}"
    timings = time_interleaved({m.name: m.fn for m in methods if m.name not in failed}, budget_s)
    dense_s = timings["dense"].median_s
    rec_methods = {}
    for m in methods:
        if m.name in failed:
            rec_methods[m.name] = {"us": None, "speedup": None, "err": None, "ok": False, "note": failed[m.name]}
            continue
        t = timings[m.name]
        err = checks[m.name]
        rec_methods[m.name] = {
            "us": t.median_s * 1e6, "min_us": t.min_s * 1e6, "p25_us": t.p25_s * 1e6, "p75_us": t.p75_s * 1e6, "reps": t.reps,
            "speedup": dense_s / t.median_s, "err": err, "ok": err <= RTOL, "note": m.note,
        }
    best = max(rec_methods, key=lambda k: rec_methods[k]["speedup"] if rec_methods[k]["ok"] else 0.0)
    return {
        "out": out_f, "in": in_f, "n": n, "pattern": suite.pattern,
        "sparsity": 1.0 - suite.facts.density, "chosen": chosen, "compile_s": compile_s,
        "rejected": suite.rejected, "methods": rec_methods, "best": best,
        "ok": all(v["ok"] for v in rec_methods.values()),
    }


def run_grid(cfg: GridConfig, threads: int, log: Callable[[str], None] = print) -> list[dict]:
    """Run every row of the grid; ``log`` gets one line per row."""
    rows = []
    cases = grid_cases(cfg)
    start = time.perf_counter()
    if log is print:  # print through the bar so lines and bar do not interleave on a terminal
        log = tqdm.write
    for i, ((out_f, in_f), pattern, sparsity) in enumerate(progress(cases, "sparsec bench")):
        w = make_weight(out_f, in_f, sparsity, pattern, seed=cfg.seed + i)
        suite = WeightSuite(w, pattern, threads)
        for n in cfg.ns:
            row = run_row(suite, n, cfg.budget_s, cfg.seed)
            row["target_sparsity"] = sparsity
            rows.append(row)
            m = row["methods"]
            extra = "" if row["ok"] else "  WRONG: " + ", ".join(
                f"{k} " + (f"err {v['err']:.1e}" if v["err"] is not None else v["note"])
                for k, v in m.items() if not v["ok"])
            log(f"[{time.perf_counter() - start:6.1f}s] {out_f}x{in_f} N={n:<3} {pattern:<12} {sparsity:.0%}: "
                f"dense {m['dense']['us']:9.1f} us  sparsec[{row['chosen']}] {_sx(m['sparsec'])}  "
                f"best {row['best']} {_sx(m[row['best']])}{extra}")
        del suite
    annotate_baseline(rows)
    return rows


def annotate_baseline(rows: list[dict]) -> None:
    """Add ``dense_vs_best``: the row's dense median over the least dense median of its (shape, N).

    Dense time does not depend on the weight's values, so every row of one (shape, N) should measure the
    same baseline; a row far above the least one ran while something else loaded the machine.
    """
    best: dict[tuple[int, int, int], float] = {}
    for r in rows:
        key = (r["out"], r["in"], r["n"])
        best[key] = min(best.get(key, float("inf")), r["methods"]["dense"]["us"])
    for r in rows:
        r["dense_vs_best"] = r["methods"]["dense"]["us"] / best[(r["out"], r["in"], r["n"])]
