"""``sparsec.profile(model, inputs)``: what each layer really executes, moves, costs in time and energy, and how
well its mask fits sparse hardware — for an eager model and for a CompiledModel alike.

Per layer: dense FLOPs (``2 N out in``, conv: per output pixel), executed FLOPs (eager runs every one; a
compiled sparse layer runs its kernel's stored entries), effective sparsity (``1 - executed / dense``: zeros
actually skipped), bytes moved (weight values + indices as stored, input and output activations, each in its
real dtype), measured time (median over ``repeats`` calls, by forward hooks; a compiled model's dense layers
run inside the graph and have no per-layer time), the energy estimate (sparsec/report/energy.py) and the mask
fit (sparsec/report/hwfit.py).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from sparsec import knobs
from sparsec.report import energy
from sparsec.report.hwfit import mask_fit


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


def _weight_layers(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str, bool]]:
    """name -> (module, kind, weight stored [in, out]) for every Linear, Conv2d and HF Conv1D."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out[name] = (mod, "linear", False)
        elif isinstance(mod, torch.nn.Conv2d):
            out[name] = (mod, "conv2d", False)
        elif type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None:
            out[name] = (mod, "conv1d-hf", True)
    return out


class _Timer:
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


def _timed_calls(model, args, kwargs, repeats: int) -> tuple[float, float | None]:
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


def profile(model: torch.nn.Module, inputs, kwargs: dict | None = None, repeats: int = 5) -> ProfileReport:
    """Profile ``model`` (an nn.Module or a CompiledModel) on ``inputs``; see the module docstring."""
    from sparsec.compiler.compiled_model import CompiledModel

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    inputs, kwargs = tuple(inputs), kwargs or {}
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if isinstance(model, CompiledModel):
        from sparsec.report.profile_compiled import profile_compiled

        return profile_compiled(model, inputs, kwargs, repeats)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"profile needs a torch.nn.Module or a CompiledModel, got {type(model).__name__}")
    layers = _weight_layers(model)
    timer = _Timer({k: v[0] for k, v in layers.items()})
    try:
        total_us, rapl = _timed_calls(model, inputs, kwargs, repeats)
    finally:
        timer.close()
    rows = []
    for name, (mod, kind, transposed) in layers.items():
        if name not in timer.io:
            continue  # not called on these inputs
        in_shape, out_shape, in_el, out_el = timer.io[name]
        w = mod.weight
        fit = mask_fit(w, transposed)
        if kind == "conv2d":
            n = out_shape[0] * out_shape[2] * out_shape[3] if len(out_shape) == 4 else out_shape[1] * out_shape[2]
            per_row = w[0].numel()
            dense = 2 * n * w.shape[0] * per_row
        else:
            out_f, in_f = (w.shape[1], w.shape[0]) if transposed else (w.shape[0], w.shape[1])
            n = max(1, _numel(in_shape) // in_f)
            dense = 2 * n * out_f * in_f
        wbytes = w.numel() * w.element_size() + (mod.bias.numel() * mod.bias.element_size()
                                                  if getattr(mod, "bias", None) is not None else 0)
        abytes = _numel(in_shape) * in_el + _numel(out_shape) * out_el
        rows.append(LayerProfile(
            name=name, kind=kind, shape=tuple(w.shape), n=n, dtype=str(w.dtype).replace("torch.", ""),
            dense_flops=dense, executed_flops=dense, weight_bytes=wbytes, activation_bytes=abytes,
            time_us=timer.median_us(name), energy_uj=energy.estimate_uj(dense, wbytes + abytes), fit=fit,
        ))
    return ProfileReport(rows, total_us, rapl, compiled=False)


def _numel(shape: tuple) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
