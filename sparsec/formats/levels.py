"""MLIR sparse_tensor level maps, parsed and used to pack a dense matrix into level storage.

A level map such as ``(i, j) -> (i floordiv 16 : dense, j floordiv 16 : compressed, i mod 16 : dense,
j mod 16 : dense)`` fully describes a storage scheme. This module turns any such map (for 2-d weights)
into the buffers MLIR's ``sparse-assembler`` expects, and back. That is what lets a user define a new
format with nothing but a level map: packing, unpacking and the CPU kernel all follow from it.

Buffer order (checked against ``sparse-assembler``): for each level in order, its positions (compressed
levels) then its coordinates (compressed, singleton and structured levels); the values come last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sparsec.errors import FormatError

_LEVEL_RE = re.compile(
    r"^\s*(?P<expr>[a-z]\w*(?:\s+(?:floordiv|mod)\s+\d+)?)\s*:\s*"
    r"(?P<kind>dense|compressed|singleton|loose_compressed|structured\[\s*(?P<n>\d+)\s*,\s*(?P<m>\d+)\s*\])"
    r"\s*(?:\((?P<props>[^)]*)\))?\s*$"
)


@dataclass(frozen=True)
class Level:
    """One storage level: which dimension it walks (``dim``), how (``op`` floordiv/mod by ``k``) and its kind."""

    dim: int
    op: str | None
    k: int
    kind: str  # dense | compressed | singleton | structured
    n: int = 0  # structured[n, m]
    m: int = 0
    props: str = ""

    def coord(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The level coordinate of the matrix entries (i, j)."""
        v = (i, j)[self.dim]
        if self.op == "floordiv":
            return v // self.k
        if self.op == "mod":
            return v % self.k
        return v

    def size(self, shape: tuple[int, int]) -> int:
        """How many coordinates this level spans for a matrix of ``shape``."""
        d = shape[self.dim]
        if self.op == "floordiv":
            return d // self.k
        if self.op == "mod":
            return self.k
        return d


