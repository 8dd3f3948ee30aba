"""The VAE's test loss (the training objective) and its importance-weighted likelihood estimate.

Both are in nats per image under the same per-pixel Bernoulli cross-entropy with grey-level
targets in [0, 1] that training uses, so they compare with fastgen's losses, not with numbers
reported for binarised MNIST.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.nn import functional as F

from fastgen.models.networks import IMAGE_PIXELS

MAX_IWAE_K = 5000
_LOG_2PI = math.log(2 * math.pi)


def _unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 784) in [0, 1], scaled exactly as training scales them."""
    return images_uint8.reshape(images_uint8.shape[0], IMAGE_PIXELS).float().mul_(1.0 / 255.0)


@torch.no_grad()
def loss_per_image(
    vae, images_uint8: torch.Tensor, seed: int | list[int], batch_size: int = 1000, autocast=contextlib.nullcontext
) -> float | list[float]:
    """Mean per-image BCE + KL over the images, with eps drawn from a fixed key so calls compare like for like.

    A VAE stacked over replicas takes one seed per replica and returns one mean per replica, each what the
    single VAE with that seed gives."""
    replicas = getattr(vae, "replicas", None)
    was_training = vae.training
    vae.eval()
    device = images_uint8.device
    seeds = [seed] if replicas is None else list(seed)
    total = torch.zeros(len(seeds), device=device)
    keys = torch.tensor([[s, 0] for s in seeds], dtype=torch.int64, device=device)
    for start in range(0, len(images_uint8), batch_size):
        x = _unit(images_uint8[start : start + batch_size])
        offset = torch.tensor([0, start], device=device)
        with autocast():
            if replicas is None:
                total += vae.loss(x, seed=keys[0] + offset, reduction="sum")[0]
            else:
                total += vae.loss(x.expand(replicas, *x.shape), seed=keys + offset, reduction="sum")[0]
    vae.train(was_training)
    means = [value / len(images_uint8) for value in total.tolist()]
    return means[0] if replicas is None else means


@torch.no_grad()
def iwae_nll(vae, images_uint8: torch.Tensor, k: int = 100, seed: int = 0, rows_per_chunk: int = 50_000) -> float:
    """Importance-weighted estimate of -log p(x) per image (Burda et al., 2016) with k samples of q(z|x).

    It tightens towards the true negative log-likelihood as k grows and is never above the test loss
    in expectation (k = 1 is the test loss).
    """
    if not 1 <= k <= MAX_IWAE_K:
        raise ValueError(f"k must be in [1, {MAX_IWAE_K}], got {k}")
    was_training = vae.training
    vae.eval()
    device = images_uint8.device
    gen = torch.Generator(device=device).manual_seed(seed)
    per_chunk = max(1, rows_per_chunk // k)
    total = 0.0
    for start in range(0, len(images_uint8), per_chunk):
        x = _unit(images_uint8[start : start + per_chunk])
        mu, logvar = (t.float() for t in vae.encode(x))
        eps = torch.randn((k, *mu.shape), generator=gen, device=device)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = vae.decode(z.reshape(-1, mu.shape[1])).float().view(k, x.shape[0], IMAGE_PIXELS)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z.square() + _LOG_2PI).sum(-1)
        log_qz = -0.5 * (eps.square() + _LOG_2PI + logvar).sum(-1)
        log_w = (log_px + log_pz - log_qz).double()
        total += float((math.log(k) - torch.logsumexp(log_w, dim=0)).sum())
    vae.train(was_training)
    return total / len(images_uint8)
