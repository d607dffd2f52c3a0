"""``check_finite=True``: NaN / inf in the inputs (every call) or the weights (every compile) raise.

Why an option: a sparse kernel skips the zeros, so a NaN or inf in X meets only the stored weights of its
column; eager's dense product also multiplies it by the zeros (NaN * 0 = NaN, inf * 0 = NaN) and spreads
NaN over the whole output row. Results therefore differ from eager exactly where the data is non-finite
(README, "Shapes and inputs"). The check costs one pass over each input per call.
"""

from __future__ import annotations

import torch

from sparsec.errors import InputError


def _bad(t: torch.Tensor) -> int:
    """How many entries of a floating tensor are NaN or +-inf (0 for other dtypes)."""
    if not (t.is_floating_point() or t.is_complex()):
        return 0
    return int(t.numel() - int(torch.isfinite(t).sum()))


def _describe(t: torch.Tensor) -> str:
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    return f"{nan} NaN and {inf} inf value(s) of {t.numel()}"


def check_inputs(flat: list) -> None:
    """Raise InputError naming the first flattened input that holds NaN or inf."""
    for i, x in enumerate(flat):
        if isinstance(x, torch.Tensor) and _bad(x):
            raise InputError(
                f"input {i} (shape {tuple(x.shape)}) holds {_describe(x)} and check_finite=True: a sparse kernel "
                "skips zero weights, so a non-finite input propagates differently from eager's dense product "
                "(which also multiplies it by the zeros); clean the input or compile with check_finite=False"
            )


def check_weights(model: torch.nn.Module) -> None:
    """Raise InputError naming every parameter / buffer of ``model`` that holds NaN or inf."""
    bad = []
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if _bad(t.detach()):
                bad.append(f"{kind} {name!r} {tuple(t.shape)}: {_describe(t.detach())}")
    if bad:
        raise InputError(
            "check_finite=True and the model's tensors are not finite: " + "; ".join(bad)
            + " (an inf weight times a skipped zero input is never computed, so the compiled model and eager "
            "can differ between inf and NaN there)"
        )
