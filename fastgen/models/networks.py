"""The paper's MLP GAN and VAE, built from fastgen's fused layers."""

from __future__ import annotations

import torch
from torch import nn

from fastgen.models.layers import LinearLeakyReLUDropout, Reparameterize
from fastgen.ops import bce_kl_loss
from fastgen.ops.reference import kl_to_standard_normal

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 784


def _mlp(sizes, negative_slope: float, p: float, kernels: str) -> nn.Sequential:
    return nn.Sequential(
        *[LinearLeakyReLUDropout(a, b, negative_slope, p, kernels=kernels) for a, b in zip(sizes[:-1], sizes[1:])]
    )


def _lead(module: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The leading batch dimensions of `x`: (B,), or (S, B) in a network stacked over S replicas."""
    return tuple(x.shape[:2] if getattr(module, "replicas", None) else x.shape[:1])


def _seeded_normal(shape, seed, device) -> torch.Tensor:
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device)


class Generator(nn.Module):
    """z (100, N(0, I)) -> 256 -> 512 -> 1024 -> 784, LeakyReLU(0.2) between, tanh out: 1x28x28 in [-1, 1]."""

    latent_dim = 100

    def __init__(self, kernels: str = "auto"):
        super().__init__()
        self.hidden = _mlp([self.latent_dim, 256, 512, 1024], 0.2, 0.0, kernels)
        self.out = nn.Linear(1024, IMAGE_PIXELS)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.hidden(z))).view(*z.shape[:-1], *IMAGE_SHAPE)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n images in [0, 1], shape (n, 1, 28, 28); the same seed gives the same images."""
        device = self.out.weight.device
        was_training = self.training
        self.eval()
        images = (self(_seeded_normal((n, self.latent_dim), seed, device)).float() + 1) / 2
        self.train(was_training)
        return images


class Discriminator(nn.Module):
    """784 -> 1024 -> 512 -> 256 -> 1 with LeakyReLU(0.2) + Dropout(0.3) after each hidden layer; returns logits (B,)
    ((S, B) stacked)."""

    def __init__(self, kernels: str = "auto"):
        super().__init__()
        self.hidden = _mlp([IMAGE_PIXELS, 1024, 512, 256], 0.2, 0.3, kernels)
        self.out = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x.reshape(*_lead(self, x), IMAGE_PIXELS))).squeeze(-1)


class VAE(nn.Module):
    """Encoder 784 -> 512 -> 256 -> 32 (16 means, 16 log-variances), decoder 16 -> 256 -> 512 -> 784 logits; ReLU."""

    latent_dim = 16

    def __init__(self, kernels: str = "auto"):
        super().__init__()
        # ReLU is LeakyReLU with slope 0, so the fused layer serves both models.
        self.encoder = _mlp([IMAGE_PIXELS, 512, 256], 0.0, 0.0, kernels)
        self.to_latent = nn.Linear(256, 2 * self.latent_dim)
        self.decoder = _mlp([self.latent_dim, 256, 512], 0.0, 0.0, kernels)
        self.to_logits = nn.Linear(512, IMAGE_PIXELS)
        self.reparameterize = Reparameterize(kernels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_latent(self.encoder(x.reshape(*_lead(self, x), IMAGE_PIXELS))).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits, shape (B, 784)."""
        return self.to_logits(self.decoder(z))

    def forward(self, x: torch.Tensor, seed=None):
        """(logits, mu, logvar); eps comes from the module's key unless `seed` is given."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, seed)), mu, logvar

    def loss(self, x: torch.Tensor, seed=None, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, bce, kl) per image (summed over pixels / latents), reduced as asked over the batch (stacked: per
        replica); x in [0, 1]."""
        logits, mu, logvar = self(x, seed)
        lead = _lead(self, x)
        target = x.reshape(*lead, IMAGE_PIXELS)
        kl = kl_to_standard_normal(mu, logvar)
        rows = (-1, IMAGE_PIXELS), (-1, self.latent_dim)  # the loss is per image: replicas' rows in one call
        loss = bce_kl_loss(
            logits.reshape(rows[0]),
            target.reshape(rows[0]),
            mu.reshape(rows[1]),
            logvar.reshape(rows[1]),
            reduction="none",
            kernels=self.reparameterize.kernels,
        ).view(lead)
        reduce = {"mean": lambda t: t.mean(-1), "sum": lambda t: t.sum(-1), "none": lambda t: t}[reduction]
        return reduce(loss), reduce(loss.detach() - kl.detach()), reduce(kl.detach())

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n images in [0, 1] (pixel means), shape (n, 1, 28, 28)."""
        device = self.to_logits.weight.device
        z = _seeded_normal((n, self.latent_dim), seed, device)
        return torch.sigmoid(self.decode(z).float()).view(n, *IMAGE_SHAPE)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions (pixel means at z = mu) of images x in [0, 1]."""
        mu, _ = self.encode(x)
        return torch.sigmoid(self.decode(mu).float()).view(*_lead(self, x), *IMAGE_SHAPE)
