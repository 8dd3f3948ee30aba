"""Triton kernels for `bce_kl_loss`: one program per image, forward and backward each in one pass."""

import triton
import triton.language as tl


@triton.jit
def bce_kl_fwd_kernel(logits_ptr, target_ptr, mu_ptr, logvar_ptr, loss_ptr, D, L, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    # One program per image: BCE-with-logits summed over D pixels + KL summed over L latents.
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs = d0 + tl.arange(0, BLOCK_D)
        m = offs < D
        x = tl.load(logits_ptr + row * D + offs, mask=m, other=0.0).to(tl.float32)
        t = tl.load(target_ptr + row * D + offs, mask=m, other=0.0).to(tl.float32)
        # max(x, 0) - x t + log(1 + exp(-|x|)): finite for any finite x.
        bce = tl.maximum(x, 0.0) - x * t + tl.log(1.0 + tl.exp(-tl.abs(x)))
        acc += tl.where(m, bce, 0.0)
    kl_acc = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for l0 in range(0, L, BLOCK_L):
        offs = l0 + tl.arange(0, BLOCK_L)
        m = offs < L
        mu = tl.load(mu_ptr + row * L + offs, mask=m, other=0.0).to(tl.float32)
        logvar = tl.load(logvar_ptr + row * L + offs, mask=m, other=0.0).to(tl.float32)
        kl_acc += tl.where(m, -0.5 * (1.0 + logvar - mu * mu - tl.exp(logvar)), 0.0)
    tl.store(loss_ptr + row, tl.sum(acc, axis=0) + tl.sum(kl_acc, axis=0))


@triton.jit
def bce_kl_bwd_kernel(
    grad_loss_ptr,
    logits_ptr,
    target_ptr,
    mu_ptr,
    logvar_ptr,
    grad_logits_ptr,
    grad_mu_ptr,
    grad_logvar_ptr,
    D,
    L,
    BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    # All three gradients of one image in one pass.
    row = tl.program_id(0).to(tl.int64)
    g = tl.load(grad_loss_ptr + row).to(tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs = d0 + tl.arange(0, BLOCK_D)
        m = offs < D
        x = tl.load(logits_ptr + row * D + offs, mask=m, other=0.0).to(tl.float32)
        t = tl.load(target_ptr + row * D + offs, mask=m, other=0.0).to(tl.float32)
        grad_x = g * (tl.sigmoid(x) - t)
        tl.store(grad_logits_ptr + row * D + offs, grad_x.to(grad_logits_ptr.dtype.element_ty), mask=m)
    for l0 in range(0, L, BLOCK_L):
        offs = l0 + tl.arange(0, BLOCK_L)
        m = offs < L
        mu = tl.load(mu_ptr + row * L + offs, mask=m, other=0.0).to(tl.float32)
        logvar = tl.load(logvar_ptr + row * L + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(grad_mu_ptr + row * L + offs, (g * mu).to(grad_mu_ptr.dtype.element_ty), mask=m)
        grad_lv = g * 0.5 * (tl.exp(logvar) - 1.0)
        tl.store(grad_logvar_ptr + row * L + offs, grad_lv.to(grad_logvar_ptr.dtype.element_ty), mask=m)


# For the ahead-of-time build (see linear_leaky_relu_dropout.AOT_BUILDS): types and launcher values.
# The launcher passes next_power_of_2(D) and next_power_of_2(L), each capped at 1024.
_BLOCKS = tuple(2**i for i in range(11))
AOT_BUILDS = {
    "bce_kl_fwd_kernel": dict(
        args=dict(
            logits_ptr="*{dtype}",
            target_ptr="*{dtype}",
            mu_ptr="*{dtype}",
            logvar_ptr="*{dtype}",
            loss_ptr="*fp32",
            D="i32",
            L="i32",
            BLOCK_D="constexpr",
            BLOCK_L="constexpr",
        ),
        constexprs=dict(BLOCK_D=_BLOCKS, BLOCK_L=_BLOCKS),
    ),
    "bce_kl_bwd_kernel": dict(
        args=dict(
            grad_loss_ptr="*fp32",
            logits_ptr="*{dtype}",
            target_ptr="*{dtype}",
            mu_ptr="*{dtype}",
            logvar_ptr="*{dtype}",
            grad_logits_ptr="*{dtype}",
            grad_mu_ptr="*{dtype}",
            grad_logvar_ptr="*{dtype}",
            D="i32",
            L="i32",
            BLOCK_D="constexpr",
            BLOCK_L="constexpr",
        ),
        constexprs=dict(BLOCK_D=_BLOCKS, BLOCK_L=_BLOCKS),
    ),
}
