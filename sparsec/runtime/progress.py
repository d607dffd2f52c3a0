"""Progress bars for long steps (calibration, autotune, kernel compiles in lower, ``sparsec bench``), through tqdm.

Quiet when stderr is not a terminal (tqdm's ``disable=None``) or when ``SPARSEC_PROGRESS=0``, so logs,
CI and pipes get no control characters.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

from sparsec import knobs


def progress(items: Iterable, desc: str, total: int | None = None) -> tqdm:
    """``items`` wrapped in a tqdm bar on stderr (disabled off a terminal); set its postfix to name the item."""
    off = None if knobs.get("progress") else True
    return tqdm(items, desc=desc, total=total, disable=off, file=sys.stderr, leave=False, dynamic_ncols=True)
