"""Fused operators: Triton kernels on CUDA (or the CPU under TRITON_INTERPRET=1), eager PyTorch elsewhere.

Each is a `torch.library` op with its own autograd formula, traceable by torch.compile.
"""

from fastgen.ops.bce_kl_loss import bce_kl_loss
from fastgen.ops.dispatch import HAS_TRITON, TRITON_INTERPRET, cpu_backend, set_cpu_backend, triton_runs_on
from fastgen.ops.linear_leaky_relu_dropout import linear_leaky_relu_dropout
from fastgen.ops.reparameterize import reparameterize
from fastgen.ops.rng import dropout_keep_mask

__all__ = [
    "HAS_TRITON",
    "TRITON_INTERPRET",
    "bce_kl_loss",
    "cpu_backend",
    "set_cpu_backend",
    "dropout_keep_mask",
    "linear_leaky_relu_dropout",
    "reparameterize",
    "triton_runs_on",
]
