"""The source weights of a saved model: mapped from ``tensors.bin``, some stored as bitmap + nonzeros.

A weight that only a sparse layer's training references point at (the dense ``W`` of a layer that runs packed)
is not read by a frozen model's graph at all: it runs the packed buffers. Storing it dense would keep 90% zeros
on disk for BERT-base's pruned encoder (340 of its 440 MB). Such a weight is stored *zero-compressed*: one bit
per element (is it nonzero), the nonzero elements' raw bits in order, and one sign bit per element (when a
zero is -0.0). It comes back
bit-exact (-0.0, NaN payloads and all) on first access, so ``state_dict()`` and the saved program still see
the original weight; a frozen load never touches it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from sparsec import knobs

_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s elements as same-size integers (flat, contiguous)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        return flat.view(torch.uint8)
    return flat.view(_INT[flat.element_size()])


def _split(t: torch.Tensor, signs: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(bits, nonzero mask, sign bit of each element or None) as numpy arrays (numpy's masked gathers and
    scatters run ~10x faster than torch's here). A float's zero is +0.0 or -0.0: masking by multiplication
    leaves -0.0 for every negative weight it zeroes, half of a pruned weight's zeros."""
    bits = _bits(t).numpy()
    if not t.is_floating_point():
        return bits, bits != 0, None
    top = 1 << (8 * t.element_size() - 1)
    if not signs:
        return bits, (bits & (top - 1)) != 0, None
    if bits.dtype == np.uint8:  # 1-byte floats
        return bits, (bits & (top - 1)) != 0, (bits & top) != 0
    return bits, (bits & (top - 1)) != 0, bits < 0


def _signbit(dtype: np.dtype) -> int:
    return np.iinfo(dtype).min if np.issubdtype(dtype, np.signedinteger) else 0x80


def digest(t: torch.Tensor) -> str | None:
    """XXH3-128 of ``t``'s bytes (memory speed), or None without the ``xxhash`` package."""
    try:
        import xxhash
    except ImportError:
        return None
    return "xxh3_128:" + xxhash.xxh3_128_hexdigest(memoryview(_bits(t).numpy()))


def compress(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(bitmap of the nonzero elements, those elements, bitmap of every element's sign bit) of ``t`` (uint8
    bitmaps, ``np.packbits`` order; the third is empty when no zero is -0.0, always for non-float dtypes), or
    None when too dense to gain. The sign bitmap covers every element, not only the zeros: ~10% larger, but
    rebuilding is one dense pass instead of a scatter over the zeros (~20x slower)."""
    if t.numel() == 0 or t.element_size() not in _INT or t.is_complex():
        return None
    bits, nz, sign = _split(t)
    idx = np.flatnonzero(nz)
    if idx.size > knobs.get("saved_weight_max_density") * bits.size:
        return None
    mask = torch.from_numpy(np.packbits(nz))
    values = torch.from_numpy(bits[idx]).view(t.dtype)
    negzero = sign is not None and bool((sign & ~nz).any())
    return mask, values, torch.from_numpy(np.packbits(sign) if negzero else np.empty(0, np.uint8))


def decompress(mask: torch.Tensor, values: torch.Tensor, zsign: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The tensor ``compress`` stored, bit for bit (a fresh, writable tensor of ``values``' dtype)."""
    n = math.prod(shape)
    nz = np.unpackbits(mask.numpy(), count=n).view(np.bool_)
    vbits = _bits(values).numpy()
    if zsign.numel():  # -0.0 where the sign bit is set; the nonzeros are overwritten next
        sign = np.unpackbits(zsign.numpy(), count=n).view(np.bool_)
        out = sign.astype(vbits.dtype) * vbits.dtype.type(_signbit(vbits.dtype))
    else:
        out = np.zeros(n, vbits.dtype)
    out[np.flatnonzero(nz)] = vbits
    return torch.from_numpy(out).view(values.dtype).reshape(shape)


def equal(mask: torch.Tensor, values: torch.Tensor, zsign: torch.Tensor, shape: tuple, t: torch.Tensor) -> bool:
    """``t`` equals the stored tensor in shape, dtype and values (-0.0 equals +0.0, as for ``torch.equal``; the
    nonzeros compare bit for bit), compared without rebuilding it."""
    if tuple(t.shape) != tuple(shape) or t.dtype != values.dtype:
        return False
    bits, nz, _ = _split(t, signs=False)
    idx = np.flatnonzero(nz)
    if idx.size != values.numel() or not np.array_equal(np.packbits(nz), mask.numpy()):
        return False
    return np.array_equal(bits[idx], _bits(values).numpy())


class SavedWeights(Mapping):
    """The saved weights by name: dense ones as views of the mapped file, zero-compressed ones rebuilt (and
    kept) on first access."""

    def __init__(self, dense: dict[str, torch.Tensor], packed: dict[str, tuple],
                 digests: dict[str, str] | None = None) -> None:
        self._dense = dense
        self._packed = packed  # name -> (bitmap, values, signs, shape)
        self._digests = digests or {}  # name -> digest() of a packed weight when it was saved

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
            # equal bytes (the digest, ~10 GB/s) settle it; otherwise compare values (-0.0 == +0.0)
            saved = self._digests.get(name)
            if saved is not None and tuple(t.shape) == self._packed[name][-1] and digest(t) == saved:
                return True
            return equal(*self._packed[name], t)
        saved = self[name]
        return t.shape == saved.shape and t.dtype == saved.dtype and torch.equal(t.detach(), saved)


__all__ = ["SavedWeights", "compress", "decompress", "equal", "digest"]
