"""The Python standard library's own source as a byte-level corpus, split by file (no download needed)."""

from __future__ import annotations

import hashlib
import os
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0  # one fixed file split for every run; run seeds vary init and batch order
FRACTIONS = (0.8, 0.1, 0.1)  # train / val / test, by number of files
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
SEPARATOR = b"\n\n"  # between files; keeps the byte stream one contiguous array


@dataclass
class Split:
    name: str
    files: list[str]  # paths relative to the stdlib root
    tokens: torch.Tensor  # uint8 -> int64 byte ids of the concatenated files

    @property
    def digest(self) -> str:
        """sha256 (first 12 hex) of the sorted file list and of the bytes: identifies the split exactly."""
        h = hashlib.sha256("\n".join(sorted(self.files)).encode())
        h.update(self.tokens.to(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:12]


@dataclass
class Corpus:
    root: str
    train: Split
    val: Split
    test: Split

    def splits(self) -> list[Split]:
        return [self.train, self.val, self.test]


def stdlib_files(root: str | None = None) -> tuple[str, list[str]]:
    """All ``.py`` files of the stdlib (sorted, relative), without site-packages and the test suites."""
    root = root or sysconfig.get_paths()["stdlib"]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames if f.endswith(".py")]
    if not out:
        raise FileNotFoundError(f"no .py files under {root!r}: is this a Python without its stdlib source?")
    return root, sorted(out)


def load_corpus(max_files: int | None = None) -> Corpus:
    """Shuffle the files with SPLIT_SEED and cut 80/10/10; ``max_files`` keeps a prefix (smoke tests)."""
    root, files = stdlib_files()
    random.Random(SPLIT_SEED).shuffle(files)
    if max_files is not None:
        files = files[:max_files]
    n_train = int(FRACTIONS[0] * len(files))
    n_val = int(FRACTIONS[1] * len(files))
    parts = {"train": files[:n_train], "val": files[n_train:n_train + n_val], "test": files[n_train + n_val:]}

    def read(names: list[str]) -> torch.Tensor:
        blob = SEPARATOR.join(Path(root, f).read_bytes() for f in names)
        return torch.from_numpy(np.frombuffer(blob, dtype=np.uint8).copy()).long()

    return Corpus(root, *(Split(k, v, read(v)) for k, v in parts.items()))


def train_batch(tokens: torch.Tensor, batch: int, seq: int, gen: torch.Generator) -> torch.Tensor:
    """``batch`` random windows of ``seq + 1`` bytes (inputs and next-byte targets)."""
    starts = torch.randint(0, len(tokens) - seq - 1, (batch,), generator=gen)
    return torch.stack([tokens[s:s + seq + 1] for s in starts.tolist()])


def eval_windows(tokens: torch.Tensor, n: int, seq: int) -> torch.Tensor:
    """``n`` non-overlapping windows of ``seq + 1`` bytes, evenly spaced over the split (deterministic)."""
    n_max = len(tokens) // (seq + 1)
    if n_max < 1:
        raise ValueError(f"split of {len(tokens)} bytes is shorter than one window of {seq + 1}")
    idx = torch.linspace(0, n_max - 1, min(n, n_max)).round().long().unique()
    return torch.stack([tokens[i * (seq + 1):(i + 1) * (seq + 1)] for i in idx.tolist()])
