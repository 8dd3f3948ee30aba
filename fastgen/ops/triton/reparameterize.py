"""Triton kernels for `reparameterize`: z = mu + exp(0.5 logvar) * eps, eps drawn from Philox in-kernel.

Stacked replicas run in one launch: replica r on grid axis 1, its contiguous n_elements at r * stride_s
(stride_s 0 for a single call), its own (seed, step) key (see philox.py)."""

import triton
import triton.language as tl

from fastgen.ops.triton.philox import philox_normal, replica_block


@triton.jit
def _load_latent(logvar_ptr, eps_ptr, key_ptr, offs, in_bounds, HAS_EPS: tl.constexpr):
    """logvar and eps (given, or regenerated from the key) as float32 blocks."""
    logvar = tl.load(logvar_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
    if HAS_EPS:
        eps = tl.load(eps_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
    else:
        eps = philox_normal(key_ptr, offs)
    return logvar, eps


@triton.jit
def reparameterize_fwd_kernel(
    mu_ptr, logvar_ptr, eps_ptr, key_ptr, z_ptr, n_elements, stride_s, HAS_EPS: tl.constexpr, BLOCK: tl.constexpr
):
    base, key_ptr, offs = replica_block(key_ptr, stride_s, BLOCK)
    in_bounds = offs < n_elements
    mu = tl.load(mu_ptr + base + offs, mask=in_bounds, other=0.0).to(tl.float32)
    logvar, eps = _load_latent(logvar_ptr + base, eps_ptr + base, key_ptr, offs, in_bounds, HAS_EPS)
    z = mu + tl.exp(0.5 * logvar) * eps
    tl.store(z_ptr + base + offs, z.to(z_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def reparameterize_bwd_kernel(
    grad_z_ptr,
    logvar_ptr,
    eps_ptr,
    key_ptr,
    grad_logvar_ptr,
    n_elements,
    stride_s,
    HAS_EPS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # dz/dmu = 1 (the gradient passes through); dz/dlogvar = 0.5 * exp(0.5 * logvar) * eps, eps regenerated.
    base, key_ptr, offs = replica_block(key_ptr, stride_s, BLOCK)
    in_bounds = offs < n_elements
    g = tl.load(grad_z_ptr + base + offs, mask=in_bounds, other=0.0).to(tl.float32)
    logvar, eps = _load_latent(logvar_ptr + base, eps_ptr + base, key_ptr, offs, in_bounds, HAS_EPS)
    grad_logvar = 0.5 * g * tl.exp(0.5 * logvar) * eps
    tl.store(grad_logvar_ptr + base + offs, grad_logvar.to(grad_logvar_ptr.dtype.element_ty), mask=in_bounds)


# For the ahead-of-time build (see linear_leaky_relu_dropout.AOT_BUILDS): types and launcher values.
AOT_BUILDS = {
    "reparameterize_fwd_kernel": dict(
        args=dict(
            mu_ptr="*{dtype}",
            logvar_ptr="*{dtype}",
            eps_ptr="*{dtype}",
            key_ptr="*i64",
            z_ptr="*{dtype}",
            n_elements="i32",
            stride_s="i32",
            HAS_EPS="constexpr",
            BLOCK="constexpr",
        ),
        constexprs=dict(HAS_EPS=(False, True), BLOCK=(1024,)),
    ),
    "reparameterize_bwd_kernel": dict(
        args=dict(
            grad_z_ptr="*{dtype}",
            logvar_ptr="*{dtype}",
            eps_ptr="*{dtype}",
            key_ptr="*i64",
            grad_logvar_ptr="*{dtype}",
            n_elements="i32",
            stride_s="i32",
            HAS_EPS="constexpr",
            BLOCK="constexpr",
        ),
        constexprs=dict(HAS_EPS=(False, True), BLOCK=(1024,)),
    ),
}
