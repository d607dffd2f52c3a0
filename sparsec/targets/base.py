"""The Target interface: everything the compiler asks of one backend, in one object.

A compile resolves its ``target`` option ("cpu", "gpu", "interpret") to a :class:`Target`
(``sparsec.targets.get_target``) and puts it in the pass context as ``ctx.target``. The passes ask it,
and never compare target names or import a backend's classes:

- ``machine(...)``: the cost model's rates for this backend (and the calibrate stage's status line);
  ``layer_machine(layer, ctx)`` the rates one layer is priced with (a 16-bit CPU layer has its own);
- ``rejects_layer(layer)`` / ``rejects(layer, fmt)``: why this backend keeps a layer dense, or cannot run
  a format for it (None when it can) — select asks;
- ``module(layer, fmt, weight, bias, threads)``: the runtime module (a ``SparseModule``) that lower puts
  in the graph; ``gather_module(...)`` the same for the gather pass's SDDMM / masked-sum sites;
- ``time(layer, labels, weight, threads)``: wall and one-thread CPU time of dense and each candidate
  format, run by the very modules this backend runs — autotune asks, and caches the decision under
  ``machine_key(threads, dtype)``;
- ``codegen_stages`` and ``codegen_text(layers, stage)``: the codegen stages its kernels go through
  (``cm.ir(name)``).

The concrete targets live in sparsec/targets/cpu/target.py and sparsec/targets/gpu/target.py; see
docs/targets.md for how to add one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from sparsec import knobs
from sparsec.formats import registry
from sparsec.formats.base import SparseFormat
from sparsec.formats.cost import Machine
from sparsec.runtime.module import SparseModule


def sample(fn: Callable[[], object], clock: Callable[[], float], sync: Callable[[], None],
           budget: float = 0.02) -> float:
    """Lower quartile of ``fn``'s time by ``clock`` over ~budget seconds (at least 3 calls)."""
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 100):
        sync()
        t = clock()
        fn()
        sync()
        times.append(clock() - t)
    times.sort()
    return times[len(times) // 4]


class Target:
    """One backend. Subclasses set the class attributes and implement the methods that raise here."""

    #: the name users pass as ``target=`` (and ``CompiledModel.target``)
    name: str = ""
    #: the codegen stages this target's kernels go through, in order (``cm.stages()`` ends with them)
    codegen_stages: tuple[str, ...] = ()
    #: what its kernels are written in, for messages ("MLIR", "Triton")
    kernel_language: str = ""
    #: autotune="auto" measures the layers select marked (``layer.verify``); else only autotune=True does
    tunes_marked_layers: bool = False
    #: the gather pass's site kinds this target has kernels for ("sddmm", "sum")
    gather_kinds: tuple[str, ...] = ()
    #: a compile whose layers all stayed dense calls the source model itself (same device, same code)
    runs_source_when_dense: bool = False
    #: the ``quantize=`` modes it has kernels for ("int8"); select raises NotImplementedError for others
    quantize_modes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<target {self.name}>"

    def unavailable(self) -> str | None:
        """Why this target cannot run on this machine (a missing package or device), or None when it can."""
        return None

    # --- the cost model ---------------------------------------------------------------------------
    def machine(self, threads: int, calibrate: bool, pinned: bool) -> tuple[Machine, str]:
        """The cost model's rates at ``threads`` and a line saying where they came from.

        ``calibrate``: the option; ``pinned``: a saved model's formats are kept, so no rates are needed."""
        raise NotImplementedError(f"target {self.name!r} has no cost model")

    def layer_machine(self, layer, ctx) -> Machine:
        """The rates ``layer`` is priced with (``ctx.machine`` unless a layer kind needs its own)."""
        return ctx.machine

    def machine_key(self, threads: int, dtype: torch.dtype = torch.float32) -> str:
        """Everything a measurement on this target depends on (autotune caches its decisions under it)."""
        raise NotImplementedError(f"target {self.name!r} has no machine key")

    # --- what it runs -----------------------------------------------------------------------------
    def rejects_layer(self, layer) -> str | None:
        """Why every sparse format is out for ``layer`` on this target (its dtype, its kind), or None."""
        return None

    def rejects(self, layer, fmt: SparseFormat) -> str | None:
        """Why this target cannot run ``fmt`` for ``layer`` (no kernel for it), or None when it can."""
        return None

    def module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
               threads: int) -> SparseModule:
        """The runtime module computing ``layer``'s fused group (activation, residual) with ``fmt``."""
        raise NotImplementedError(f"target {self.name!r} builds no runtime modules")

    def linear_module(self, name: str, fmt: SparseFormat, weight: torch.Tensor, threads: int) -> SparseModule:
        """A plain ``x @ W^T`` module in ``fmt`` (no bias or epilogue): what autotune times."""
        raise NotImplementedError(f"target {self.name!r} builds no runtime modules")

    def trains_parameters(self, module: SparseModule) -> bool:
        """Whether ``module`` can give gradients to the model's own weight and bias (lower links them)."""
        return False

    def gather_module(self, kind: str, name: str, s: torch.Tensor, *args) -> SparseModule:
        """The runtime module of a gather site of ``kind`` (one of ``gather_kinds``) over the constant ``s``."""
        raise NotImplementedError(f"target {self.name!r} has no {kind} gather kernel")

    # --- autotune ---------------------------------------------------------------------------------
    def tune_threads(self, threads: int) -> int:
        """The thread count a measurement runs at (``threads``: the compile's)."""
        return threads

    def sync(self) -> None:
        """Wait for work queued on the device (nothing on a host target)."""

    def time(self, layer, labels: list[str], weight: torch.Tensor, threads: int) -> dict[str, dict[str, float]]:
        """{"wall": label -> s at ``threads``, "cpu1": label -> CPU s on one thread}, rounds interleaved.

        ``labels``: "dense" (torch's ``F.linear`` on the weight) and format labels, each run by
        :meth:`linear_module` — the kernels this target runs — on ``layer.n`` random rows."""
        x = torch.randn(layer.n, weight.shape[1], generator=torch.Generator().manual_seed(0))
        x = x.to(device=weight.device, dtype=weight.dtype)
        runs = {}
        for label in labels:
            if label == "dense":
                runs[label] = (lambda: torch.nn.functional.linear(x, weight),) * 2
            else:
                fmt = registry.get_format(label)
                many = self.linear_module(layer.name, fmt, weight, threads)
                one = many if threads == 1 else self.linear_module(layer.name, fmt, weight, 1)
                runs[label] = (lambda m=many: m(x), lambda m=one: m(x))
        wall = {k: float("inf") for k in labels}
        cpu1 = dict(wall)
        torch_threads = torch.get_num_threads()
        for fn_many, _ in runs.values():
            fn_many()  # compile and warm every candidate before any timing
        self.sync()
        for _ in range(knobs.get("autotune_rounds")):  # each: a wall-time and a 1-thread CPU-time sample set
            for label, (fn_many, fn_one) in runs.items():
                wall[label] = min(wall[label], sample(fn_many, time.perf_counter, self.sync))
                torch.set_num_threads(1)
                try:
                    cpu1[label] = min(cpu1[label], sample(fn_one, time.thread_time, self.sync))
                finally:
                    torch.set_num_threads(torch_threads)
        return {"wall": wall, "cpu1": cpu1}

    # --- codegen stages ---------------------------------------------------------------------------
    def codegen_text(self, layers: list, stage: str) -> str:
        """The text of codegen stage ``stage`` (one of ``codegen_stages``) for the lowered ``layers``;
        "" when no layer has a kernel in it (the caller says why)."""
        raise NotImplementedError(f"target {self.name!r} has no codegen stages")

    # --- quantized layers (quantize="int8") ---------------------------------------------------------
    def rejects_quantized(self, mode: str, fmt: SparseFormat) -> str | None:
        """Why ``fmt`` has no ``mode`` kernel here (None when it has one)."""
        return f"no {mode} kernels on target {self.name!r}"

    def quantized_module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                         threads: int) -> torch.nn.Module:
        """The runtime module of a quantized layer (``layer.quantize``) in ``fmt`` (dense included)."""
        raise NotImplementedError(f"target {self.name!r} has no quantized layers")

    def measure_quantization(self, gm, inputs: tuple) -> None:
        """Run the lowered ``gm`` once so each quantized module records its error (the report's column)."""
        raise NotImplementedError(f"target {self.name!r} has no quantized layers")

    def float_module(self, layer, fmt: SparseFormat, weight: torch.Tensor, bias: torch.Tensor | None,
                     has_residual: bool, threads: int) -> torch.nn.Module:
        """The unquantized module replacing a quantized layer whose measured error is above
        ``quantize_max_error`` (``fmt`` dense included; same call signature and fused epilogue; lower calls
        it after the fused nodes left the graph, so ``has_residual`` says whether a residual is added)."""
        raise NotImplementedError(f"target {self.name!r} has no quantized layers")