@dataclass(frozen=True)
class LevelMap:
    """A parsed 2-d level map; ``text`` is the map as MLIR spells it."""

    text: str
    levels: tuple[Level, ...]

    @property
    def block(self) -> tuple[int, int]:
        """The divisor each dimension must be a multiple of (floordiv / mod sizes; 1 when none)."""
        b = [1, 1]
        for lv in self.levels:
            if lv.op is not None:
                b[lv.dim] = max(b[lv.dim], lv.k)
        return b[0], b[1]

    def padded_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``shape`` rounded up to a multiple of the map's block, which MLIR requires.

        A blocked dimension also spans at least two blocks: with one, ``i floordiv b`` folds to the
        constant 0 and MLIR's sparsifier rejects (structured levels) or crashes on (BSR) the map.
        """

        def pad(d: int, b: int) -> int:
            return max(-(-d // b) * b, 2 * b) if b > 1 else d

        return pad(shape[0], self.block[0]), pad(shape[1], self.block[1])

    def buffer_names(self) -> list[str]:
        """Names of the buffers in sparse-assembler order, e.g. ``['pos1', 'crd1', 'values']``."""
        names = []
        for idx, lv in enumerate(self.levels):
            if lv.kind in ("compressed", "loose_compressed"):
                names.append(f"pos{idx}")
            if lv.kind in ("compressed", "loose_compressed", "singleton", "structured"):
                names.append(f"crd{idx}")
        return names + ["values"]


def parse_level_map(text: str) -> LevelMap:
    """Parse ``(i, j) -> (lvl : kind, ...)`` for a 2-d tensor; raise FormatError naming the bad part."""
    m = re.match(r"^\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*->\s*\((.*)\)\s*$", text, re.S)
    if not m:
        raise FormatError(f"level map {text!r} is not of the form '(i, j) -> (<level> : <kind>, ...)'")
    dims = {m.group(1): 0, m.group(2): 1}
    parts = _split_top(m.group(3))
    levels = []
    for part in parts:
        lm = _LEVEL_RE.match(part)
        if not lm:
            raise FormatError(f"level {part.strip()!r} of map {text!r} is not understood")
        expr = lm.group("expr").split()
        if expr[0] not in dims:
            raise FormatError(f"level {part.strip()!r} names {expr[0]!r}, not one of {list(dims)}")
        op, k = (expr[1], int(expr[2])) if len(expr) == 3 else (None, 1)
        if k <= 0:
            raise FormatError(f"level {part.strip()!r}: the divisor must be positive")
        kind = lm.group("kind")
        n = mm = 0
        if kind.startswith("structured"):
            kind, n, mm = "structured", int(lm.group("n")), int(lm.group("m"))
            if not 0 < n <= mm:
                raise FormatError(f"structured[{n}, {mm}] needs 0 < n <= m")
        levels.append(Level(dims[expr[0]], op, k, kind, n, mm, (lm.group("props") or "").strip()))
    if sorted({lv.dim for lv in levels}) != [0, 1]:
        raise FormatError(f"level map {text!r} must walk both dimensions")
    return LevelMap(text.strip(), tuple(levels))


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside brackets (structured[2, 4] holds one)."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in out if p.strip()]


def pack_levels(dense: np.ndarray, lmap: LevelMap) -> dict[str, np.ndarray]:
    """Pack a 2-d array (already padded to ``lmap.padded_shape``) into level buffers (int32 indices).

    Walks the levels outermost first, keeping for every nonzero the id of the storage position it
    falls under; dense levels multiply the positions, compressed levels keep only the ones present.
    """
    if dense.ndim != 2:
        raise FormatError(f"only 2-d weights can be packed, got shape {tuple(dense.shape)}")
    shape = dense.shape
    if lmap.padded_shape(shape) != shape:
        raise FormatError(f"shape {shape} is not padded for the level map (pad to {lmap.padded_shape(shape)})")
    i, j = np.nonzero(dense)
    coords = [lv.coord(i, j) for lv in lmap.levels]
    # np.nonzero walks row-major, which is already the level order of row-major maps (CSR, COO).
    row_major = [(lv.dim, lv.op) for lv in lmap.levels] == [(0, None), (1, None)]
    order = np.arange(len(i)) if row_major or not len(i) else np.lexsort(tuple(reversed(coords)))
    i, j = i[order], j[order]
    coords = [c[order] for c in coords]
    parent = np.zeros(len(i), dtype=np.int64)  # storage position of each nonzero's parent
    n_parents = 1
    bufs: dict[str, np.ndarray] = {}
    for idx, lv in enumerate(lmap.levels):
        c = coords[idx].astype(np.int64)
        size = lv.size(shape)
        if lv.kind == "dense":
            parent = parent * size + c
            n_parents *= size
        elif lv.kind in ("compressed", "loose_compressed"):
            key = parent * size + c
            uniq, inv = np.unique(key, return_inverse=True) if len(key) else (key, key)
            if lv.props == "nonunique":  # COO: one stored coordinate per nonzero, duplicates kept
                uniq, inv = key, np.arange(len(key))
            counts = np.bincount(uniq // size if len(uniq) else uniq, minlength=n_parents)
            pos = np.zeros(n_parents + 1, dtype=np.int64)
            np.cumsum(counts, out=pos[1:])
            if lv.kind == "loose_compressed":
                raise FormatError("loose_compressed levels are not supported by the packer")
            bufs[f"pos{idx}"] = pos.astype(np.int32)
            bufs[f"crd{idx}"] = (uniq % size).astype(np.int32)
            parent, n_parents = inv.astype(np.int64), len(uniq)
        elif lv.kind == "singleton":
            bufs[f"crd{idx}"] = c.astype(np.int32)  # one coordinate per parent position (COO)
        elif lv.kind == "structured":
            parent, n_parents, bufs[f"crd{idx}"] = _pack_structured(parent, n_parents, c, lv)
        else:  # pragma: no cover - the parser admits nothing else
            raise FormatError(f"level kind {lv.kind} is not supported")
    values = np.zeros(n_parents, dtype=dense.dtype)
    values[parent] = dense[i, j]
    bufs["values"] = values
    return bufs


def _pack_structured(parent, n_parents, c, lv):
    """structured[n, m]: each parent holds exactly n coordinates, increasing, padded with unused ones."""
    if len(parent):
        starts = np.searchsorted(parent, parent, side="left")
        rank = np.arange(len(parent)) - starts
        if rank.max() >= lv.n:
            bad = int(parent[np.argmax(rank)])
            raise FormatError(f"a group of {lv.m} holds more than {lv.n} nonzeros (group {bad}): not {lv.n}:{lv.m}")
    crd = np.zeros((n_parents, lv.n), dtype=np.int64)
    used = np.zeros((n_parents, lv.m), dtype=bool)
    used[parent, c] = True
    # Fill every group with its used positions first, then the lowest unused ones, then sort, so the
    # stored coordinates are strictly increasing as MLIR's structured level requires.
    key = np.where(used, 0, 1) * lv.m + np.arange(lv.m)[None, :]
    chosen = np.sort(np.argsort(key, axis=1, kind="stable")[:, : lv.n], axis=1)
    crd[:] = chosen
    # position of each nonzero among its group's stored coordinates
    slot = np.argmax(chosen[parent] == c[:, None], axis=1) if len(parent) else parent
    return parent * lv.n + slot, n_parents * lv.n, crd.reshape(-1).astype(np.int32)


def slot_coords(bufs: dict[str, np.ndarray], lmap: LevelMap,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) in the padded ``shape`` of every value slot of a set of level buffers, in storage order.

    O(stored values), no packing: what unpacking scatters the values to, and what training's slot maps
    (sparsec/targets/cpu/sparse_grad.py) gather the parameter from."""
    # Expand level by level: for every storage position, the level coordinates along its path.
    paths = np.zeros((1, 0), dtype=np.int64)
    for idx, lv in enumerate(lmap.levels):
        size = lv.size(shape)
        if lv.kind == "dense":
            paths = np.concatenate(
                [np.repeat(paths, size, axis=0), np.tile(np.arange(size), len(paths))[:, None]], axis=1
            )
        elif lv.kind == "compressed":
            pos, crd = bufs[f"pos{idx}"].astype(np.int64), bufs[f"crd{idx}"].astype(np.int64)
            counts = np.diff(pos)
            paths = np.concatenate([np.repeat(paths, counts, axis=0), crd[:, None]], axis=1)
        elif lv.kind == "singleton":
            paths = np.concatenate([paths, bufs[f"crd{idx}"].astype(np.int64)[:, None]], axis=1)
        elif lv.kind == "structured":
            crd = bufs[f"crd{idx}"].astype(np.int64)
            paths = np.concatenate([np.repeat(paths, lv.n, axis=0), crd[:, None]], axis=1)
    ij = [np.zeros(len(paths), dtype=np.int64), np.zeros(len(paths), dtype=np.int64)]
    for idx, lv in enumerate(lmap.levels):
        col = paths[:, idx]
        if lv.op == "floordiv":
            ij[lv.dim] += col * lv.k
        else:
            ij[lv.dim] += col
    return ij[0], ij[1]


def unpack_levels(bufs: dict[str, np.ndarray], lmap: LevelMap, shape: tuple[int, int]) -> np.ndarray:
    """The dense matrix a set of level buffers stands for (the oracle the tests compare kernels with)."""
    ij = slot_coords(bufs, lmap, shape)
    values = bufs["values"]
    out = np.zeros(shape, dtype=values.dtype)
    np.add.at(out, (ij[0], ij[1]), values)
    return out
