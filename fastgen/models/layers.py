"""Layers built on the fused ops."""

from __future__ import annotations

import torch
from torch import nn

from fastgen.config import KERNELS
from fastgen.ops import eager_native, linear_leaky_relu_dropout, reparameterize
from fastgen.ops.dispatch import use_eager_triton
from fastgen.ops.linear_leaky_relu_dropout import EagerTritonLinear
from fastgen.ops.rng import check_p, random_seed
from fastgen.ops.validation import check_slope


def new_philox_key() -> torch.Tensor:
    """A fresh (seed, step=0) key drawn from torch's default generator, so torch.manual_seed fixes it."""
    return torch.tensor([random_seed(), 0], dtype=torch.int64)


_NEXT_STEP = {}  # device -> (0, 1), the key's increment, for keys advanced eagerly
_UNREAD_KEY = {}  # device -> (0, 0), what the eager fast paths pass as the key when p = 0 (never read, never written)


def _on(cache: dict, value: list[int], device: torch.device) -> torch.Tensor:
    if device not in cache:
        cache[device] = torch.tensor(value, device=device)
    return cache[device]


def next_key(key_buffer: torch.Tensor) -> torch.Tensor:
    """This call's key, then advance the buffer's step on the device (no host sync, graph-safe). A stacked
    buffer (replicas, 2) advances every replica's step."""
    key = key_buffer.clone()
    if torch.compiler.is_compiling():
        key_buffer[..., 1] += 1
    else:  # one op: the indexed += above is three eagerly
        key_buffer.add_(_on(_NEXT_STEP, [0, 1], key_buffer.device))
    return key


class LinearLeakyReLUDropout(nn.Linear):
    """Drop-in for `nn.Sequential(nn.Linear, nn.LeakyReLU(negative_slope), nn.Dropout(p))`.

    `weight`/`bias` are nn.Linear's (same shapes, same initialisation). Dropout applies in
    `.train()` mode only; each training call draws a fresh mask from the layer's `philox_key`
    buffer `(seed, step)`, whose step advances on the device. `kernels="eager"` computes the same
    thing (same mask) with plain PyTorch ops.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        negative_slope: float = 0.2,
        p: float = 0.0,
        bias: bool = True,
        kernels: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self.negative_slope = check_slope(negative_slope)
        self.p = check_p(p)
        self.kernels = kernels
        self.register_buffer("philox_key", new_philox_key().to(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p if self.training else 0.0
        if x.dim() == 2 and x.dtype == self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            # The eager fast paths: what the functional op checks holds by construction here but x's shape, which
            # the matmul checks.
            fast = None
            if self.kernels == "native" and eager_native.use_eager_native(x.device, x.dtype):
                fast = eager_native.linear_leaky_relu_dropout
            elif self.kernels != "eager" and use_eager_triton(x.device):
                fast = EagerTritonLinear.apply
            if fast is not None:
                # Without dropout the key is a shared constant: the layer's own buffer, saved for the backward, would
                # be refused there once a later training call has advanced it in place.
                key = next_key(self.philox_key) if p > 0.0 else _on(_UNREAD_KEY, [0, 0], x.device)
                return fast(x, self.weight, self.bias, key, self.negative_slope, p)
        key = next_key(self.philox_key) if p > 0.0 else None
        return linear_leaky_relu_dropout(
            x, self.weight, self.bias, negative_slope=self.negative_slope, p=p, seed=key, kernels=self.kernels
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}, p={self.p}, kernels={self.kernels}"


class Reparameterize(nn.Module):
    """z = mu + exp(0.5 logvar) * eps with eps drawn from the module's `philox_key` buffer."""

    def __init__(self, kernels: str = "auto"):
        super().__init__()
        self.kernels = kernels
        self.register_buffer("philox_key", new_philox_key())

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, seed=None) -> torch.Tensor:
        key = next_key(self.philox_key) if seed is None else seed
        return reparameterize(mu, logvar, seed=key, kernels=self.kernels)
