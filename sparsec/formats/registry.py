"""The one list of formats the selector asks, in priority order. ``register_format`` adds to it."""

from __future__ import annotations

from sparsec.errors import FormatError
from sparsec.formats.base import SparseFormat
from sparsec.formats.bitmap import Bitmap, NM24Compact
from sparsec.formats.bsr import DEFAULT_BLOCKS
from sparsec.formats.coo import COO
from sparsec.formats.csr import CSR
from sparsec.formats.dense import Dense
from sparsec.formats.hybrid import DEFAULT_HYBRIDS
from sparsec.formats.levels import parse_level_map
from sparsec.formats.nm import NM

_REGISTRY: dict[str, SparseFormat] = {}


def register_format(fmt: SparseFormat | type[SparseFormat], *, replace: bool = False) -> SparseFormat:
    """Add a format (an instance, or a class with a no-argument constructor) to the selector's list.

    The format's level map is parsed now so that a typo fails here, not at compile time.
    """
    inst = fmt() if isinstance(fmt, type) else fmt
    if not isinstance(inst, SparseFormat):
        raise FormatError(f"{fmt!r} is not a sparsec.SparseFormat")
    if not inst.name:
        raise FormatError(f"format {type(inst).__name__} needs a name")
    if inst.level_map is not None:
        parse_level_map(inst.level_map)
    elif not isinstance(inst, Dense):
        raise FormatError(f"format {inst.label!r} needs a level_map (an MLIR sparse_tensor map)")
    if inst.label in _REGISTRY and not replace:
        raise FormatError(f"a format labelled {inst.label!r} is registered already (pass replace=True)")
    _REGISTRY[inst.label] = inst
    return inst


def unregister_format(label: str) -> None:
    """Remove a format by label (tests use this to undo a registration)."""
    _REGISTRY.pop(label, None)


def formats() -> list[SparseFormat]:
    """Registered formats, in the order the selector asks them."""
    order = {k: i for i, k in enumerate(_REGISTRY)}
    return sorted(_REGISTRY.values(), key=lambda f: (f.priority, order[f.label]))


def get_format(label: str) -> SparseFormat:
    """The registered format with this label; FormatError lists the known ones otherwise."""
    try:
        return _REGISTRY[label]
    except KeyError:
        raise FormatError(f"no format {label!r}; registered: {sorted(_REGISTRY)}") from None


for _f in (Dense(), CSR(), Bitmap(), *DEFAULT_BLOCKS, *DEFAULT_HYBRIDS, NM(2, 4), NM(1, 4), NM(4, 8), NM24Compact(), COO()):
    register_format(_f)
