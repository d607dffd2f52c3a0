"""What a loaded artifact stands on: its lazily read captured program and its frozen source module.

Kept apart from sparsec/compiler/artifact.py (which writes and reads the files) so that code that only needs
to recognise a loaded model (the graph cache, the profiler) does not import the whole save/load machinery.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
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
    frozen model or saving the model again needs. A version-3 ``program.pt2`` is stored without the weights
    that ``tensors.bin`` holds (``stripped``: their names); they are put back from ``weights`` on load."""

    def __init__(self, source: Path | bytes | None, dynamic: bool, weights: Mapping | None = None,
                 stripped: list[str] | tuple = ()) -> None:
        self.source, self.dynamic, self._program = source, dynamic, None
        self.weights, self.stripped = weights, list(stripped)
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
            program = torch.export.load(src)
            if self.stripped:
                attach_weights(program, self.stripped, self.weights or {})
            self._program = program
        return self._program

    def write(self, dest: Path, source: Mapping[str, torch.Tensor]) -> list[str]:
        """Write ``program.pt2`` to ``dest`` (copied without deserializing it when its stripped weights are
        all in ``source``, the tensors the new artifact stores); the names of the weights left out."""
        if self._program is None and self.source is not None and all(n in source for n in self.stripped):
            if isinstance(self.source, bytes):
                dest.write_bytes(self.source)
            else:
                shutil.copyfile(self.source, dest)
            return list(self.stripped)
        return save_program(self.program, dest, source)


def save_program(program: torch.export.ExportedProgram, dest: Path, source: Mapping[str, torch.Tensor]) -> list[str]:
    """``torch.export.save`` of ``program`` without the weights and constants ``source`` holds under the same
    name with equal values (replaced by meta tensors while saving); their names, for ``attach_weights``.

    The artifact stores those bytes once, in ``tensors.bin``: BERT-base's program.pt2 was 439 MB of weights
    stored a second time."""
    stores = [program._state_dict, program._constants]
    saved: list[tuple[dict, str, torch.Tensor]] = []
    for store in stores:
        for name, t in list(store.items()):
            ours = source.get(name) if isinstance(t, torch.Tensor) else None
            if ours is None or t.device.type == "meta":
                continue
            same = ours is t or (ours.shape == t.shape and ours.dtype == t.dtype and torch.equal(ours.detach(), t.detach()))
            if not same:
                continue
            meta = torch.empty_like(t, device="meta")
            store[name] = torch.nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(
                t, torch.nn.Parameter) else meta
            saved.append((store, name, t))
    try:
        torch.export.save(program, dest)
    finally:
        for store, name, t in saved:
            store[name] = t
    return sorted({name for _, name, _ in saved})


def attach_weights(program: torch.export.ExportedProgram, names: list[str], weights: Mapping[str, torch.Tensor]) -> None:
    """Put the weights ``save_program`` left out back into a loaded ``program`` (the saved tensors, by name)."""
    for name in names:
        if name not in weights:
            raise UnsupportedError(f"the saved program's weight {name!r} is missing from the artifact's tensors")
        t = weights[name]
        for store in (program._state_dict, program._constants):
            old = store.get(name)
            if isinstance(old, torch.Tensor):
                if old.shape != t.shape or old.dtype != t.dtype:
                    raise UnsupportedError(f"the saved program's weight {name!r} is {old.dtype} "
                                           f"{tuple(old.shape)}, the artifact holds {t.dtype} {tuple(t.shape)}")
                store[name] = torch.nn.Parameter(t, requires_grad=old.requires_grad) if isinstance(
                    old, torch.nn.Parameter) else t


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
