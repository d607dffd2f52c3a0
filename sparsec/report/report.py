"""report(): one row per weight-bearing layer — format, density, FLOPs, bytes, energy, mask fit, speedup, why.

FLOPs are counted for the example inputs: ``dense_flops = 2 N out in``; ``sparse_flops`` are the
multiply-adds the chosen kernel executes (explicit zeros inside stored blocks included; a dense layer's are
its dense FLOPs), and ``effective_sparsity = 1 - sparse_flops / dense_flops`` the zeros actually skipped.
``dense_bytes`` is the weight in its dtype, ``sparse_bytes`` the weight as the chosen format stores it (packed
values + indices + metadata; a dense layer's dense bytes), ``activation_bytes`` the matmul's input and output
``N x (in + out)`` in the layer's dtype, and ``bytes_moved`` their sum. ``energy_uj`` is the estimate of
sparsec/report/energy.py for the executed FLOPs and the bytes moved; ``fit`` the mask–hardware fit of
sparsec/report/hwfit.py (from the analyze pass's facts). ``measured_*_us`` are autotune's timings, when it
ran; ``sparsec.profile(cm, inputs)`` measures every sparse layer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from sparsec.report.energy import estimate_uj


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
    # plain defaults (no default_factory): a report pickled before these fields existed reads them from the class
    dtype: str = "float32"
    activation_bytes: int = 0
    fit: dict | None = None
    #: quantize="int8": max |y_int8 - y_fp32| / max |y_fp32| of this layer's output on the example inputs
    #: (also for a layer kept float32 because it was above ``quantize_max_error``: then dtype is float32)
    quant_error: float | None = None

    @property
    def est_speedup(self) -> float:
        """Predicted dense time over predicted time of the chosen format."""
        return self.predicted_dense_us / max(self.predicted_us, 1e-9)

    @property
    def effective_sparsity(self) -> float:
        """Fraction of the dense FLOPs the chosen kernel does not execute."""
        return 1.0 - self.sparse_flops / max(self.dense_flops, 1)

    @property
    def bytes_moved(self) -> int:
        """The weight as stored plus the input and output activations."""
        return self.sparse_bytes + self.activation_bytes

    @property
    def energy_uj(self) -> float:
        """Estimated microjoules of one call of this layer (executed FLOPs, bytes moved)."""
        return estimate_uj(self.sparse_flops, self.bytes_moved)

    def as_dict(self) -> dict:
        """Plain dict (JSON-able)."""
        d = asdict(self)
        d.update(est_speedup=self.est_speedup, effective_sparsity=self.effective_sparsity,
                 bytes_moved=self.bytes_moved, energy_uj=self.energy_uj)
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

    def totals(self) -> dict:
        """Sums over the layers: FLOPs, effective sparsity, bytes moved, the energy estimate."""
        from sparsec import knobs

        moved = sum(r.bytes_moved for r in self.layers)
        return {"dense_flops": self.total_dense_flops, "executed_flops": self.total_sparse_flops,
                "effective_sparsity": 1.0 - self.total_sparse_flops / max(self.total_dense_flops, 1),
                "bytes_moved": moved, "energy_uj_estimate": sum(r.energy_uj for r in self.layers),
                "pj_per_flop": knobs.get("pj_per_flop"), "pj_per_byte": knobs.get("pj_per_byte")}

    def to_json(self, indent: int | None = 1) -> str:
        """Every layer's numbers, the totals, the torch ops and the notes as JSON."""
        return json.dumps({"layers": [r.as_dict() for r in self.layers], "totals": self.totals(),
                           "torch_ops": sorted(set(self.torch_ops)), "notes": self.notes}, indent=indent)

    def __str__(self) -> str:
        head = ["layer", "format", "shape", "N", "density", "dense MFLOP", "exec MFLOP", "skip", "dense KB",
                "sparse KB", "MB moved", "uJ est", "est x", "meas x", "2:4", "b16 occ", "empty rows", "needs",
                "fused", "q err", "why"]
        rows = []
        for r in self.layers:
            meas = (
                f"{r.measured_dense_us / r.measured_us:.2f}"
                if r.measured_us and r.measured_dense_us else "-"
            )
            fit = r.fit or {}
            rows.append([
                r.name, r.format, f"{r.shape[0]}x{r.shape[1]}", str(r.n), f"{r.density:.3f}",
                f"{r.dense_flops / 1e6:.2f}", f"{r.sparse_flops / 1e6:.2f}", f"{r.effective_sparsity:.0%}",
                f"{r.dense_bytes / 1024:.0f}", f"{r.sparse_bytes / 1024:.0f}", f"{r.bytes_moved / 1e6:.3f}",
                f"{r.energy_uj:.1f}", f"{r.est_speedup:.2f}", meas, _pct(fit.get("nm", {}).get("2:4")),
                _pct(fit.get("block_occupancy", {}).get(16)), _pct(fit.get("empty_rows")), fit.get("needs", "-"),
                r.fused or "-", _quant_error(r), r.reason,
            ])
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
        lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
        lines += [fmt.format(*row) for row in rows]
        if self.layers:
            t = self.totals()
            lines.append(
                f"total: {self.total_dense_flops / 1e6:.1f} dense MFLOP -> {self.total_sparse_flops / 1e6:.1f} executed"
                f" ({t['effective_sparsity']:.0%} skipped); {t['bytes_moved'] / 1e6:.2f} MB moved; energy est "
                f"{t['energy_uj_estimate']:.0f} uJ ({t['pj_per_flop']:g} pJ/FLOP, {t['pj_per_byte']:g} pJ/byte)"
            )
        if self.torch_ops:
            lines.append("ops run by torch: " + ", ".join(sorted(set(self.torch_ops))))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}"


def _quant_error(r: LayerReport) -> str:
    """The ``q err`` cell: the measured int8 error, and the dtype the layer kept when it was too large."""
    if r.quant_error is None:
        return "-"
    return f"int8 {r.quant_error:.2%}" if r.dtype == "int8" else f"{r.dtype} (int8 {r.quant_error:.2%})"
