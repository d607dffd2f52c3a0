"""SparseGPT (Frantar & Alistarh 2023): OBS column-by-column pruning and reconstruction with H = XᵀX."""

from __future__ import annotations

import torch
from torch import nn

from .calib import weight_2d
from .masks import original
from .wanda import OneShotPruner


def sparsegpt_layer(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float,
                    nm: tuple[int, int] | None = None, *, blocksize: int = 128,
                    damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune a [out, in] weight given H = XᵀX (in x in); returns (new weight, keep-mask).

    Columns are pruned left to right; each pruned column's error is spread over the not yet processed
    columns through the upper Cholesky factor of H⁻¹ (H dampened by ``damp`` * mean diag). Unstructured
    masks are chosen per block of columns by w² / [H⁻¹]_jj², with exactly round(sparsity * n) zeros in all.
    """
    W = weight.detach().double().clone()
    H = hessian.detach().double().clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    idx = dead.nonzero().flatten()
    H[idx, idx] = 1.0  # an input that is always 0: its weights are irrelevant
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    total = rows * cols
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        d = torch.diag(Hinv1)
        if nm is None:  # cumulative rounding makes the per-block counts sum to round(sparsity * total)
            k = int(round(sparsity * rows * i2)) - int(round(sparsity * rows * i1))
            k = min(k, W1.numel()) if total else 0
            score = (W1 ** 2 / d.unsqueeze(0) ** 2).reshape(-1)
            p1 = torch.zeros(W1.numel(), dtype=torch.bool)
            p1[torch.argsort(score, stable=True)[:k]] = True
            p1 = p1.view_as(W1)
        else:
            p1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                s = W1[:, i:i + nm[1]] ** 2 / d[i:i + nm[1]].unsqueeze(0) ** 2
                p1.scatter_(1, i + torch.argsort(s, dim=1, stable=True)[:, : nm[1] - nm[0]], True)
            w = W1[:, i]
            q = torch.where(p1[:, i], torch.zeros_like(w), w)
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        pruned[:, i1:i2] = p1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    W[pruned] = 0.0
    return W.to(weight.dtype), ~pruned


class SparseGPTPruner(OneShotPruner):
    """SparseGPT: mask and reconstructed weights from each layer's input Hessian (unstructured or N:M)."""

    def __init__(self, sparsity: float | None = None, *, pattern: str | None = None, sequential: bool = False,
                 blocksize: int = 128, damp: float = 0.01):
        super().__init__(sparsity, pattern=pattern, sequential=sequential)
        if not isinstance(blocksize, int) or blocksize < 1:
            raise ValueError(f"blocksize must be a positive int, got {blocksize!r}")
        if self.nm is not None and blocksize % self.nm[1]:
            raise ValueError(f"blocksize {blocksize} must be a multiple of M={self.nm[1]}")
        if not damp > 0:
            raise ValueError(f"damp must be > 0, got {damp}")
        self.blocksize, self.damp = blocksize, float(damp)

    @staticmethod
    def stat(x: torch.Tensor) -> torch.Tensor:
        return x.t() @ x

    def prune_layer(self, module: nn.Module, hessian: torch.Tensor) -> None:
        with torch.no_grad():
            w = weight_2d(module)
            new, keep = sparsegpt_layer(w, hessian, self.sparsity, self.nm, blocksize=self.blocksize,
                                        damp=self.damp)
            orig = original(module, "weight")
            orig.copy_(new.t() if orig.shape != new.shape else new)
            self.install(module, keep)


def sparsegpt(model: nn.Module, calib_batches, sparsity: float | None = None, *, pattern: str | None = None,
              sequential: bool = False, modules=None, blocksize: int = 128, damp: float = 0.01) -> nn.Module:
    """Prune ``model`` in place with SparseGPT from ``calib_batches``; returns it finalized."""
    p = SparseGPTPruner(sparsity, pattern=pattern, sequential=sequential, blocksize=blocksize, damp=damp)
    p.prepare(model, modules, calib_batches=calib_batches)
    p.step()
    return p.finalize()
