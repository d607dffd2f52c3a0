"""The source weights of a saved model: mapped from ``tensors.bin``, some stored as bitmap + nonzeros.

A weight that only a sparse layer's training references point at (the dense ``W`` of a layer that runs packed)
is not read by a frozen model's graph at all: it runs the packed buffers. Storing it dense would keep 90% zeros
on disk for BERT-base's pruned encoder (340 of its 440 MB). Such a weight is stored *zero-compressed*: one bit
per element (is it nonzero), the nonzero elements' raw bits in order, and one bit per zero (its sign: -0.0). It comes back
bit-exact (-0.0, NaN payloads and all) on first access, so ``state_dict()`` and the saved program still see
the original weight; a frozen load never touches it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import torch

#: store a weight zero-compressed when at most this share of its elements is nonzero (the bitmap costs 1/32
#: of an fp32 weight, so the gain starts near 97%; below 75% it is worth the reconstruction)
MAX_DENSITY = 0.75

_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s elements as same-size integers (flat, contiguous)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.view(torch.uint8)
    return flat.view(_INT[flat.element_size()])


def _split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(bits, nonzero mask, sign bit of each element or None): a float's zero is +0.0 or -0.0 (masking by
    multiplication leaves -0.0 for every negative weight it zeroes: half of a pruned weight's zeros)."""
    bits = _bits(t)
    if not t.is_floating_point():
        return bits, bits != 0, None
    magnitude = (1 << (8 * t.element_size() - 1)) - 1
    return bits, (bits & magnitude) != 0, bits < 0 if bits.dtype != torch.uint8 else (bits & 0x80) != 0


def compress(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(bitmap of the nonzero elements, those elements, bitmap of the zeros' signs) of ``t`` (uint8 bitmaps,
    ``np.packbits`` order; the third is empty for non-float dtypes), or None when too dense to gain."""
    if t.numel() == 0 or t.element_size() not in _INT or t.is_complex():
        return None
    bits, nz, sign = _split(t)
    if int(nz.sum()) > MAX_DENSITY * bits.numel():
        return None
    mask = torch.from_numpy(np.packbits(nz.numpy()))
    values = t.detach().cpu().contiguous().reshape(-1)[nz]
    zsign = torch.from_numpy(np.packbits(sign[~nz].numpy())) if sign is not None else torch.empty(0, dtype=torch.uint8)
    return mask, values, zsign


def decompress(mask: torch.Tensor, values: torch.Tensor, zsign: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The tensor ``compress`` stored, bit for bit (a fresh, writable tensor of ``values``' dtype)."""
    n = math.prod(shape)
    nz = torch.from_numpy(np.unpackbits(mask.numpy(), count=n).view(np.bool_))
    out = torch.zeros(n, dtype=values.dtype)
    obits = _bits(out)
    obits[nz] = _bits(values)
    if zsign.numel():
        zeros = ~nz
        neg = torch.from_numpy(np.unpackbits(zsign.numpy(), count=int(zeros.sum())).view(np.bool_))
        signbit = torch.tensor(1, dtype=obits.dtype) << (8 * out.element_size() - 1)
        z = obits[zeros]
        z[neg] = signbit
        obits[zeros] = z
    return out.reshape(shape)


def equal(mask: torch.Tensor, values: torch.Tensor, zsign: torch.Tensor, shape: tuple, t: torch.Tensor) -> bool:
    """``t`` equals the stored tensor in shape, dtype and values (as ``torch.equal``: -0.0 equals +0.0),
    compared without rebuilding it."""
    if tuple(t.shape) != tuple(shape) or t.dtype != values.dtype:
        return False
    _, nz, _ = _split(t)
    if int(nz.sum()) != values.numel():
        return False
    if not torch.equal(torch.from_numpy(np.packbits(nz.numpy())), mask):
        return False
    return torch.equal(t.detach().cpu().contiguous().reshape(-1)[nz], values)


class SavedWeights(Mapping):
    """The saved weights by name: dense ones as views of the mapped file, zero-compressed ones rebuilt (and
    kept) on first access."""

    def __init__(self, dense: dict[str, torch.Tensor], packed: dict[str, tuple]) -> None:
        self._dense = dense
        self._packed = packed  # name -> (bitmap, values, zero signs, shape)

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self._dense.get(name)
        if t is None:
            t = self._dense[name] = decompress(*self._packed[name])  # KeyError: not saved
        return t

    def __iter__(self) -> Iterator[str]:
        yield from self._dense
        yield from (k for k in self._packed if k not in self._dense)

    def __len__(self) -> int:
        return len(self._dense) + sum(1 for k in self._packed if k not in self._dense)

    def __contains__(self, name) -> bool:
        return name in self._dense or name in self._packed

    def compressed(self) -> list[str]:
        """The names stored zero-compressed (rebuilt on access)."""
        return list(self._packed)

    def matches(self, name: str, t: torch.Tensor) -> bool:
        """``t`` equals the saved tensor ``name`` in shape, dtype and values (compared without rebuilding)."""
        if name in self._packed and name not in self._dense:
            return equal(*self._packed[name], t)
        saved = self[name]
        return t.shape == saved.shape and t.dtype == saved.dtype and torch.equal(t.detach(), saved)


__all__ = ["SavedWeights", "compress", "decompress", "equal", "MAX_DENSITY"]
