"""Which implementation an op runs for a device: Triton kernels or the eager PyTorch fallback."""
from __future__ import annotations

import os

import torch

# The interpreter must be chosen before Triton decorates any kernel, i.e. before fastgen.ops is imported.
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # macOS / Windows wheels: eager only
    HAS_TRITON = False

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_runs_on(device: torch.device) -> bool:
    """True where the fused ops launch Triton kernels: CUDA, or the CPU under TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        return False
    return device.type == "cuda" or (device.type == "cpu" and TRITON_INTERPRET)


def define_op(name: str, *, mutates_args=()):
    """Decorator: a `triton_op` (visible to torch.compile) where Triton exists, else a plain custom op."""
    if HAS_TRITON:
        return torch.library.triton_op(name, mutates_args=mutates_args)
    return torch.library.custom_op(name, mutates_args=mutates_args)


def launcher(kernel):
    """`wrap_triton(kernel)` so that torch.compile sees the kernel call; the kernel itself in eager mode."""
    return torch.library.wrap_triton(kernel)
