"""report(): one row per weight-bearing layer — format, density, FLOPs, bytes, predicted speedup, why.

FLOPs are counted for the example inputs: ``dense_flops = 2 N out in``; ``sparse_flops`` are the
multiply-adds the chosen kernel executes (explicit zeros inside stored blocks included).
``sparse_bytes`` are the packed weight's real bytes: values + indices + metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    """One layer of the report."""

    name: str
    format: str
    shape: tuple[int, int]
    n: int
    density: float
    dense_flops: int
    sparse_flops: int
    dense_bytes: int
    sparse_bytes: int
    predicted_dense_us: float
    predicted_us: float
    reason: str
    fused: str = ""
    measured_dense_us: float | None = None
    measured_us: float | None = None

    @property
    def est_speedup(self) -> float:
        """Predicted dense time over predicted time of the chosen format."""
        return self.predicted_dense_us / max(self.predicted_us, 1e-9)

    def as_dict(self) -> dict:
        """Plain dict (JSON-able)."""
        d = asdict(self)
        d["est_speedup"] = self.est_speedup
        return d


@dataclass
class Report:
    """The per-layer table of a compiled model; ``str()`` prints it aligned."""

    layers: list[LayerReport] = field(default_factory=list)
    torch_ops: list[str] = field(default_factory=list)  # ops that run in plain torch
    notes: list[str] = field(default_factory=list)  # weights the compiler saw but could not make sparse, and why

    @property
    def total_dense_flops(self) -> int:
        """Sum over layers."""
        return sum(r.dense_flops for r in self.layers)

    @property
    def total_sparse_flops(self) -> int:
        """Sum over layers of executed FLOPs."""
        return sum(r.sparse_flops for r in self.layers)

    def __str__(self) -> str:
        head = ["layer", "format", "shape", "N", "density", "dense MFLOP", "exec MFLOP", "dense KB",
                "sparse KB", "est x", "meas x", "fused", "why"]
        rows = []
        for r in self.layers:
            meas = (
                f"{r.measured_dense_us / r.measured_us:.2f}"
                if r.measured_us and r.measured_dense_us else "-"
            )
            rows.append([
                r.name, r.format, f"{r.shape[0]}x{r.shape[1]}", str(r.n), f"{r.density:.3f}",
                f"{r.dense_flops / 1e6:.2f}", f"{r.sparse_flops / 1e6:.2f}", f"{r.dense_bytes / 1024:.0f}",
                f"{r.sparse_bytes / 1024:.0f}", f"{r.est_speedup:.2f}", meas, r.fused or "-", r.reason,
            ])
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
        lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
        lines += [fmt.format(*row) for row in rows]
        if self.layers:
            lines.append(
                f"total: {self.total_dense_flops / 1e6:.1f} dense MFLOP -> {self.total_sparse_flops / 1e6:.1f} executed"
            )
        if self.torch_ops:
            lines.append("ops run by torch: " + ", ".join(sorted(set(self.torch_ops))))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)
