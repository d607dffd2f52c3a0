"""Input validation shared by the launch wrappers: every error names the argument and the problem."""

from __future__ import annotations

import torch

# Activation name -> the ACT code the kernels switch on (see epilogue._activation).
ACTIVATIONS: dict[str | None, int] = {None: 0, "relu": 1, "gelu": 2, "silu": 3, "tanh": 4}
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_activation(activation: str | None) -> int:
    """Return the kernel code of ``activation`` or raise ValueError listing the supported ones."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of None, 'relu', 'gelu', 'silu', 'tanh'; got {activation!r}")
    return ACTIVATIONS[activation]


def _tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def flatten_x(x: torch.Tensor, in_features: int | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Check the activation input ``x`` [..., in] and return it as [N, in] plus its leading shape."""
    _tensor(x, "x")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (the input features)")
    if in_features is not None and x.shape[-1] != in_features:
        raise ValueError(f"x has {x.shape[-1]} input features in its last dimension, the weight has {in_features}")
    if not x.is_contiguous():
        raise ValueError("x must be contiguous (call .contiguous() first)")
    return x.reshape(-1, x.shape[-1]), tuple(x.shape[:-1])


def check_weight_part(t: torch.Tensor, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                      device: torch.device) -> torch.Tensor:
    """Check one array of a packed weight: exact dtype, shape, device and contiguity."""
    _tensor(t, name)
    if t.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}; all tensors must share a device")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return t


def check_dim(value: object, name: str, minimum: int = 0) -> int:
    """Check that a size argument is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1 = a0 + a.numel() * a.element_size()
    b1 = b0 + b.numel() * b.element_size()
    return a0 < b1 and b0 < a1


def check_epilogue_args(
    x2d: torch.Tensor,
    out_features: int,
    bias: torch.Tensor | None,
    activation: str | None,
    residual: torch.Tensor | None,
    out: torch.Tensor | None,
    lead: tuple[int, ...],
    allow_out_alias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Check bias/activation/residual/out against Y = [*lead, out_features]; allocate ``out`` if None.

    ``out`` may not overlap ``x2d`` (the kernel reads x while writing Y), except when ``x2d`` is
    ``allow_out_alias`` (the elementwise epilogue reads and writes each element in the same program).
    """
    check_activation(activation)
    y_shape = (*lead, out_features)
    dtype, device = x2d.dtype, x2d.device
    if bias is not None:
        check_weight_part(bias, "bias", dtype, (out_features,), device)
    if residual is not None:
        check_weight_part(residual, "residual", dtype, y_shape, device)
    if out is None:
        out = torch.empty(y_shape, dtype=dtype, device=device)
    else:
        check_weight_part(out, "out", dtype, y_shape, device)
        if allow_out_alias is None and _overlaps(out, x2d):
            raise ValueError("out must not overlap x: the kernel reads x while it writes out")
    return out, bias, residual


def flatten_rows(t: torch.Tensor, features: int) -> torch.Tensor:
    """View a contiguous [..., features] tensor as [rows, features]."""
    return t.view(-1, features)
