"""The only eager math of the fused ops, forward and backward, in plain PyTorch: what the ops run on a
device without Triton (and for `kernels="eager"`), and the ground truth their tests compare against.
Random draws come in as arguments (a keep-mask, eps), so every function here is deterministic."""

import math

import torch
import torch.nn.functional as F

from fastgen.ops.stacked_matmul import stacked_matmul


def linear_leaky_relu_dropout_reference(x, weight, bias, negative_slope, keep_mask, p):
    """dropout(leaky_relu(x @ weight.T + bias)) with the given keep-mask (None: no dropout); a 3-D weight
    (replicas, out, in) takes x (replicas, batch, in) and bias (replicas, out): one batched matmul."""
    if weight.dim() == 3:
        pre = stacked_matmul(x, weight.transpose(1, 2))
        pre = pre if bias is None else pre + bias.unsqueeze(1)
    else:
        pre = F.linear(x, weight, bias)
    y = F.leaky_relu(pre, negative_slope)
    if keep_mask is not None and p > 0.0:
        y = y * keep_mask.to(y.dtype) / (1.0 - p)
    return y


def linear_leaky_relu_dropout_grad_pre_reference(grad_y, y, negative_slope, keep_mask, p):
    """dL/d(pre-activation) from dL/dy and the output: a non-negative slope keeps the sign, so y > 0
    exactly where the pre-activation was > 0."""
    grad_pre = torch.where(y > 0, grad_y, grad_y * negative_slope)
    if keep_mask is not None and p > 0.0:
        grad_pre = grad_pre * keep_mask.to(grad_pre.dtype) / (1.0 - p)
    return grad_pre


def reparameterize_reference(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


def reparameterize_grad_logvar_reference(grad_z, logvar, eps):
    return 0.5 * grad_z * torch.exp(0.5 * logvar) * eps


def kl_to_standard_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per row (the last dimension summed), in float32.

    Written 0.5 (mu^2 + expm1(logvar) - logvar) rather than -0.5 (1 + logvar - mu^2 - exp(logvar)): near a
    standard normal (mu, logvar ~ 0, as at initialisation) the latter subtracts numbers close to 1 and
    keeps only a few correct digits (2.7% off at |logvar| ~ 1e-3 in float32), and then any rounding
    difference in exp (eager against compiled code) shows as a visible change in the logged KL."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu * mu + torch.expm1(logvar) - logvar).sum(-1)


def bce_kl_loss_reference(logits, target, mu, logvar, reduction="mean"):
    """Per image: BCE-with-logits summed over pixels + KL to N(0, I), in float32; then reduced."""
    shape = (logits.shape[0], math.prod(logits.shape[1:]))  # not (B, -1): an empty batch has no -1 to infer
    bce = F.binary_cross_entropy_with_logits(logits.reshape(shape).float(), target.reshape(shape).float(), reduction="none")
    bce = bce.sum(1)
    per_image = bce + kl_to_standard_normal(mu, logvar)
    return {"none": per_image, "mean": per_image.mean(), "sum": per_image.sum()}[reduction]


def bce_kl_loss_backward_reference(grad_loss, logits, target, mu, logvar):
    """Gradients of the per-image loss for logits, mu and logvar, given dL/d(loss) per image (B,)."""
    g = grad_loss.float()[:, None]
    grad_logits = (g * (torch.sigmoid(logits.float()) - target.float())).to(logits.dtype)
    grad_mu = (g * mu.float()).to(mu.dtype)
    grad_logvar = (g * 0.5 * (logvar.float().exp() - 1.0)).to(logvar.dtype)
    return grad_logits, grad_mu, grad_logvar
