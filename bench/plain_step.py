"""fastgen's training step with plain PyTorch modules in place of fastgen's fused layers: the fairest rival of
fastgen's kernels, timed under the same torch.compile (and on CUDA, the same CUDA graph) as fastgen's step.

The step itself is fastgen's (device-resident batches, real and fake through D in one pass, gradients by
`torch.autograd.grad`, torch's fused or multi-tensor Adam, the moving average); only the networks differ:
`nn.Linear` + `nn.LeakyReLU` + `nn.Dropout` for each fused layer (dropout from torch's, or Inductor's, own
random numbers), `mu + randn_like(mu) * exp(0.5 logvar)` for the reparameterisation, and plain
`binary_cross_entropy_with_logits` + KL for the VAE's loss. It is what a user gets from torch.compile
without fastgen's kernels.
"""

from __future__ import annotations

import dataclasses
from unittest import mock

import torch
from torch import nn

from fastgen.models import networks
from fastgen.training.trainers import TRAINERS


def plain_mlp(sizes, negative_slope: float, p: float, kernels: str) -> nn.Sequential:
    """networks._mlp with torch's own modules: Linear, LeakyReLU (ReLU at slope 0), Dropout where p > 0."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()]
        layers += [nn.Dropout(p)] if p > 0.0 else []
    return nn.Sequential(*layers)


class PlainReparameterize(nn.Module):
    def __init__(self, kernels: str = "eager"):
        super().__init__()
        self.kernels = "eager"  # VAE.loss passes this on to bce_kl_loss: its plain-PyTorch reference

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, seed=None) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def plain_trainer(model: str, config, device: torch.device, amp_dtype: torch.dtype | None = None):
    """fastgen's trainer for `model` with its networks built from plain modules (same sizes, same initialisation);
    `config`'s kernels are set to plain PyTorch ops for whatever of fastgen's the step still calls."""
    config = dataclasses.replace(config, kernels="eager")
    with mock.patch.object(networks, "_mlp", plain_mlp), mock.patch.object(networks, "Reparameterize", PlainReparameterize):
        return TRAINERS[model](config, device, amp_dtype)
