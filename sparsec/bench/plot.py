"""The plot: speedup over torch dense vs sparsity, one panel per pattern, one line per N (sparsec's pick)."""

from __future__ import annotations

import math
from pathlib import Path

PANELS = (("unstructured", "unstructured"), ("block16", "16×16 blocks"), ("block32", "32×32 blocks"),
          ("nm2:4", "2:4 (50%)"))


def _geomean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


BAR_METHODS = (("sparsec", "sparsec"), ("torch_csr", "torch CSR"), ("scipy_csr", "scipy CSR"))


def _bars(ax, rows: list[dict], ns: list[int], label: str) -> None:
    """2:4 exists only at 50%: grouped bars per N (geometric mean over shapes) instead of lines."""
    width = 0.8 / len(BAR_METHODS)
    for i, (method, name) in enumerate(BAR_METHODS):
        ys = [_geomean([r["methods"][method]["speedup"] for r in rows if r["n"] == n and method in r["methods"]])
              for n in ns]
        ax.bar([j + (i - (len(BAR_METHODS) - 1) / 2) * width for j in range(len(ns))], ys, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ns)), [f"N={n}" for n in ns])
    ax.set_title(label)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def plot_speedups(grid: list[dict], path: Path, title: str) -> Path | None:
    """Write the PNG; None (and nothing written) when matplotlib is missing or the grid is empty.

    Each panel: x = sparsity, y = speedup (log), solid lines = sparsec (the selector's pick) per N,
    geometric mean over the shapes; dashed grey = torch.sparse CSR (best call), dotted = scipy CSR, both
    averaged over shapes and N. The 2:4 panel (50% only) has grouped bars per N.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = [(p, t) for p, t in PANELS if any(r["pattern"] == p for r in grid)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    ns = sorted({r["n"] for r in grid})
    for ax, (pattern, label) in zip(axes[0], panels, strict=True):
        rows = [r for r in grid if r["pattern"] == pattern]
        if pattern == "nm2:4":
            _bars(ax, rows, ns, label)
            continue
        levels = sorted({r["target_sparsity"] for r in rows})
        for n in ns:
            ys = [_geomean([r["methods"]["sparsec"]["speedup"] for r in rows
                            if r["n"] == n and r["target_sparsity"] == s]) for s in levels]
            ax.plot(levels, ys, marker="o", label=f"sparsec N={n}")
        for method, style, name in (("torch_csr", "--", "torch CSR"), ("scipy_csr", ":", "scipy CSR")):
            ys = [_geomean([r["methods"][method]["speedup"] for r in rows
                            if r["target_sparsity"] == s and method in r["methods"]]) for s in levels]
            ax.plot(levels, ys, style, color="grey", marker="x", label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("sparsity")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("speedup over torch dense (2 threads)")
    line_axes = [ax for ax, (p, _) in zip(axes[0], panels, strict=True) if p != "nm2:4"]
    if line_axes:
        line_axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
