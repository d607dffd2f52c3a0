"""Energy: an estimate from documented per-operation constants, and Linux RAPL counters when readable.

The constants are order-of-magnitude figures for a server/desktop x86 core (after Horowitz, "Computing's
energy problem", ISSCC 2014, scaled from 45 nm to a recent process and including instruction overhead
amortized over SIMD lanes): **20 pJ per floating-point operation** and **100 pJ per byte moved from DRAM**
(DDR4/5 access plus interface); knobs ``pj_per_flop`` and ``pj_per_byte``. They rank layers and formats; they are not a measurement. RAPL
(/sys/class/powercap/intel-rapl:*/energy_uj) measures the whole package, other processes included.
"""

from __future__ import annotations

from pathlib import Path

from sparsec import knobs

_RAPL = Path("/sys/class/powercap")


def estimate_uj(flops: float, nbytes: float) -> float:
    """Estimated microjoules for ``flops`` operations and ``nbytes`` bytes moved."""
    return (flops * knobs.get("pj_per_flop") + nbytes * knobs.get("pj_per_byte")) * 1e-6


def rapl_uj() -> float | None:
    """Sum of the package-level RAPL energy counters in microjoules, or None when none is readable."""
    total, found = 0.0, False
    for f in sorted(_RAPL.glob("intel-rapl:[0-9]*/energy_uj")):
        try:
            total += float(f.read_text())
            found = True
        except (OSError, ValueError):
            continue
    return total if found else None
