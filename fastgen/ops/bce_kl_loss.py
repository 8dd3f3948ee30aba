"""`bce_kl_loss`: the VAE loss per image, BCE-with-logits summed over pixels + KL to N(0, I)."""

from __future__ import annotations

import math

import torch
from torch.library import wrap_triton

from fastgen.ops import eager_native
from fastgen.ops.dispatch import define_op, native_runs_on, triton_runs_on, use_eager_triton, use_fused_ops
from fastgen.ops.reference import bce_kl_loss_backward_reference, bce_kl_loss_reference
from fastgen.ops.validation import check_same, check_shape, check_tensor

_MAX_BLOCK = 1024


def _blocks(D: int, L: int) -> dict:
    from triton import next_power_of_2

    return dict(BLOCK_D=min(next_power_of_2(max(D, 1)), _MAX_BLOCK), BLOCK_L=min(next_power_of_2(max(L, 1)), _MAX_BLOCK))


@define_op("fastgen::bce_kl_loss")
def _forward(logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-image loss in float32; all inputs contiguous, logits/target (B, D), mu/logvar (B, L)."""
    if native_runs_on(logits.device, logits.dtype):
        return torch.ops.fastgen_native.bce_kl_loss(logits, target, mu, logvar)
    if not triton_runs_on(logits.device):
        return bce_kl_loss_reference(logits, target, mu, logvar, reduction="none")
    return _triton_forward(logits, target, mu, logvar)


def _triton_forward(logits, target, mu, logvar) -> torch.Tensor:
    from fastgen.ops.triton.bce_kl_loss import bce_kl_fwd_kernel as kernel

    B, D = logits.shape
    loss = torch.empty(B, dtype=torch.float32, device=logits.device)
    if B:
        wrap_triton(kernel)[(B,)](logits, target, mu, logvar, loss, D, mu.shape[1], **_blocks(D, mu.shape[1]))
    return loss


@define_op("fastgen::bce_kl_loss_backward")
def _backward_op(
    grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if native_runs_on(logits.device, logits.dtype):
        return torch.ops.fastgen_native.bce_kl_loss_backward(grad_loss, logits, target, mu, logvar)
    if not triton_runs_on(logits.device):
        return bce_kl_loss_backward_reference(grad_loss, logits, target, mu, logvar)
    return _triton_backward(grad_loss, logits, target, mu, logvar)


def _triton_backward(grad_loss, logits, target, mu, logvar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fastgen.ops.triton.bce_kl_loss import bce_kl_bwd_kernel as kernel

    B, D = logits.shape
    grad_logits, grad_mu, grad_logvar = torch.empty_like(logits), torch.empty_like(mu), torch.empty_like(logvar)
    if B:
        wrap_triton(kernel)[(B,)](
            grad_loss, logits, target, mu, logvar, grad_logits, grad_mu, grad_logvar, D, mu.shape[1], **_blocks(D, mu.shape[1])
        )
    return grad_logits, grad_mu, grad_logvar


# Explicit fake kernels: see linear_leaky_relu_dropout.py (the body as fake would launch the Triton
# interpreter on fake tensors).
@_forward.register_fake
def _(logits, target, mu, logvar):
    return logits.new_empty(logits.shape[0], dtype=torch.float32)


@_backward_op.register_fake
def _(grad_loss, logits, target, mu, logvar):
    return torch.empty_like(logits), torch.empty_like(mu), torch.empty_like(logvar)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_loss):
    return _input_grads(ctx, grad_loss, _backward_op)


def _input_grads(ctx, grad_loss, backward_op):
    logits, target, mu, logvar = ctx.saved_tensors
    grad_loss = grad_loss.float().contiguous()
    grad_logits, grad_mu, grad_logvar = backward_op(grad_loss, logits, target, mu, logvar)
    grad_target = (-grad_loss[:, None] * logits.float()).to(target.dtype) if ctx.needs_input_grad[1] else None
    return grad_logits, grad_target, grad_mu, grad_logvar


class EagerTritonBCEKL(torch.autograd.Function):
    """The eager fast path where Triton runs (`dispatch.use_eager_triton`): the registered op's kernels, launched
    directly (bit for bit the registered op's outputs and gradients: tested)."""

    @staticmethod
    def forward(logits, target, mu, logvar):
        return _triton_forward(logits, target, mu, logvar)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad_loss):
        return _input_grads(ctx, grad_loss, _triton_backward)


_forward.register_autograd(_backward, setup_context=_setup_context)

_REDUCTIONS = ("none", "mean", "sum")


def bce_kl_loss(logits, target, mu, logvar, *, reduction: str = "mean", kernels: str = "auto") -> torch.Tensor:
    """Per image: sum over pixels of BCE-with-logits(logits, target) + KL(N(mu, exp(logvar)) || N(0, I)).

    `logits`/`target` are (B, ...) with targets in [0, 1]; `mu`/`logvar` are (B, L). The result is
    float32: a (B,) vector for reduction="none", else its mean or sum over images. `kernels` picks the
    fused op or plain PyTorch ops (`use_fused_ops`).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    for name, t in (("logits", logits), ("target", target), ("mu", mu), ("logvar", logvar)):
        check_tensor(name, t)
    check_shape("target", target, logits.shape, "logits")
    check_tensor("mu", mu, ndim=2)
    check_shape("logvar", logvar, mu.shape, "mu")
    if logits.dim() < 1 or logits.shape[0] != mu.shape[0]:
        raise ValueError(f"logits has shape {tuple(logits.shape)} but mu has {mu.shape[0]} rows (one per image)")
    fused = use_fused_ops(kernels, logits.device)
    as_is = False
    if torch.is_autocast_enabled(logits.device.type):  # losses are computed in float32, as torch's autocast does
        # The native kernels read bf16 logits as they are, in float32: the same numbers without a widened copy.
        as_is = fused and logits.dtype == torch.bfloat16 and native_runs_on(logits.device, logits.dtype)
        logits, target, mu, logvar = logits if as_is else logits.float(), target.float(), mu.float(), logvar.float()
    check_same([("target", target), ("mu", mu), ("logvar", logvar)] + ([] if as_is else [("logits", logits)]))
    if not fused:
        return bce_kl_loss_reference(logits, target, mu, logvar, reduction=reduction)
    shape = (logits.shape[0], math.prod(logits.shape[1:]))  # not (B, -1): an empty batch has no -1 to infer
    logits, target = logits.reshape(shape).contiguous(), target.reshape(shape).contiguous()
    op = _forward
    if eager_native.use_eager_native(logits.device, logits.dtype):
        op = eager_native.bce_kl_loss
    elif use_eager_triton(logits.device):
        op = EagerTritonBCEKL.apply
    per_image = op(logits, target, mu.contiguous(), logvar.contiguous())
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image
