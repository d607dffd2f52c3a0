"""Run the CPU benchmark: grid, end to end, targets; write RESULTS.md, the JSON and the plot."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparsec.bench.e2e import E2EConfig, run_e2e
from sparsec.bench.grid import GridConfig, run_grid
from sparsec.bench.machine import load_average, machine_info
from sparsec.bench.plot import plot_speedups
from sparsec.bench.report import render, write_section
from sparsec.bench.targets import compute_targets


@dataclass(frozen=True)
class BenchConfig:
    """A whole run: the grid, the end-to-end models, threads."""

    grid: GridConfig = field(default_factory=GridConfig)
    e2e: E2EConfig = field(default_factory=E2EConfig)
    threads: int = 2
    quick: bool = False


def full_config(threads: int = 2) -> BenchConfig:
    """The issue's grid and models (~10 minutes on a quiet 2-core machine)."""
    return BenchConfig(threads=threads)


def quick_config(threads: int = 2) -> BenchConfig:
    """A reduced grid and a 2-layer BERT: under a minute, to exercise the harness (figures are indicative)."""
    grid = GridConfig(shapes=((768, 768), (3072, 768)), ns=(1, 64), sparsities=(0.7, 0.9, 0.99),
                      patterns=("unstructured", "nm2:4", "block16"), budget_s=0.025)
    e2e = E2EConfig(bert_layers=2, budget_s=0.4, layer_budget_s=0.02)
    return BenchConfig(grid=grid, e2e=e2e, threads=threads, quick=True)


def output_paths(out: Path) -> tuple[Path, Path]:
    """(JSON, PNG) next to the markdown: results_cpu.json / speedup_cpu.png beside a RESULTS.md."""
    if out.name == "RESULTS.md":
        return out.with_name("results_cpu.json"), out.with_name("speedup_cpu.png")
    return out.with_suffix(".json"), out.with_suffix(".png")


def run_bench(cfg: BenchConfig, out: Path, command: str, log: Callable[[str], None] = print) -> dict:
    """Run everything in ``cfg``; write ``out`` (CPU section), its JSON and plot; return the payload."""
    logging.getLogger("torch._export").setLevel(logging.ERROR)  # "dimension ... 0/1 specialized" at N=1
    torch.set_num_threads(cfg.threads)
    load0 = load_average()
    if load0 is not None and load0 > 0.5:
        log(f"note: 1-min load average is {load0:.2f}: other processes are running; timings will be noisy")
    start = time.perf_counter()
    with torch.no_grad():
        grid = run_grid(cfg.grid, cfg.threads, log) if cfg.grid.shapes else []
    grid_s = time.perf_counter() - start
    e2e = run_e2e(cfg.e2e, cfg.threads, log) if cfg.e2e.models else []
    targets = compute_targets(grid, e2e, cfg.quick)
    json_path, png_path = output_paths(out)
    payload = {
        "command": command, "machine": machine_info(cfg.threads), "load": [load0, load_average()],
        "config": dataclasses.asdict(cfg), "grid_s": grid_s, "total_s": time.perf_counter() - start,
        "targets": [dataclasses.asdict(t) for t in targets], "grid": grid, "e2e": e2e,
    }
    title = f"{payload['machine']['cpu']}, torch {cfg.threads} threads" + (" (--quick)" if cfg.quick else "")
    plot = plot_speedups(grid, png_path, title)
    write_section(out, render(payload, targets, plot.name if plot else None, json_path.name))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=1))
    log(f"wrote {out}, {json_path}" + (f", {plot}" if plot else ""))
    for t in targets:
        log(f"  [{t.status}] {t.case}: {t.goal} -> {t.reached}")
    return payload


def all_correct(payload: dict) -> bool:
    """Whether every grid row and every model matched dense/eager."""
    return all(r["ok"] for r in payload["grid"]) and all(
        r["ok"] and all(x.get("ok", True) for x in r["layer_check"]) for r in payload["e2e"])
