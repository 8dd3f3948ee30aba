"""One optimisation step of each model, over device tensors only: no host sync inside a step."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .models import VAE, Discriminator, Generator


def make_adam(params, lr: float, betas) -> torch.optim.Adam:
    # The fused implementation runs one kernel for all parameters, on CPU and CUDA alike.
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class GANTrainer:
    """Non-saturating GAN: a D update on real + fake, then a G update through the updated D."""

    metric_names = ("d_loss", "g_loss", "d_real", "d_fake")
    modules = ("generator", "discriminator")

    def __init__(self, config, device: torch.device, autocast):
        self.generator = Generator(config.kernels).to(device)
        self.discriminator = Discriminator(config.kernels).to(device)
        self.opt_g = make_adam(self.generator.parameters(), config.lr, config.betas)
        self.opt_d = make_adam(self.discriminator.parameters(), config.lr, config.betas)
        self.g_params = list(self.generator.parameters())
        self.autocast = autocast
        self.device = device

    def step(self, real: torch.Tensor) -> torch.Tensor:
        """real: (B, 784) in [-1, 1]. Returns (d_loss, g_loss, mean D(x), mean D(G(z))) on the device."""
        B = real.shape[0]
        with self.autocast():
            fake = self.generator(torch.randn(B, Generator.latent_dim, device=self.device)).reshape(B, -1)
            # Real and fake in one discriminator pass: one set of larger matmuls instead of two.
            logits = self.discriminator(torch.cat([real, fake.detach().to(real.dtype)])).float()
            real_logits, fake_logits = logits[:B], logits[B:]
            # BCE-with-logits against 1 / 0 is softplus(-l) / softplus(l).
            d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        with self.autocast():
            g_loss = F.softplus(-self.discriminator(fake).float()).mean()
        # Gradients for G only: autograd skips D's weight gradients entirely.
        for param, grad in zip(self.g_params, torch.autograd.grad(g_loss, self.g_params)):
            param.grad = grad
        self.opt_g.step()
        return torch.stack([d_loss.detach(), g_loss.detach(),
                            torch.sigmoid(real_logits.detach()).mean(), torch.sigmoid(fake_logits.detach()).mean()])

    def train(self, mode: bool = True) -> None:
        self.generator.train(mode)
        self.discriminator.train(mode)

    def sampler(self):
        return self.generator


class VAETrainer:
    """Adam on the mean over images of (BCE summed over pixels + KL)."""

    metric_names = ("loss", "bce", "kl")
    modules = ("vae",)

    def __init__(self, config, device: torch.device, autocast):
        self.vae = VAE(config.kernels).to(device)
        self.opt = make_adam(self.vae.parameters(), config.lr, config.betas)
        self.autocast = autocast
        self.device = device

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 784) in [0, 1]. Returns (loss, bce, kl) per image on the device."""
        with self.autocast():
            loss, bce, kl = self.vae.loss(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return torch.stack([loss.detach(), bce, kl])

    @torch.no_grad()
    def test_loss(self, split, seed: int, batch_size: int = 1000) -> float:
        """Mean per-image loss over a split, eps drawn from a fixed key so epochs compare like for like."""
        self.vae.eval()
        total = torch.zeros((), device=self.device)
        key = torch.tensor([seed, 0], dtype=torch.int64, device=self.device)
        for start in range(0, len(split), batch_size):
            x = split.scale(split.images[start:start + batch_size])
            with self.autocast():
                total += self.vae.loss(x, seed=key + torch.tensor([0, start], device=self.device), reduction="sum")[0]
        self.vae.train()
        return total.item() / len(split)

    def train(self, mode: bool = True) -> None:
        self.vae.train(mode)

    def sampler(self):
        return self.vae


def autocast_factory(device: torch.device, enabled: bool):
    """A zero-argument context factory: bf16 autocast when enabled, else a no-op."""
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
