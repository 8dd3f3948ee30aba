"""Argument checks shared by the fused ops: each names the argument it rejects."""

from __future__ import annotations

import math

import torch

from fastgen.ops.dispatch import TRITON_DTYPES, triton_runs_on


def check_tensor(name: str, t, *, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def check_same(names_and_tensors) -> None:
    """All tensors share one dtype and one device; a supported dtype where Triton runs."""
    (first_name, first), *rest = names_and_tensors
    for name, t in rest:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has dtype {first.dtype}")
    if triton_runs_on(first.device) and first.dtype not in TRITON_DTYPES:
        raise TypeError(f"{first_name} has dtype {first.dtype}; the Triton kernels take float16, bfloat16 or float32")


def check_shape(name: str, t: torch.Tensor, shape, other: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)} but must match {other} {tuple(shape)}")


def check_slope(negative_slope) -> float:
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"negative_slope must be a number, got {type(negative_slope).__name__}")
    if not math.isfinite(negative_slope) or negative_slope < 0:
        # A non-negative slope keeps the sign of the input, which the backward relies on.
        raise ValueError(f"negative_slope must be finite and >= 0, got {negative_slope}")
    return float(negative_slope)
