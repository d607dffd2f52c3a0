"""Progress bars for long steps (autotune, ``sparsec bench``), through tqdm.

Quiet when stderr is not a terminal (tqdm's ``disable=None``) or when ``SPARSEC_PROGRESS=0``, so logs,
CI and pipes get no control characters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(items: Iterable, desc: str, total: int | None = None) -> tqdm:
    """``items`` wrapped in a tqdm bar on stderr (disabled off a terminal); set its postfix to name the item."""
    off = True if os.environ.get("SPARSEC_PROGRESS", "1") == "0" else None
    return tqdm(items, desc=desc, total=total, disable=off, file=sys.stderr, leave=False, dynamic_ncols=True)
