"""Reference converters between a dense weight W [out, in] and the packed layouts the kernels read.

These are small, vectorized, device-agnostic torch implementations of the layout contract (see
docs/triton.md). The kernels' tests and the GPU benchmark use them; the compiler's own packers live
in ``sparsec.formats`` and must produce the same arrays.
"""

from __future__ import annotations

import torch


def dense_to_csr(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack the nonzeros of ``w`` [out, in] as CSR: (indptr int32 [out+1], indices int32, values)."""
    mask = w != 0
    counts = mask.sum(dim=1)
    indptr = torch.zeros(w.shape[0] + 1, dtype=torch.int32, device=w.device)
    indptr[1:] = torch.cumsum(counts, 0).to(torch.int32)
    rows, cols = mask.nonzero(as_tuple=True)
    return indptr, cols.to(torch.int32).contiguous(), w[rows, cols].contiguous()


def csr_to_dense(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                 shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`dense_to_csr`."""
    counts = (indptr[1:] - indptr[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(shape[0], device=values.device), counts)
    w = torch.zeros(shape, dtype=values.dtype, device=values.device)
    w[rows, indices.long()] = values
    return w


def _padded(w: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    out_p, in_p = -(-w.shape[0] // rows) * rows, -(-w.shape[1] // cols) * cols
    padded = torch.zeros(out_p, in_p, dtype=w.dtype, device=w.device)
    padded[: w.shape[0], : w.shape[1]] = w
    return padded


def dense_to_bsr(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack ``w`` as BSR with (bh, bw) blocks, keeping every block with a nonzero.

    Returns (indptr int32 [out_p/bh + 1], indices int32 [nblocks], values [nblocks, bh, bw]).
    """
    bh, bw = block
    padded = _padded(w, bh, bw)
    rb, cb = padded.shape[0] // bh, padded.shape[1] // bw
    blocks = padded.reshape(rb, bh, cb, bw).permute(0, 2, 1, 3)  # [rb, cb, bh, bw]
    keep = (blocks != 0).flatten(2).any(dim=2)
    indptr = torch.zeros(rb + 1, dtype=torch.int32, device=w.device)
    indptr[1:] = torch.cumsum(keep.sum(dim=1), 0).to(torch.int32)
    brow, bcol = keep.nonzero(as_tuple=True)
    return indptr, bcol.to(torch.int32).contiguous(), blocks[brow, bcol].contiguous()


def bsr_to_dense(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, block: tuple[int, int],
                 shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`dense_to_bsr` (returns the unpadded [out, in] weight)."""
    bh, bw = block
    rb, cb = -(-shape[0] // bh), -(-shape[1] // bw)
    counts = (indptr[1:] - indptr[:-1]).long()
    brow = torch.repeat_interleave(torch.arange(rb, device=values.device), counts)
    blocks = torch.zeros(rb, cb, bh, bw, dtype=values.dtype, device=values.device)
    blocks[brow, indices.long()] = values
    return blocks.permute(0, 2, 1, 3).reshape(rb * bh, cb * bw)[: shape[0], : shape[1]].contiguous()


def prune_nm(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Zero all but the ``n`` largest-magnitude entries of every group of ``m`` along the input dim."""
    padded = _padded(w, 1, m)
    groups = padded.reshape(w.shape[0], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.abs().float().topk(n, dim=2).indices, True)
    return (groups * keep).reshape(padded.shape)[:, : w.shape[1]].contiguous()


def dense_to_nm(w: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack an N:M-sparse ``w`` [out, in] as (values [out, in_p/m*n], indices uint8 [out, in_p/m*n]).

    Groups with fewer than ``n`` nonzeros are filled with explicit zeros at the lowest unused
    positions; positions inside a group are strictly increasing. Raises ValueError when a group holds
    more than ``n`` nonzeros (prune first, e.g. with :func:`prune_nm`).
    """
    if not 1 <= n <= m <= 256:
        raise ValueError(f"need 1 <= n <= m <= 256, got n={n}, m={m}")
    groups = _padded(w, 1, m).reshape(w.shape[0], -1, m)
    nonzero = groups != 0
    if bool((nonzero.sum(dim=2) > n).any()):
        raise ValueError(f"weight is not {n}:{m} sparse: some group of {m} has more than {n} nonzeros")
    pos = torch.arange(m, device=w.device)
    # Nonzero positions sort first (in order), then unused ones (in order); keep n, re-sort by position.
    key = (~nonzero).long() * m + pos
    chosen = key.argsort(dim=2)[:, :, :n].sort(dim=2).values
    values = torch.gather(groups, 2, chosen).reshape(w.shape[0], -1)
    return values.contiguous(), chosen.to(torch.uint8).reshape(w.shape[0], -1).contiguous()


def nm_to_dense(values: torch.Tensor, indices: torch.Tensor, n: int, m: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`dense_to_nm` (returns the unpadded [out, in_features] weight)."""
    out = values.shape[0]
    groups = torch.zeros(out, values.shape[1] // n, m, dtype=values.dtype, device=values.device)
    groups.scatter_(2, indices.long().reshape(out, -1, n), values.reshape(out, -1, n))
    return groups.reshape(out, -1)[:, :in_features].contiguous()
