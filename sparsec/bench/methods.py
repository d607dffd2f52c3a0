"""The implementations timed on every grid row, built once per weight and bound to one input X.

* ``dense``: torch ``F.linear(X, W)`` (every speedup's baseline);
* ``sparsec``: what the selector picks: a one-Linear model compiled by ``sparse_compile`` (its
  ``cm.report().layers[0].format``), called as users call it (``cm(X)``);
* ``sparsec:<label>``: each registered sparse format that accepts the weight, forced, run by
  ``SparseLinear`` directly (the kernel without the compiled model's call overhead);
* ``torch_csr`` / ``torch_bsr<b>``: torch.sparse; the fastest of the plausible calls
  (``torch.sparse.mm(W, X.t())``, ``W @ X.t()``, ``F.linear(X, W)``), chosen once per row;
* ``scipy_csr``: ``W_sp @ X.T`` (scipy is single-threaded).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sparsec.bench.weights import pattern_block

#: the issue's tolerance: max |got - dense| relative to the output's scale (at least 1)
RTOL = 1e-4

warnings.filterwarnings("ignore", message=".*Sparse (BSR|CSR) tensor support is in beta.*")


@dataclass
class Method:
    """One implementation bound to an input: ``fn()`` runs it; ``as_nt`` turns its output into [N, out]."""

    name: str
    fn: Callable[[], object]
    as_nt: Callable[[object], torch.Tensor]
    note: str = ""


def _identity(y: object) -> torch.Tensor:
    return y  # type: ignore[return-value]


def _transposed(y: object) -> torch.Tensor:
    return y.t()  # type: ignore[union-attr]


def _numpy_transposed(y: object) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y)).t()


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| over max(max |ref|, 1); inf when shapes differ or got holds NaN."""
    got = got.reshape(ref.shape) if got.numel() == ref.numel() else got
    if got.shape != ref.shape:
        return float("inf")
    err = float((got.float() - ref).abs().max()) / max(float(ref.abs().max()), 1.0)
    return err if err == err else float("inf")


def _fastest(candidates: dict[str, Callable[[], object]]) -> tuple[str, Callable[[], object]] | None:
    """The candidate with the least time for one warm call (each run once to warm up first)."""
    best: tuple[float, str, Callable[[], object]] | None = None
    for name, fn in candidates.items():
        try:
            fn()
        except (RuntimeError, NotImplementedError, TypeError):
            continue  # this torch build does not support that call for the layout
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        if best is None or dt < best[0]:
            best = (dt, name, fn)
    return None if best is None else (best[1], best[2])


class WeightSuite:
    """Every representation of one weight, built once and reused for every N of a grid row."""

    def __init__(self, weight: torch.Tensor, pattern: str, threads: int) -> None:
        import scipy.sparse

        from sparsec.formats.facts import compute_facts
        from sparsec.formats.registry import formats
        from sparsec.targets.cpu.sparse_linear import SparseLinear

        self.weight = weight.contiguous()
        self.pattern = pattern
        self.threads = threads
        self.facts = compute_facts(self.weight)
        self.forced: dict[str, SparseLinear] = {}
        self.rejected: dict[str, str] = {}
        for fmt in formats():
            if fmt.level_map is None:  # dense: that is the torch baseline
                continue
            why = fmt.accepts(self.facts)
            if why is not None:
                self.rejected[fmt.label] = why
                continue
            try:
                self.forced[fmt.label] = SparseLinear("bench", fmt, self.weight, None, None, False, threads)
            except Exception as exc:  # noqa: BLE001 - a packing failure is a finding, not the end of the run
                self.rejected[fmt.label] = f"packing raised {type(exc).__name__}: {str(exc)[:200]}"
        self.w_csr = self.weight.to_sparse_csr()
        b = pattern_block(pattern)
        self.bsr_block = b
        self.w_bsr = self.weight.to_sparse_bsr(b) if b is not None and not any(
            s % b for s in self.weight.shape) else None
        self.w_scipy = scipy.sparse.csr_matrix(self.weight.numpy())
        self.linear = torch.nn.Linear(self.weight.shape[1], self.weight.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(self.weight)
        self.linear.eval()

    def compile_chosen(self, x: torch.Tensor) -> tuple[object, str, float]:
        """Compile the one-Linear model for ``x``; returns (compiled model, chosen format, seconds)."""
        import sparsec

        t = time.perf_counter()
        cm = sparsec.sparse_compile(self.linear, (x,), target="cpu")
        dt = time.perf_counter() - t
        layers = cm.report().layers
        return cm, (layers[0].format if layers else "dense"), dt

    def methods(self, x: torch.Tensor, chosen_model: object, chosen: str) -> list[Method]:
        """Every implementation bound to ``x`` [N, in] (dense first)."""
        w = self.weight
        xt = x.t()
        xt_c = x.t().contiguous()
        out = [Method("dense", lambda: F.linear(x, w), _identity)]
        out.append(Method("sparsec", lambda: chosen_model(x), _identity, note=chosen))
        for label, layer in self.forced.items():
            out.append(Method(f"sparsec:{label}", lambda layer=layer: layer(x), _identity, note=label))
        csr = self.w_csr
        pick = _fastest({
            "torch.sparse.mm(W, X.t())": lambda: torch.sparse.mm(csr, xt),
            "F.linear(X, W)": lambda: F.linear(x, csr),
        })
        if pick is not None:
            call, fn = pick
            out.append(Method("torch_csr", fn, _transposed if call.startswith("torch.sparse") else _identity, call))
        if self.w_bsr is not None:
            bsr = self.w_bsr
            pick = _fastest({
                "torch.sparse.mm(W, X.t())": lambda: torch.sparse.mm(bsr, xt_c),
                "W @ X.t()": lambda: bsr @ xt_c,
                "F.linear(X, W)": lambda: F.linear(x, bsr),
            })
            if pick is not None:
                call, fn = pick
                as_nt = _identity if call.startswith("F.linear") else _transposed
                out.append(Method(f"torch_bsr{self.bsr_block}", fn, as_nt, call))
        wsp, xn_t = self.w_scipy, x.numpy().T
        out.append(Method("scipy_csr", lambda: wsp @ xn_t, _numpy_transposed, "W_sp @ X.T (1 thread)"))
        return out
