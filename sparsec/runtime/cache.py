"""The on-disk cache directory and crash-safe file helpers shared by calibration, autotuning and kernels.

Entries are written to a temporary file and renamed into place, so a reader never sees half a file
and two processes writing the same entry both leave a complete one. A corrupt entry is reported,
deleted and rebuilt by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from sparsec import knobs

log = logging.getLogger("sparsec")


def cache_dir() -> Path:
    """``$SPARSEC_CACHE_DIR``, else ``~/.cache/sparsec``; created on first use."""
    path = Path(knobs.get("cache_dir"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_enabled() -> bool:
    """Off when ``SPARSEC_CACHE=0``."""
    return bool(knobs.get("cache"))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict | None:
    """The JSON object at ``path``; None if missing; a corrupt file is removed with a warning."""
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("sparsec: cache entry %s is corrupt (%s); rebuilding it", path, exc)
        try:
            path.unlink()
        except OSError:
            pass
        return None


def write_json(path: Path, data: dict) -> None:
    """Atomically write a JSON object."""
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())
