"""The one place that chooses between fastgen's kernels (Triton, native CPU) and plain PyTorch.

`use_fused_ops(kernels, device)` is the choice a caller's `kernels=` setting makes; `triton_runs_on(device)`
and `native_runs_on(device, dtype)` say which implementation a `fastgen::` op's body runs for its inputs."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

# The interpreter must be chosen before Triton decorates any kernel, i.e. before fastgen.ops is imported.
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # macOS / Windows wheels: eager only
    HAS_TRITON = False

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


CPU_BACKENDS = ("eager", "triton", "native")
# What the fused ops run on CPU tensors: the eager fallback, (under the interpreter) the Triton kernels, or
# the native kernels (kernels/, built on first use: `--kernels native`).
_cpu_backend = "triton" if TRITON_INTERPRET and HAS_TRITON else "eager"


def set_cpu_backend(name: str) -> None:
    """Choose what the fused ops run on CPU tensors; "triton" needs TRITON_INTERPRET=1 before import."""
    global _cpu_backend
    if name not in CPU_BACKENDS:
        raise ValueError(f"CPU backend must be one of {CPU_BACKENDS}, got {name!r}")
    if name == "triton" and not (HAS_TRITON and TRITON_INTERPRET):
        raise ValueError("Triton kernels run on the CPU only under TRITON_INTERPRET=1, set before fastgen is imported")
    if name == "native":
        from fastgen.ops import native

        if not native.load():
            raise ValueError(f"the native CPU kernels are not available: {native.reason}")
    _cpu_backend = name


@contextmanager
def cpu_backend(name: str):
    previous = _cpu_backend
    set_cpu_backend(name)
    try:
        yield
    finally:
        set_cpu_backend(previous)


def triton_runs_on(device: torch.device) -> bool:
    """True where the fused ops launch Triton kernels: CUDA, or the CPU when its backend is "triton"."""
    if not HAS_TRITON:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _cpu_backend == "triton")


# What the native CPU kernels take (fastgen.ops.native.DTYPES, which imports this module: a test holds them equal).
NATIVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def native_runs_on(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """True where a fused op runs the native CPU kernels: the CPU with backend "native", a dtype they take."""
    return _cpu_backend == "native" and device.type == "cpu" and dtype in NATIVE_DTYPES


EAGER_TRITON = True  # off: eager calls dispatch the registered ops too (the tests compare the two)


def use_eager_triton(device: torch.device) -> bool:
    """Whether an eager call on `device` takes the Triton fast path: a `torch.autograd.Function` that launches the
    registered op's kernels directly, skipping custom-op dispatch and torch.library's Python autograd (tens of
    microseconds of host time a call). torch.compile traces the registered ops instead."""
    return EAGER_TRITON and triton_runs_on(device) and not torch.compiler.is_compiling()


def use_fused_ops(kernels: str, device: torch.device) -> bool:
    """Whether the functional ops call fastgen's fused ops (`kernels="triton"`, or `"auto"` where Triton runs)
    or plain PyTorch ops with the same masks and noise (`"eager"`, and `"auto"` elsewhere: on the CPU the
    plain ops measure faster, with fewer custom-op dispatches per layer)."""
    return kernels in ("triton", "native") or (kernels == "auto" and triton_runs_on(device))


def define_op(name: str, *, mutates_args=()):
    """Decorator: a `triton_op` (visible to torch.compile) where Triton exists, else a plain custom op."""
    if HAS_TRITON:
        return torch.library.triton_op(name, mutates_args=mutates_args)
    return torch.library.custom_op(name, mutates_args=mutates_args)
