"""What a loaded artifact stands on: its lazily read captured program and its frozen source module.

Kept apart from sparsec/compiler/artifact.py (which writes and reads the files) so that code that only needs
to recognise a loaded model (the graph cache, the profiler) does not import the whole save/load machinery.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sparsec.errors import UnsupportedError


@dataclass
class Seed:
    """What a first compile starts from instead of capturing: a loaded program and the saved formats."""

    captured: object  # sparsec.compiler.capture.Captured
    formats: dict[str, str]


class SavedProgram:
    """The captured program of a loaded model, read from ``program.pt2`` on first use (or never).

    Stands in for ``sparsec.compiler.capture.Captured`` in a loaded variant: ``dynamic`` is known from the
    manifest; ``program`` deserializes the file (seconds for BERT-base), which only a new input shape on a
    frozen model or saving the model again needs."""

    def __init__(self, source: Path | bytes | None, dynamic: bool) -> None:
        self.source, self.dynamic, self._program = source, dynamic, None
        # a graph-cache entry (saved without its program) bound to the user's module captures it again
        # when the program is needed (saving, pickling, deepcopy): () -> ExportedProgram
        self.recapture = None

    @property
    def program(self) -> torch.export.ExportedProgram:
        """The exported program (loaded now if it was not yet)."""
        if self._program is None and self.source is None and self.recapture is not None:
            self._program = self.recapture()
        if self._program is None:
            if self.source is None:
                raise UnsupportedError("this compiled model was restored without its captured program "
                                       "(a graph-cache entry); compile it from its module instead")
            if isinstance(self.source, Path) and not self.source.exists():
                raise UnsupportedError(f"{self.source} is gone: a loaded model reads its program from the artifact "
                                       f"directory when it needs it (keep the directory)")
            src = io.BytesIO(self.source) if isinstance(self.source, bytes) else self.source
            self._program = torch.export.load(src)
        return self._program

    def write(self, dest: Path) -> None:
        """Write ``program.pt2`` to ``dest`` without deserializing it."""
        if self._program is not None or self.source is None:
            torch.export.save(self.program, dest)
        elif isinstance(self.source, bytes):
            dest.write_bytes(self.source)
        else:
            shutil.copyfile(self.source, dest)


class Frozen(torch.nn.Module):
    """The source model of a loaded, unbound artifact: the saved weights, read-only.

    Its ``forward`` runs the saved program (loaded on first use), so a new input shape can still be
    captured; its ``train``/``eval`` only set the flag, since the exported module refuses mode changes.
    """

    def __init__(self, weights: dict[str, torch.Tensor], keys: list[str], program: SavedProgram) -> None:
        super().__init__()
        self._saved, self._keys, self._program, self._g = weights, keys, program, None
        self.training = False

    @property
    def g(self) -> torch.nn.Module:
        """The saved program's module."""
        if self._g is None:
            self._g = self._program.program.module()
        return self._g

    def forward(self, *args, **kwargs):
        """Run the saved program."""
        return self.g(*args, **kwargs)

    def train(self, mode: bool = True) -> Frozen:
        """Set the flag only (the program was exported in eval mode). Capturing calls ``eval()`` first: the
        program is loaded here, since deserializing it while torch.export traces ``forward`` fails."""
        self.training = mode
        if not mode:
            _ = self.g
        return self

    def saved_tensor(self, name: str) -> torch.Tensor:
        """A saved parameter or buffer by its name in the original model (KeyError when absent)."""
        return self._saved[name]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every saved tensor by name (what a re-save stores)."""
        return dict(self._saved)

    def state_dict(self, *args, **kwargs):
        """The saved weights, under the original model's names."""
        from collections import OrderedDict

        return OrderedDict((k, self._saved[k]) for k in self._keys if k in self._saved)

    def load_state_dict(self, *args, **kwargs):
        """Refused: a loaded model's weights are frozen."""
        raise UnsupportedError(
            "this model was loaded with sparsec.load(path) and its weights are frozen; bind it to a module "
            "with sparsec.load(path, model=your_model) and load the state dict into that module"
        )
