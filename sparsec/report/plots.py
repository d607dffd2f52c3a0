"""PNG figures of a profile: per-layer mask heatmap and per-layer time breakdown (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from sparsec.report.profile import ProfileReport


def write_plots(rep: ProfileReport, out_dir: str | Path) -> list[Path]:
    """Write ``density.png`` (layers x density / 2:4 / block occupancy) and ``time.png``; returns the paths."""
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
    return paths
