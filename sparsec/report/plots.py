"""PNG figures of a profile (matplotlib, Agg backend): per-layer mask heatmap, per-layer time breakdown, and
speedup against density per format.

``speedup.png`` draws, for every layer, each format's speedup by the fit rule (``1 / work`` of
:func:`sparsec.report.hwfit.format_work`: lines, one per format family) and, for a compiled model, the
cost model's estimate and autotune's measurement of the format each layer got (markers)."""

from __future__ import annotations

from pathlib import Path

from sparsec.report.hwfit import format_work
from sparsec.report.profile import ProfileReport
from sparsec.report.report import Report


def write_plots(rep: ProfileReport, out_dir: str | Path, compiled: Report | None = None) -> list[Path]:
    """Write ``density.png`` (layers x density / 2:4 / block occupancy), ``time.png`` and ``speedup.png``
    (with ``compiled``, a CompiledModel's ``report()``, its layers' formats too); returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [x.name for x in rep.layers]
    cols = ["density", "2:4", "b8 occ", "b16 occ", "b32 occ", "empty rows"]
    grid = []
    for x in rep.layers:
        f = x.fit
        occ = f.get("block_occupancy", {})
        grid.append([f.get("density", 1.0), f.get("nm", {}).get("2:4") or 0.0, occ.get(8, 1.0), occ.get(16, 1.0),
                     occ.get(32, 1.0), f.get("empty_rows", 0.0)])
    height = 1.5 + 0.25 * len(names)
    fig, ax = plt.subplots(figsize=(7, height))
    im = ax.imshow(grid or [[0.0] * len(cols)], aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax, label="fraction")
    ax.set_title("weight density and mask fit per layer")
    fig.tight_layout()
    paths = [out / "density.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, height))
    times = [x.time_us or 0.0 for x in rep.layers]
    ax.barh(range(len(names)), times, color=["tab:blue" if x.kind in ("linear", "conv2d", "dense", "conv1d-hf")
                                             else "tab:orange" for x in rep.layers])
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("measured time per call (us); orange = sparse kernel")
    ax.set_title(f"time per layer (call total {rep.total_time_us:.0f} us)")
    fig.tight_layout()
    paths.append(out / "time.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    paths.append(_speedup_plot(plt, rep, compiled, out / "speedup.png"))
    return paths


def _family(fmt: str) -> str:
    return fmt[:5] if fmt.startswith("nm") else fmt


def _speedup_plot(plt, rep: ProfileReport, compiled: Report | None, path: Path) -> Path:
    """Speedup against density, per format: the fit rule for every layer, the compiled choice when given."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for x in rep.layers:
        if not x.fit:
            continue
        for fmt, work in format_work(x.fit).items():
            if fmt != "dense":
                series.setdefault(_family(fmt), []).append((x.fit["density"], 1.0 / max(work, 1e-3)))
    for fmt, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linewidth=1, label=f"{fmt} (fit rule)")
    for r in compiled.layers if compiled is not None else []:
        ax.scatter([r.density], [r.est_speedup], marker="x", color="black")
        if r.measured_us and r.measured_dense_us:
            ax.scatter([r.density], [r.measured_dense_us / r.measured_us], marker="o", facecolors="none",
                       edgecolors="red")
    if compiled is not None:
        ax.scatter([], [], marker="x", color="black", label="compiled layer, cost model")
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="red", label="compiled layer, autotune measured")
    ax.axhline(1.0, color="gray", linewidth=0.8)
    xs = [p[0] for pts in series.values() for p in pts] + [r.density for r in (compiled.layers if compiled is not None else [])]
    if xs and max(xs) - min(xs) < 0.05:  # layers pruned alike: a readable window, not a 1e-7 axis with an offset
        mid = (max(xs) + min(xs)) / 2
        ax.set_xlim(max(0.0, mid - 0.05), min(1.0, mid + 0.05))
    ax.ticklabel_format(axis="x", useOffset=False)
    ax.set_xlabel("weight density")
    ax.set_ylabel("speedup over dense")
    ax.set_yscale("log")
    ax.set_title("speedup vs density per format")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
