"""The eager fast path of the fused ops on the native CPU kernels.

Called eagerly, a `fastgen::` op pays Python's custom-op dispatch and Python autograd glue on every call, and
again for its backward op: more host time than the plain modules it replaces, at small sizes. Outside
tracing, the functional ops on the native kernels call these instead: the same kernels in the same order,
with forward and backward in C++ (kernels/autograd.cpp), so an eager call is one dispatcher call and its
backward never enters Python. Outputs and gradients are bit for bit the registered ops' (tested), and
torch.compile still traces the registered ops.
"""

from __future__ import annotations

import torch

from fastgen.ops.dispatch import native_runs_on

ENABLED = True  # off: eager calls dispatch the registered ops too (the tests compare the two)


def use_eager_native(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a call on these tensors takes the fast path: native kernels, and nothing tracing it."""
    return ENABLED and native_runs_on(device, dtype) and not torch.compiler.is_compiling()


def linear_leaky_relu_dropout(x, weight, bias, key, negative_slope: float, p: float) -> torch.Tensor:
    return torch.ops.fastgen_native.fused_linear_leaky_relu_dropout(x, weight, bias, key, negative_slope, p)


def reparameterize(mu, logvar, eps, key) -> torch.Tensor:
    return torch.ops.fastgen_native.fused_reparameterize(mu, logvar, eps, key)


def bce_kl_loss(logits, target, mu, logvar) -> torch.Tensor:
    return torch.ops.fastgen_native.fused_bce_kl_loss(logits, target, mu, logvar)
