"""2:4 through PyTorch's semi-structured sparsity (cuSPARSELt or CUTLASS) + the sparsec epilogue.

Why this path exists next to ``nm.py``: Triton has no sparse-MMA (``mma.sp``) instruction, so the
Triton N:M kernel decompresses into a dense tile and does the dense MMA work. PyTorch's
``SparseSemiStructuredTensor`` runs the 2:4 sparse tensor cores of sm_80+ (half the MMA work), which
is the only way to beat cuBLAS at large N. The library matmul can fuse the bias but not the
activation or the residual, so those run afterwards in one elementwise Triton pass
(``epilogue.apply_epilogue``, the same ``epilogue_store`` code the fused kernels end with).

Which one a layer should use is decided by measured cost: ``benchmarks/bench_gpu.py`` times both on
the target card. This path needs a CUDA GPU; everywhere else it raises a RuntimeError saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_epilogue_args, check_weight_part, flatten_x
from .epilogue import apply_epilogue
from .layouts import nm_to_dense
from .nm import check_nm

_BACKENDS = ("auto", "cusparselt", "cutlass")


def semi_structured_supported(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Return (usable, reason): whether the 2:4 semi-structured path can run on ``device``."""
    if not torch.cuda.is_available():
        return False, "torch semi-structured 2:4 sparsity needs a CUDA GPU and none is available"
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        return False, f"torch semi-structured 2:4 sparsity needs CUDA tensors, got device {dev}"
    major, minor = torch.cuda.get_device_capability(dev)
    if major < 8:
        return False, f"2:4 sparse tensor cores need compute capability >= 8.0, this GPU is {major}.{minor}"
    return True, "ok"


def _require_cuda(device: torch.device) -> None:
    ok, reason = semi_structured_supported(device)
    if not ok:
        raise RuntimeError(f"{reason}; use sparsec.codegen.triton.nm_linear (Triton kernel, also interpreted on CPU)")


@dataclass
class SemiStructuredWeight:
    """A 2:4 weight compressed by PyTorch, ready for :func:`semi_structured_linear`.

    ``sparse`` is the ``SparseSemiStructuredTensor`` of the weight zero-padded to
    [out_padded, in_padded] (the library's minimum tile multiples); ``backend`` is "cusparselt" or
    "cutlass".
    """

    sparse: torch.Tensor
    out_features: int
    in_features: int
    out_padded: int
    in_padded: int
    backend: str


def _backend_class(backend: str) -> type:
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        cusparselt = getattr(torch.backends, "cusparselt", None)
        backend = "cusparselt" if cusparselt is not None and cusparselt.is_available() else "cutlass"
    return SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt" else SparseSemiStructuredTensorCUTLASS


def prepare_semi_structured(
    values: torch.Tensor,
    indices: torch.Tensor,
    n: int,
    m: int,
    in_features: int,
    backend: str = "auto",
) -> SemiStructuredWeight:
    """Convert an N:M packed weight (the ``nm_linear`` layout) into PyTorch's 2:4 format, once.

    Any pattern with m == 4 and n <= 2 is 2:4-compatible. The weight is zero-padded to the backend's
    minimum multiples (e.g. 32 x 64 for CUTLASS fp16); zero padding keeps the 2:4 property. Needs a
    CUDA GPU of compute capability >= 8.0.
    """
    width = check_nm(n, m, in_features)
    if m != 4 or n > 2:
        raise ValueError(f"the semi-structured path needs a 2:4-compatible pattern (m=4, n<=2), got {n}:{m}")
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError(f"values must be a 2-D [out, {width}] tensor, got {getattr(values, 'shape', values)!r}")
    _require_cuda(values.device)
    out_features = values.shape[0]
    check_weight_part(values, "values", values.dtype, (out_features, width), values.device)
    check_weight_part(indices, "indices", torch.uint8, (out_features, width), values.device)
    cls = _backend_class(backend)
    if values.dtype not in cls._DTYPE_SHAPE_CONSTRAINTS:
        raise ValueError(f"{cls.BACKEND} semi-structured sparsity does not support {values.dtype}")
    limits = cls._DTYPE_SHAPE_CONSTRAINTS[values.dtype]
    out_p = -(-max(out_features, 1) // limits.sparse_min_rows) * limits.sparse_min_rows
    in_p = -(-max(in_features, 1) // limits.sparse_min_cols) * limits.sparse_min_cols
    dense = torch.zeros(out_p, in_p, dtype=values.dtype, device=values.device)
    dense[:out_features, :in_features] = nm_to_dense(values, indices, n, m, in_features)
    return SemiStructuredWeight(cls.from_dense(dense), out_features, in_features, out_p, in_p, cls.BACKEND)


def semi_structured_linear(
    x: torch.Tensor,
    weight: SemiStructuredWeight,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Y = act(X @ W^T + bias) + residual`` on the 2:4 sparse tensor cores (CUDA only).

    The bias is fused into the library matmul when nothing else follows it; otherwise bias,
    activation and residual run in one Triton elementwise pass writing ``out``. Inputs whose
    feature count is not a multiple of the backend tile are zero-padded per call (one copy of x).
    """
    if not isinstance(weight, SemiStructuredWeight):
        raise TypeError(f"weight must come from prepare_semi_structured, got {type(weight).__name__}")
    x2d, lead = flatten_x(x, weight.in_features)
    _require_cuda(x2d.device)
    if x2d.dtype != weight.sparse.dtype:
        raise ValueError(f"x is {x2d.dtype} but the weight is {weight.sparse.dtype}")
    y, bias, residual = check_epilogue_args(x2d, weight.out_features, bias, activation, residual, out, lead)
    if weight.in_padded != weight.in_features:
        x2d = F.pad(x2d, (0, weight.in_padded - weight.in_features))
    out_f = weight.out_features
    plain = activation is None and residual is None and weight.out_padded == out_f
    full = F.linear(x2d, weight.sparse, bias if plain else None)
    if plain:
        if out is None:
            return full.view(*lead, out_f)
        y.copy_(full.view_as(y))
        return y
    res2d = residual.view(-1, out_f) if residual is not None else None
    apply_epilogue(full[:, :out_f], bias, activation, res2d, out=y.view(-1, out_f), interpret=False)
    return y
