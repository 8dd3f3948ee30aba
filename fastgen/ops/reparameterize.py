"""`reparameterize`: z = mu + exp(0.5 * logvar) * eps, with eps drawn in-kernel from a Philox key."""

from __future__ import annotations

from typing import Optional

import torch
from torch.library import wrap_triton

from fastgen.ops import eager_native
from fastgen.ops.dispatch import TRITON_DTYPES, define_op, native_runs_on, triton_runs_on, use_eager_triton, use_fused_ops
from fastgen.ops.reference import reparameterize_grad_logvar_reference, reparameterize_reference
from fastgen.ops.rng import normal, per_replica, philox_key, random_seed
from fastgen.ops.validation import check_same, check_shape, check_tensor

_BLOCK = 1024


def _grid(n: int, replicas: int = 1):
    return ((n + _BLOCK - 1) // _BLOCK, replicas)


def _per_replica_numel(t: torch.Tensor, key: torch.Tensor):
    """(replicas, elements per replica, elements between replicas): a stacked key (S, 2) runs t's S replicas
    in one launch, on grid axis 1; a single call is one replica, stride 0."""
    replicas = t.shape[0] if key.dim() == 2 else 1
    n = t.numel() // replicas if replicas else 0
    return replicas, n, (n if key.dim() == 2 else 0)


def _noise(eps, key, like):
    return eps if eps is not None else normal(key, like.shape, like.dtype)


@define_op("fastgen::reparameterize")
def _forward(mu: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor], key: torch.Tensor) -> torch.Tensor:
    """key (2,), or (S, 2) for stacked replicas (mu's first dimension): each replica as a single call with its key."""
    if key.dim() == 2 and native_runs_on(mu.device, mu.dtype):  # the native kernel takes one replica at a time
        return per_replica(lambda k, m, lv, e: _forward_one(m, lv, e, k), key, mu, logvar, eps)
    return _forward_one(mu, logvar, eps, key)


def _forward_one(mu, logvar, eps, key) -> torch.Tensor:
    """One replica on the native kernel; a single call or stacked replicas on the reference or Triton."""
    if native_runs_on(mu.device, mu.dtype):
        return torch.ops.fastgen_native.reparameterize(mu, logvar, eps, key)
    if not triton_runs_on(mu.device):
        return reparameterize_reference(mu, logvar, _noise(eps, key, mu))
    return _triton_forward(mu, logvar, eps, key)


def _triton_forward(mu, logvar, eps, key) -> torch.Tensor:
    from fastgen.ops.triton.reparameterize import reparameterize_fwd_kernel as kernel

    z = torch.empty_like(mu)
    replicas, n, stride_s = _per_replica_numel(mu, key)
    if n:
        wrap_triton(kernel)[_grid(n, replicas)](
            mu, logvar, eps if eps is not None else mu, key.contiguous(), z, n, stride_s, HAS_EPS=eps is not None, BLOCK=_BLOCK
        )
    return z


@define_op("fastgen::reparameterize_grad_logvar")
def _grad_logvar(grad_z: torch.Tensor, logvar: torch.Tensor, eps: Optional[torch.Tensor], key: torch.Tensor) -> torch.Tensor:
    if key.dim() == 2 and native_runs_on(logvar.device, logvar.dtype):  # the native kernel: one replica at a time
        return per_replica(lambda k, g, lv, e: _grad_logvar_one(g, lv, e, k), key, grad_z, logvar, eps)
    return _grad_logvar_one(grad_z, logvar, eps, key)


def _grad_logvar_one(grad_z, logvar, eps, key) -> torch.Tensor:
    """One replica on the native kernel; a single call or stacked replicas on the reference or Triton."""
    if native_runs_on(logvar.device, logvar.dtype):
        return torch.ops.fastgen_native.reparameterize_grad_logvar(grad_z, logvar, eps, key)
    if not triton_runs_on(logvar.device):
        return reparameterize_grad_logvar_reference(grad_z, logvar, _noise(eps, key, logvar))
    return _triton_grad_logvar(grad_z, logvar, eps, key)


def _triton_grad_logvar(grad_z, logvar, eps, key) -> torch.Tensor:
    from fastgen.ops.triton.reparameterize import reparameterize_bwd_kernel as kernel

    grad_logvar = torch.empty_like(logvar)
    replicas, n, stride_s = _per_replica_numel(logvar, key)
    if n:
        wrap_triton(kernel)[_grid(n, replicas)](
            grad_z,
            logvar,
            eps if eps is not None else logvar,
            key.contiguous(),
            grad_logvar,
            n,
            stride_s,
            HAS_EPS=eps is not None,
            BLOCK=_BLOCK,
        )
    return grad_logvar


# Explicit fake kernels: see linear_leaky_relu_dropout.py (the body as fake would launch the Triton
# interpreter on fake tensors).
@_forward.register_fake
def _(mu, logvar, eps, key):
    return torch.empty_like(mu)


