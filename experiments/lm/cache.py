"""On-disk memo of finished runs (dense pretraining above all), keyed by everything that fixes them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

CODE_VERSION = 1  # bump when a change to the methods makes earlier cached results stale


class Cache:
    """``get(name, fn)``: ``fn()``'s result, computed once per configuration and saved with torch.save.

    The directory is ``root / key`` where ``key`` hashes the Setup, the data split digests, the torch and
    transformers versions and CODE_VERSION, so a change to any of them starts from scratch.
    """

    def __init__(self, root: Path | None, setup, digests: list[str], versions: dict[str, str], *,
                 read_only: bool = False) -> None:
        blob = json.dumps({"setup": asdict(setup), "data": digests, "versions": versions, "code": CODE_VERSION},
                          sort_keys=True)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:12]
        self.dir = None if root is None else Path(root) / self.key
        self.hits = self.misses = 0
        self.read_only = read_only  # a miss is an error (the speed-only pass must not train anything)
        self.memory: dict[str, Any] = {}  # also without a directory, a name is computed once per process

    def get(self, name: str, fn: Callable[[], Any]) -> Any:
        if name in self.memory:
            return self.memory[name]
        self.memory[name] = value = self._get(name, fn)
        return value

    def save_model(self, name: str, model) -> str:
        """Keep a finalized model's state under ``models/`` (for a later speed-only pass); returns ``name``."""
        if self.dir is None:
            raise ValueError("deferred speed needs a cache directory (drop --no-cache)")
        path = self.dir / "models" / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, tmp)
        tmp.replace(path)
        return name

    def load_model(self, name: str) -> dict:
        return torch.load(self.dir / "models" / f"{name}.pt", weights_only=True)

    def _get(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.dir is None:
            self.misses += 1
            return fn()
        path = self.dir / f"{name}.pt"
        if path.exists():
            self.hits += 1
            return torch.load(path, weights_only=False)
        if self.read_only:
            raise FileNotFoundError(f"{path} is not cached: run the full experiment first (same Setup, "
                                    "same --cache)")
        self.misses += 1
        value = fn()
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(value, tmp)
        tmp.replace(path)  # atomic: an interrupted run never leaves a half-written entry
        return value
