"""The profile's records (LayerProfile, ProfileReport) and its timers, shared by the eager profile
(sparsec/report/profile.py) and the compiled one (sparsec/report/profile_compiled.py)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from sparsec import knobs
from sparsec.report import energy


@dataclass
class LayerProfile:
    """One weight-bearing layer."""

    name: str
    kind: str  # linear | conv2d | conv1d-hf | the compiled format
    shape: tuple[int, ...]
    n: int  # rows of the matmul (tokens; batch x output pixels for a conv)
    dtype: str
    dense_flops: int
    executed_flops: int
    weight_bytes: int  # as stored: dense values, or packed values + indices
    activation_bytes: int
    time_us: float | None
    energy_uj: float
    fit: dict = field(default_factory=dict)

    @property
    def effective_sparsity(self) -> float:
        """Fraction of the dense FLOPs not executed."""
        return 1.0 - self.executed_flops / max(self.dense_flops, 1)


@dataclass
class ProfileReport:
    """``profile``'s result: ``str()`` is a table, ``to_json()`` the same numbers."""

    layers: list[LayerProfile]
    total_time_us: float
    rapl_uj: float | None  # measured package energy per call, when RAPL is readable
    compiled: bool

    def totals(self) -> dict:
        """Sums over the layers, plus the whole call's measured time."""
        dense = sum(x.dense_flops for x in self.layers)
        executed = sum(x.executed_flops for x in self.layers)
        moved = sum(x.weight_bytes + x.activation_bytes for x in self.layers)
        return {"dense_flops": dense, "executed_flops": executed, "bytes_moved": moved,
                "effective_sparsity": 1.0 - executed / max(dense, 1), "time_us": self.total_time_us,
                "layer_time_us": sum(x.time_us or 0.0 for x in self.layers),
                "energy_uj_estimate": sum(x.energy_uj for x in self.layers), "energy_uj_rapl": self.rapl_uj,
                "pj_per_flop": knobs.get("pj_per_flop"), "pj_per_byte": knobs.get("pj_per_byte")}

    def to_json(self, indent: int | None = 1) -> str:
        """Every layer's numbers and the totals as JSON."""
        rows = [dict(asdict(x), effective_sparsity=x.effective_sparsity) for x in self.layers]
        return json.dumps({"compiled": self.compiled, "layers": rows, "totals": self.totals()}, indent=indent)

    def __str__(self) -> str:
        head = ("layer", "kind", "shape", "N", "dense MFLOP", "exec MFLOP", "skip", "MB moved", "time us",
                "uJ est", "2:4", "b16 occ", "empty rows", "needs")
        rows = []
        for x in self.layers:
            nm = x.fit.get("nm", {}).get("2:4")
            rows.append((
                x.name, x.kind, "x".join(map(str, x.shape)), str(x.n), f"{x.dense_flops / 1e6:.2f}",
                f"{x.executed_flops / 1e6:.2f}", f"{x.effective_sparsity:.0%}",
                f"{(x.weight_bytes + x.activation_bytes) / 1e6:.3f}",
                "-" if x.time_us is None else f"{x.time_us:.0f}", f"{x.energy_uj:.1f}",
                "-" if nm is None else f"{nm:.0%}", _pct(x.fit.get("block_occupancy", {}).get(16)),
                _pct(x.fit.get("empty_rows")), x.fit.get("needs", "-"),
            ))
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        t = self.totals()
        rapl = "n/a (RAPL not readable)" if t["energy_uj_rapl"] is None else f"{t['energy_uj_rapl']:.0f} uJ"
        lines.append(
            f"total: {t['dense_flops'] / 1e6:.1f} dense MFLOP -> {t['executed_flops'] / 1e6:.1f} executed "
            f"({t['effective_sparsity']:.0%} skipped); {t['bytes_moved'] / 1e6:.2f} MB moved; call "
            f"{t['time_us']:.0f} us; energy est {t['energy_uj_estimate']:.0f} uJ "
            f"({knobs.get('pj_per_flop'):g} pJ/FLOP, {knobs.get('pj_per_byte'):g} pJ/byte), measured {rapl}"
        )
        return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}"


class Timer:
    """Forward pre/post hooks recording each module's wall time and its last input/output shapes."""

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.times: dict[str, list[float]] = {k: [] for k in modules}
        self.io: dict[str, tuple] = {}
        self._start: dict[str, float] = {}
        self.handles = []
        for name, mod in modules.items():
            self.handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self.handles.append(mod.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(_mod, _args):
            self._start[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(_mod, args, out):
            self.times[name].append(time.perf_counter() - self._start[name])
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
                self.io[name] = (tuple(x.shape), tuple(out.shape), x.element_size(), out.element_size())
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def median_us(self, name: str) -> float | None:
        t = self.times.get(name)
        return statistics.median(t) * 1e6 if t else None


def timed_calls(model, args, kwargs, repeats: int) -> tuple[float, float | None]:
    """Median wall time of a call in us, and RAPL microjoules per call (None when unreadable)."""
    with torch.no_grad():
        model(*args, **kwargs)  # warm-up: first calls compile variants, fault pages in
        e0, times = energy.rapl_uj(), []
        for _ in range(repeats):
            t = time.perf_counter()
            model(*args, **kwargs)
            times.append(time.perf_counter() - t)
        e1 = energy.rapl_uj()
    rapl = (e1 - e0) / repeats if e0 is not None and e1 is not None and e1 >= e0 else None
    return statistics.median(times) * 1e6, rapl


def numel(shape: tuple) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