@_grad_logvar.register_fake
def _(grad_z, logvar, eps, key):
    return torch.empty_like(logvar)


def _setup_context(ctx, inputs, output):
    mu, logvar, eps, key = inputs
    ctx.has_eps = eps is not None
    ctx.save_for_backward(logvar, eps if eps is not None else logvar, key)


def _backward(ctx, grad_z):
    return _input_grads(ctx, grad_z, _grad_logvar)


def _input_grads(ctx, grad_z, grad_logvar_op):
    logvar, eps, key = ctx.saved_tensors
    eps = eps if ctx.has_eps else None
    grad_z = grad_z.contiguous()
    grad_logvar = grad_logvar_op(grad_z, logvar, eps, key) if ctx.needs_input_grad[1] else None
    grad_eps = grad_z * torch.exp(0.5 * logvar) if ctx.has_eps and ctx.needs_input_grad[2] else None
    return grad_z, grad_logvar, grad_eps, None


_forward.register_autograd(_backward, setup_context=_setup_context)


class EagerTritonReparameterize(torch.autograd.Function):
    """The eager fast path where Triton runs (`dispatch.use_eager_triton`): the registered op's kernels, launched
    directly (bit for bit the registered op's outputs and gradients: tested)."""

    @staticmethod
    def forward(mu, logvar, eps, key):
        return _triton_forward(mu, logvar, eps, key)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad_z):
        return _input_grads(ctx, grad_z, _triton_grad_logvar)


def _eager_fast_path(mu, logvar, eps, seed, kernels: str):
    """The op an eager call goes straight to, or None: for the common call (two float tensors alike in shape, dtype
    and device, no eps, a (seed, step) key on their device, no autocast) the checks below are all the general path
    would make, in a few microseconds instead of a dozen (host time is most of a small call's cost)."""
    if eps is not None or type(seed) is not torch.Tensor or type(mu) is not torch.Tensor or type(logvar) is not torch.Tensor:
        return None
    device = mu.device
    if (
        not use_fused_ops(kernels, device)
        or seed.shape != (2,)
        or seed.dtype != torch.int64
        or logvar.shape != mu.shape
        or logvar.dtype != mu.dtype
        or not mu.is_floating_point()
        or logvar.device != device
        or seed.device != device
        or torch.is_autocast_enabled(device.type)
    ):
        return None
    if eager_native.use_eager_native(device, mu.dtype):
        return eager_native.reparameterize
    if use_eager_triton(device) and mu.dtype in TRITON_DTYPES:
        return EagerTritonReparameterize.apply
    return None


def reparameterize(mu, logvar, *, eps=None, seed=None, kernels: str = "auto") -> torch.Tensor:
    """z = mu + exp(0.5 * logvar) * eps. Without `eps`, eps ~ N(0, I) is drawn in-kernel from `seed`.

    `seed` is an int or an int64 tensor `(seed,)` / `(seed, step)` on mu's device; `None` draws one
    from torch's default generator. Under autocast the latent math runs in float32. `kernels` picks
    the fused op or plain PyTorch ops (`use_fused_ops`). Stacked replicas: `seed` an int64 (S, 2) tensor
    and mu (S, ...): replica s draws what a single call with `mu[s]` and `seed[s]` draws.
    """
    fast = _eager_fast_path(mu, logvar, eps, seed, kernels)
    if fast is not None:
        return fast(mu.contiguous(), logvar.contiguous(), None, seed)
    check_tensor("mu", mu)
    check_tensor("logvar", logvar)
    check_shape("logvar", logvar, mu.shape, "mu")
    if eps is not None:
        check_tensor("eps", eps)
        check_shape("eps", eps, mu.shape, "mu")
    if torch.is_autocast_enabled(mu.device.type):
        mu, logvar = mu.float(), logvar.float()
        eps = eps.float() if eps is not None else None
    check_same([("mu", mu), ("logvar", logvar)] + ([("eps", eps)] if eps is not None else []))
    replicas = seed.shape[0] if isinstance(seed, torch.Tensor) and seed.dim() == 2 else None
    if replicas is not None and (mu.dim() < 2 or mu.shape[0] != replicas):
        raise ValueError(f"mu has shape {tuple(mu.shape)} but a ({replicas}, 2) seed needs {replicas} stacked replicas first")
    if eps is not None:
        key = torch.zeros(2 if replicas is None else (replicas, 2), dtype=torch.int64, device=mu.device)
        eps = eps.contiguous()
    else:
        key = philox_key(random_seed() if seed is None else seed, mu.device, replicas)
    if not use_fused_ops(kernels, mu.device):
        return reparameterize_reference(mu, logvar, _noise(eps, key, mu))
    op = _forward
    if replicas is None and eager_native.use_eager_native(mu.device, mu.dtype):
        op = eager_native.reparameterize
    elif use_eager_triton(mu.device):
        op = EagerTritonReparameterize.apply
    return op(mu.contiguous(), logvar.contiguous(), eps, key)
