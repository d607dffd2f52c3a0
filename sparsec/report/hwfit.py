"""Mask–hardware fit of one weight: how close its zeros are to what each kind of sparse hardware or kernel runs.

- ``nm``: for 2:4, 1:4 and 4:8, the fraction of groups of M consecutive inputs (per output row) holding at
  most N nonzeros (1.0 = the mask is N:M and sparse tensor cores / N:M kernels can run it as is);
- ``block_occupancy``: for 8/16/32 square blocks, the fraction of blocks that are not all zero (what a BSR
  kernel stores), and ``block_fill``: nonzeros per stored block entry (1.0 = no explicit zeros stored);
- ``empty_rows`` / ``empty_cols``: fractions of output / input channels that are all zero (removable);
- ``needs``: the format this mask fits best, by the rules in :func:`needed_format`.
"""

from __future__ import annotations

import torch

from sparsec.formats.facts import BLOCK_SIZES, NM_PATTERNS, WeightFacts, compute_facts


def as_matrix(weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """The weight as [out, in]: conv kernels flattened over (in, kh, kw); HF Conv1D ([in, out]) transposed."""
    w = weight.detach()
    if transposed:
        w = w.t()
    return w.reshape(w.shape[0], -1).float() if w.dim() != 2 else w.float()


def nm_compliance(w: torch.Tensor, n: int, m: int) -> float | None:
    """Fraction of groups of ``m`` along the input dimension with at most ``n`` nonzeros (None if in % m)."""
    if w.shape[1] % m:
        return None
    counts = (w != 0).reshape(w.shape[0], -1, m).sum(-1)
    return float((counts <= n).float().mean())


def mask_fit(weight: torch.Tensor, transposed: bool = False) -> dict:
    """Every fit measure of one weight (see the module docstring), JSON-able."""
    return fit_from_facts(compute_facts(as_matrix(weight, transposed)))


def fit_from_facts(facts: WeightFacts) -> dict:
    """The fit measures from the analyze pass's facts of a weight (what ``cm.report()`` shows without the weight)."""
    nnz = facts.nnz
    fractions = getattr(facts, "nm_fraction", {})
    occupancy = {b: facts.block_fill.get(b) for b in BLOCK_SIZES if b in facts.block_fill}
    fill = {b: nnz / max(facts.block_nonzero[b] * b * b, 1) for b in occupancy if b in facts.block_nonzero}
    fit = {
        "density": facts.density,
        "nm": {f"{n}:{m}": fractions.get(f"{n}:{m}") for n, m in NM_PATTERNS},
        "block_occupancy": occupancy,
        "block_fill": fill,
        "empty_rows": facts.zero_rows / max(facts.shape[0], 1),
        "empty_cols": facts.zero_cols / max(facts.shape[1], 1),
    }
    fit["needs"] = needed_format(fit)
    return fit


def format_work(fit: dict) -> dict[str, float]:
    """Each candidate format's relative work for this mask, dense = 1 (the rules of :func:`needed_format`)."""
    work = {"dense": 1.0, "csr": 2.0 * fit["density"]}
    for pat, ok in fit["nm"].items():
        if ok == 1.0:
            n, m = (int(v) for v in pat.split(":"))
            work[f"nm{pat}"] = 1.1 * n / m
    for b, occ in fit["block_occupancy"].items():
        work[f"bsr{b}x{b}"] = occ
    return work


def needed_format(fit: dict) -> str:
    """The format a mask like this runs in for the least work, by rule (the compiler's cost model decides per N).

    Each candidate's relative work, dense = 1: N:M (only when every group complies) N/M x 1.1 for the
    metadata; BSR-b its block occupancy (dense blocks run at near-GEMM rate); CSR 2 x density (an index per
    value and irregular access); channel removal when a quarter of the rows are empty. Dense when nothing is
    below 0.8 (a sparse kernel's overhead eats a smaller gain).
    """
    work = format_work(fit)
    best = min(work, key=work.get)
    if fit["empty_rows"] >= 0.25 and best == "dense":
        return "shrink (drop empty channels)"
    return best if work[best] < 0.8 else "dense"
