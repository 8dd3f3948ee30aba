"""Plain PyTorch compositions of the fused ops: the ground truth for tests and the `kernels="eager"` path."""
import torch
import torch.nn.functional as F


def linear_leaky_relu_dropout_reference(x, weight, bias, negative_slope, keep_mask, p):
    y = F.leaky_relu(F.linear(x, weight, bias), negative_slope)
    if keep_mask is not None and p > 0.0:
        y = y * keep_mask.to(y.dtype) / (1.0 - p)
    return y


def reparameterize_reference(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


def kl_to_standard_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in float32."""
    return -0.5 * (1.0 + logvar.float() - mu.float().pow(2) - logvar.float().exp()).sum(1)


def bce_kl_loss_reference(logits, target, mu, logvar, reduction="mean"):
    B = logits.shape[0]
    bce = F.binary_cross_entropy_with_logits(logits.reshape(B, -1).float(), target.reshape(B, -1).float(),
                                             reduction="none").sum(1)
    per_image = bce + kl_to_standard_normal(mu, logvar)
    return {"none": per_image, "mean": per_image.mean(), "sum": per_image.sum()}[reduction]
