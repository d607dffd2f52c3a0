"""The exceptions sparsec raises. Every one names what was wrong and, where it can, what to do."""

from __future__ import annotations


class SparsecError(Exception):
    """Base class of every error sparsec raises on purpose."""


class CaptureError(SparsecError):
    """torch.export could not capture the model; the message carries export's reason and a remedy."""


class InputError(SparsecError, ValueError):
    """An input to a compiled model (or to a public function) has the wrong shape, dtype, device or count."""


class UnsupportedError(SparsecError, NotImplementedError):
    """A feature sparsec does not implement; the message names it."""


class KernelCompileError(SparsecError):
    """The MLIR or Triton pipeline failed; the message names the file that reproduces it."""


class FormatError(SparsecError, ValueError):
    """A sparse format was asked to hold a weight it does not accept, or was defined wrongly."""
