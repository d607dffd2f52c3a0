"""The tile product every kernel uses, with the two knobs that differ between targets."""

from __future__ import annotations

import torch
import triton.language as tl

from . import _dual


def _dot_acc(a, b, acc, PREC: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        # Triton 3.9's interpreter multiplies bf16 tiles as their raw uint16 storage (garbage);
        # widening to fp32 is exact and keeps the fp32-accumulate semantics of the tensor cores.
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC)


dot_acc = _dual.kernel(_dot_acc)


def dot_settings(dtype: torch.dtype, interpret: bool, tf32: bool | None = None) -> tuple[str, bool]:
    """Return (input_precision, upcast) for ``dot_acc`` on ``dtype`` tiles.

    fp32 uses TF32 tensor cores when ``tf32`` is True, exact fp32 FMA when False; None follows
    ``torch.backends.cuda.matmul.allow_tf32`` so a sparse layer rounds like the dense ``F.linear``
    it replaces.
    """
    if tf32 is None:
        tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    prec = "tf32" if dtype == torch.float32 and tf32 else "ieee"
    return prec, bool(interpret and dtype == torch.bfloat16)
