"""The plot: speedup over torch dense vs sparsity, one panel per pattern, one line per N (sparsec's pick)."""

from __future__ import annotations

import math
from pathlib import Path

PANELS = (("unstructured", "unstructured"), ("block16", "16×16 blocks"), ("block32", "32×32 blocks"),
          ("nm2:4", "2:4 (50%)"))


def _geomean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def plot_speedups(grid: list[dict], path: Path, title: str) -> Path | None:
    """Write the PNG; None (and nothing written) when matplotlib is missing or the grid is empty.

    Each panel: x = sparsity, y = speedup (log), solid lines = sparsec (the selector's pick) per N,
    geometric mean over the shapes; dashed grey = torch.sparse CSR (best call), dotted = scipy CSR, both
    averaged over shapes and N. The 2:4 panel has one point per N at 50%.
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
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
