"""Several replicas of a network as one: every parameter and (seed, step) key gains a leading replica dimension,
so a group of seeds trains in one step of batched matmuls and stacked fused ops instead of one step per seed.

`stack(networks)` builds the stacked network from single ones (replica s starts with network s's weights and
keys, so it draws what network s would); `replica_state(stacked, s)` is replica s's state dict in the single
network's names and shapes, which is what a replica's run folder holds. The networks' `forward` methods take the
replica dimension as an extra leading batch dimension (`replicas` set on the stacked copy).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastgen.models.layers import LinearLeakyReLUDropout, Reparameterize, next_key
from fastgen.ops import linear_leaky_relu_dropout, reparameterize
from fastgen.ops.stacked_matmul import stacked_matmul


def _stacked(tensors) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


class StackedLinear(nn.Module):
    """S replicas of `nn.Linear`: weight (S, out, in), bias (S, out); x (S, B, in) -> (S, B, out), one batched matmul."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(_stacked(layer.weight for layer in layers))
        self.bias = nn.Parameter(_stacked(layer.bias for layer in layers)) if layers[0].bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StackedLinearFunction.apply(x, self.weight, self.bias)


class _StackedLinearFunction(torch.autograd.Function):
    """y = x @ weight^T + bias over stacked replicas, with the gradients written in the layouts that follow: y
    (S, B, out) and the weight's gradient (S, out, in) contiguous, as the fused layers' are. (Through autograd of
    the matmul, the weight's gradient came out transposed, which the fused Adam would first have to copy;
    computed as (weight @ x^T)^T instead, every output and gradient needed a transposing copy.)"""

    @staticmethod
    def forward(x, weight, bias):
        y = stacked_matmul(x, weight.transpose(1, 2))
        return y if bias is None else y + bias.unsqueeze(1).to(y.dtype)  # in y's dtype, as autocast's addmm

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        # Under autocast the forward's matmul ran on casts of x and the weight: the backward's run on the same.
        x, weight, grad_y = x.to(grad_y.dtype), weight.to(grad_y.dtype), grad_y.contiguous()
        grad_x = stacked_matmul(grad_y, weight) if ctx.needs_input_grad[0] else None
        grad_weight = stacked_matmul(grad_y.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_bias = grad_y.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


class StackedLinearLeakyReLUDropout(nn.Module):
    """S replicas of `LinearLeakyReLUDropout`; `philox_key` is (S, 2), one (seed, step) per replica."""

    def __init__(self, layers: list[LinearLeakyReLUDropout]):
        super().__init__()
        first = layers[0]
        self.weight = nn.Parameter(_stacked(layer.weight for layer in layers))
        self.bias = nn.Parameter(_stacked(layer.bias for layer in layers)) if first.bias is not None else None
        self.register_buffer("philox_key", _stacked(layer.philox_key for layer in layers))
        self.negative_slope, self.p, self.kernels = first.negative_slope, first.p, first.kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p if self.training else 0.0
        key = next_key(self.philox_key) if p > 0.0 else None
        return linear_leaky_relu_dropout(
            x, self.weight, self.bias, negative_slope=self.negative_slope, p=p, seed=key, kernels=self.kernels
        )


class StackedReparameterize(nn.Module):
    """S replicas of `Reparameterize`: mu, logvar (S, B, L), one key per replica."""

    def __init__(self, layers: list[Reparameterize]):
        super().__init__()
        self.kernels = layers[0].kernels
        self.register_buffer("philox_key", _stacked(layer.philox_key for layer in layers))

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, seed=None) -> torch.Tensor:
        key = next_key(self.philox_key) if seed is None else seed
        return reparameterize(mu, logvar, seed=key, kernels=self.kernels)


_STACKED = (
    (LinearLeakyReLUDropout, StackedLinearLeakyReLUDropout),  # before nn.Linear, its base class
    (nn.Linear, StackedLinear),
    (Reparameterize, StackedReparameterize),
)


def stack(networks: list[nn.Module]) -> nn.Module:
    """One network holding `networks` (same architecture) as replicas along a new leading dimension."""
    first = networks[0]
    for single, stacked_class in _STACKED:
        if isinstance(first, single):
            return stacked_class(networks)
    if next(first.parameters(recurse=False), None) is not None or next(first.buffers(recurse=False), None) is not None:
        raise TypeError(f"cannot stack {type(first).__name__}: it holds tensors of its own")
    stacked = copy.copy(first)  # the same class and settings; new containers below
    stacked.__dict__ = {**first.__dict__, "_parameters": {}, "_buffers": {}, "_modules": {}}
    for name, _ in first.named_children():
        stacked._modules[name] = stack([network._modules[name] for network in networks])
    stacked.replicas = len(networks)
    return stacked


def replica_state(stacked: nn.Module, replica: int) -> dict[str, torch.Tensor]:
    """Replica `replica`'s state dict, named and shaped as the single network's."""
    return {name: value[replica] for name, value in stacked.state_dict().items()}
