"""Random keys for the fused ops.

Every random draw in fastgen's ops is keyed by a *philox key*: an int64 tensor ``(seed, step)``
on the op's device. The Triton kernels feed it to Philox-4x32-10 with counter
``(element_index, step)``, so a mask is a pure function of (seed, step, element) and is never
stored. Keeping the key in a device tensor lets a captured CUDA graph advance ``step`` on the
device and draw a fresh mask on every replay.

The eager CPU fallback draws from torch's CPU generator seeded from the same key: deterministic for
a key, but a different stream from the GPU's. The native CPU kernels (``kernels/``, the "native" CPU
backend) draw the Philox stream itself, bit for bit the Triton kernels' masks.
"""

from __future__ import annotations

import math

import torch

from fastgen.ops.dispatch import native_runs_on, triton_runs_on

_MASK64 = (1 << 64) - 1


def philox_key(seed, device: torch.device | str, replicas: int | None = None) -> torch.Tensor:
    """Normalise ``seed`` (int, or int64 tensor of 1 or 2 elements) to an int64 ``(seed, step)`` tensor.

    For a call over stacked replicas (`replicas` = S), ``seed`` must be an int64 ``(S, 2)`` tensor: one
    key per replica, each drawing what a single call with that key draws."""
    device = torch.device(device)
    if type(seed) is torch.Tensor and seed.dtype == torch.int64 and seed.shape == (2,) and seed.device == device:
        if replicas is None:
            return seed  # the layers' (seed, step) buffers: the common case, checked first
    if replicas is not None:
        return _replica_keys(seed, device, replicas)
    if isinstance(seed, bool) or seed is None:
        raise TypeError(f"seed must be an int or an int64 tensor, got {type(seed).__name__}")
    if isinstance(seed, float):
        raise TypeError(f"seed must be an int or an int64 tensor, got float {seed!r}")
    if isinstance(seed, int):
        return torch.tensor([seed & 0x7FFFFFFFFFFFFFFF, 0], dtype=torch.int64, device=device)
    if not isinstance(seed, torch.Tensor):
        raise TypeError(f"seed must be an int or an int64 tensor, got {type(seed).__name__}")
    if seed.dtype != torch.int64:
        raise TypeError(f"seed must be an int64 tensor, got dtype {seed.dtype}")
    if seed.numel() not in (1, 2):
        raise ValueError(f"seed must hold 1 (seed) or 2 (seed, step) elements, got {seed.numel()}")
    if not same_device(seed.device, device):
        raise ValueError(f"seed is on {seed.device} but the inputs are on {device}")
    if seed.numel() == 1:
        return torch.cat([seed.reshape(1), seed.new_zeros(1)])
    return seed.reshape(2)


def _replica_keys(seed, device: torch.device, replicas: int) -> torch.Tensor:
    if not isinstance(seed, torch.Tensor) or seed.dtype != torch.int64 or tuple(seed.shape) != (replicas, 2):
        got = f"shape {tuple(seed.shape)}, dtype {seed.dtype}" if isinstance(seed, torch.Tensor) else type(seed).__name__
        raise ValueError(f"seed for {replicas} stacked replicas must be an int64 tensor of shape ({replicas}, 2), got {got}")
    if not same_device(seed.device, device):
        raise ValueError(f"seed is on {seed.device} but the inputs are on {device}")
    return seed


def per_replica(fn, keys: torch.Tensor, *tensors):
    """`fn(key, *slices)` for each replica's key (a row of `keys`) and slices of `tensors` (None stays None),
    stacked along a new leading dimension (tuples of outputs are stacked elementwise)."""
    outs = [fn(key, *(t[s] if t is not None else None for t in tensors)) for s, key in enumerate(keys.unbind(0))]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*outs))
    return torch.stack(outs)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Equal as places to compute: "cpu" is "cpu:0", and "cuda" is the current CUDA device."""
    if a.type != b.type:
        return False
    if a.type == "cpu":
        return True
    current = torch.cuda.current_device() if a.type == "cuda" else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def random_seed() -> int:
    """A seed drawn from torch's default CPU generator, so torch.manual_seed makes it reproducible."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def torch_generator(key: torch.Tensor, device: torch.device, stream: int = 0) -> torch.Generator:
    """A torch generator on `device` determined by the key (and a stream number for independent draws)."""
    seed, step = (int(v) for v in key.tolist())
    mixed = _splitmix64(_splitmix64(seed & _MASK64) ^ (step & _MASK64) ^ (stream << 56))
    return torch.Generator(device=device).manual_seed(mixed & 0x7FFFFFFFFFFFFFFF)


# The CPU fallback compares 16-bit uniform lanes with a threshold: four lanes per 64-bit draw of the
# generator, about 3x faster than drawing one float per element (measured), so masks stay a small part
# of a CPU step. The cost: the drop probability is p rounded to a multiple of 2**-16.
DROP_RESOLUTION = 2**-16


