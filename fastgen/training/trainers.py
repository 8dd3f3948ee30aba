"""One optimisation step of each model, over device tensors only: no host sync inside a step."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from fastgen.evaluation import likelihood
from fastgen.models.networks import VAE, Discriminator, Generator
from fastgen.training.optim import DeviceLossScaler, StepAdam


def apply_update(loss: torch.Tensor, params, optimizer: StepAdam, scaler: DeviceLossScaler | None,
                 reduce_grads=None) -> None:
    """Gradients of `loss` for `params` only (autograd skips everything else), averaged across ranks by
    `reduce_grads` under torchrun, then one Adam update."""
    if scaler is None:
        grads = torch.autograd.grad(loss, params)
        optimizer.step(grads if reduce_grads is None else reduce_grads(grads))
    else:
        optimizer.step(*scaler.grads(loss, params, reduce_grads))


def _scaler(device, amp_dtype):
    return DeviceLossScaler(device) if amp_dtype == torch.float16 else None


class GANTrainer:
    """Non-saturating GAN: a D update on real + fake, then a G update through the updated D."""

    metric_names = ("d_loss", "g_loss", "d_real", "d_fake")
    modules = ("generator", "discriminator")

    def __init__(self, config, device: torch.device, amp_dtype: torch.dtype | None = None):
        self.generator = Generator(config.kernels).to(device)
        self.discriminator = Discriminator(config.kernels).to(device)
        self.g_params = list(self.generator.parameters())
        self.d_params = list(self.discriminator.parameters())
        fused = True if amp_dtype == torch.float16 else None  # found_inf needs the fused update
        self.opt_g = StepAdam(self.g_params, config.lr, config.betas, device, fused)
        self.opt_d = StepAdam(self.d_params, config.lr, config.betas, device, fused)
        self.scaler_g, self.scaler_d = _scaler(device, amp_dtype), _scaler(device, amp_dtype)
        self.optimizers = {"generator": self.opt_g, "discriminator": self.opt_d}
        self.scalers = {"generator": self.scaler_g, "discriminator": self.scaler_d}
        self.autocast = autocast_factory(device, amp_dtype)
        self.device = device
        self.reduce_grads = None  # set under torchrun: the mean of the gradients over ranks

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
        apply_update(d_loss, self.d_params, self.opt_d, self.scaler_d, self.reduce_grads)

        with self.autocast():
            g_loss = F.softplus(-self.discriminator(fake).float()).mean()
        # Gradients for G only: D's weight gradients are never computed.
        apply_update(g_loss, self.g_params, self.opt_g, self.scaler_g, self.reduce_grads)
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

    def __init__(self, config, device: torch.device, amp_dtype: torch.dtype | None = None):
        self.vae = VAE(config.kernels).to(device)
        self.params = list(self.vae.parameters())
        self.opt = StepAdam(self.params, config.lr, config.betas, device, True if amp_dtype == torch.float16 else None)
        self.scaler = _scaler(device, amp_dtype)
        self.optimizers = {"vae": self.opt}
        self.scalers = {"vae": self.scaler}
        self.autocast = autocast_factory(device, amp_dtype)
        self.device = device
        self.reduce_grads = None  # set under torchrun: the mean of the gradients over ranks

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 784) in [0, 1]. Returns (loss, bce, kl) per image on the device."""
        with self.autocast():
            loss, bce, kl = self.vae.loss(x)
        apply_update(loss, self.params, self.opt, self.scaler, self.reduce_grads)
        return torch.stack([loss.detach(), bce, kl])

    @torch.no_grad()
    def test_loss(self, split, seed: int) -> float:
        """Mean per-image loss over a split, eps drawn from a fixed key so epochs compare like for like."""
        return likelihood.loss_per_image(self.vae, split.images, seed, autocast=self.autocast)

    def train(self, mode: bool = True) -> None:
        self.vae.train(mode)

    def sampler(self):
        return self.vae


def autocast_factory(device: torch.device, amp_dtype: torch.dtype | None):
    """A zero-argument context factory: autocast to `amp_dtype`, or a no-op for None."""
    if amp_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=amp_dtype)
