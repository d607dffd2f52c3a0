"""Dense references and precision-aware comparison for the kernels (used by tests and benchmarks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Output rounding of each dtype (twice the half-ulp bound, relative; fp16 also gets an absolute floor
# for subnormal results): the kernels round once, after an fp32 accumulation and an fp32 epilogue.
RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
ATOL_FLOOR = {torch.float32: 1e-30, torch.float16: 1e-7, torch.bfloat16: 1e-30}
# fp32 accumulation error relative to sum_i |x_i w_i| (+|bias|+|residual|): generous for K <= 16k,
# and covers TF32 inputs when ``tf32`` is passed to :func:`tolerance`.
ACC_TOL = 2e-5
TF32_TOL = 2e-3

_ACTS = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}


def reference_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act(x @ w^T + bias) + residual`` in float64 from the given (already rounded) inputs."""
    y = x.double() @ w.double().t()
    if bias is not None:
        y = y + bias.double()
    y = _ACTS[activation](y)
    if residual is not None:
        y = y + residual.double()
    return y


def tolerance(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    ref: torch.Tensor,
    dtype: torch.dtype,
    tf32: bool = False,
) -> torch.Tensor:
    """Elementwise bound on |kernel - reference|: output rounding + accumulation error."""
    mag = x.double().abs() @ w.double().abs().t()
    if bias is not None:
        mag = mag + bias.double().abs()
    if residual is not None:
        mag = mag + residual.double().abs()
    acc_tol = TF32_TOL if tf32 else ACC_TOL
    return RTOL[dtype] * ref.abs() + acc_tol * mag + ATOL_FLOOR[dtype]


def assert_linear_close(
    y: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    tf32: bool = False,
    what: str = "kernel",
) -> None:
    """Assert ``y`` matches the dense reference everywhere (NaN anywhere = an unwritten element)."""
    x2d = x.reshape(-1, x.shape[-1]).cpu()
    res2d = residual.reshape(-1, w.shape[0]).cpu() if residual is not None else None
    wc, bc = w.cpu(), bias.cpu() if bias is not None else None
    ref = reference_linear(x2d, wc, bc, activation, res2d)
    got = y.reshape(-1, w.shape[0]).cpu().double()
    if bool(torch.isnan(got).any()):
        bad = torch.isnan(got).nonzero()[:5].tolist()
        raise AssertionError(f"{what}: {int(torch.isnan(got).sum())} unwritten (NaN) elements, e.g. at {bad}")
    tol = tolerance(x2d, wc, bc, res2d, ref, y.dtype, tf32)
    err = (got - ref).abs()
    if bool((err > tol).any()):
        i = int((err - tol).argmax())
        r, c = divmod(i, ref.shape[1])
        raise AssertionError(
            f"{what}: {int((err > tol).sum())} elements out of tolerance; worst at [{r}, {c}]: "
            f"got {got[r, c].item():.6g}, expected {ref[r, c].item():.6g}, tol {tol[r, c].item():.3g}")