def _keep_from_lanes(key: torch.Tensor, shape: list[int], p: float) -> torch.Tensor:
    n = math.prod(shape)
    threshold = round(p / DROP_RESOLUTION)  # drop iff the lane, read as unsigned, is below it
    if threshold >= 2**16:
        return torch.zeros(shape, dtype=torch.uint8, device=key.device)
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=key.device)
    words.random_(-(2**63), None, generator=torch_generator(key, key.device))  # all 64 bits uniform
    lanes = words.view(torch.int16)[:n].view(shape)  # int16 reads unsigned u as u - 2**15
    return (lanes >= threshold - 2**15).view(torch.uint8)


# Opaque to torch.compile (the generator reads the key on the host), so a compiled CPU step traces
# around them instead of breaking the graph.
@torch.library.custom_op("fastgen::eager_keep_mask", mutates_args=())
def eager_keep_mask(key: torch.Tensor, shape: list[int], p: float) -> torch.Tensor:
    """The eager fallback's dropout keep-mask for this key: uint8, 1 = keep."""
    if p == 0.0:
        return torch.ones(shape, dtype=torch.uint8, device=key.device)
    return _keep_from_lanes(key, shape, p)


@eager_keep_mask.register_fake
def _(key, shape, p):
    return key.new_empty(shape, dtype=torch.uint8)


@torch.library.custom_op("fastgen::eager_normal", mutates_args=())
def eager_normal(key: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The eager fallback's standard-normal noise (float32) for this key."""
    gen = torch_generator(key, key.device, stream=1)
    return torch.randn(shape, generator=gen, device=key.device)


@eager_normal.register_fake
def _(key, shape):
    return key.new_empty(shape, dtype=torch.float32)


def _launch_elementwise(kernel, key, out, *args):
    # A stacked key (S, 2) draws out's S replicas in one launch, on grid axis 1; n is per replica.
    replicas = out.shape[0] if key.dim() == 2 else 1
    n = out.numel() // replicas if replicas else 0
    if n:
        block = 1024
        stride_s = n if key.dim() == 2 else 0
        kernel[(-(-n // block), replicas)](key.contiguous(), out, n, *args, BLOCK=block, stride_s=stride_s)
    return out


def _triton_draws_stacked(key: torch.Tensor, p: float = 1.0) -> bool:
    """Whether a stacked key's draws take one Triton launch (the native and eager paths loop over replicas)."""
    return key.dim() == 2 and p > 0.0 and not native_runs_on(key.device) and triton_runs_on(key.device)


def keep_mask(key: torch.Tensor, shape, p: float) -> torch.Tensor:
    """The keep-mask the fused ops apply for this key and shape on the key's device: uint8, 1 = keep.

    uint8 rather than bool: Inductor's CPU code converts a bool mask element by element (measured
    3x slower than the whole fused leaky_relu * mask / (1 - p) with a uint8 one)."""
    shape = list(shape)
    if key.dim() == 2 and not _triton_draws_stacked(key, p):  # each replica's mask is a single call's with its key
        return per_replica(lambda k: keep_mask(k, shape[1:], p), key)
    if p > 0.0 and native_runs_on(key.device):
        return torch.ops.fastgen_native.keep_mask(key, shape, p)
    if p == 0.0 or not triton_runs_on(key.device):
        return eager_keep_mask(key, shape, p)
    from fastgen.ops.triton.philox import keep_mask_kernel

    out = torch.empty(shape, dtype=torch.uint8, device=key.device)
    return _launch_elementwise(keep_mask_kernel, key, out, p)


def normal(key: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """The standard-normal noise `reparameterize` draws for this key and shape on the key's device."""
    shape = list(shape)
    if key.dim() == 2 and not _triton_draws_stacked(key):  # stacked replicas, as in keep_mask
        return per_replica(lambda k: normal(k, shape[1:], dtype), key)
    if native_runs_on(key.device):
        return torch.ops.fastgen_native.normal(key, shape).to(dtype)
    if not triton_runs_on(key.device):
        return eager_normal(key, shape).to(dtype)
    from fastgen.ops.triton.philox import normal_kernel

    out = torch.empty(shape, dtype=torch.float32, device=key.device)
    return _launch_elementwise(normal_kernel, key, out).to(dtype)


def dropout_keep_mask(seed, shape, p: float, device) -> torch.Tensor:
    """Public: the boolean keep-mask `linear_leaky_relu_dropout` applies for `seed` on `device`.

    `seed` is an int or an int64 tensor `(seed,)` / `(seed, step)`; `shape` is the output's shape.
    """
    p = check_p(p)
    return keep_mask(philox_key(seed, device), shape, p).view(torch.bool)


def check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p):
        raise ValueError(f"p must be a number in [0, 1), got {p!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    return float(p)
