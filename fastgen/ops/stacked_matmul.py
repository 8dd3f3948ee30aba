"""`stacked_matmul`: a (S, M, K) @ b (S, K, N), the matmul of a group of seeds' stacked replicas.

On the CPU, torch's batched matmul shares the threads out over the S replicas: with S not a multiple of the
thread count the last round leaves threads idle (measured on 2 cores: per replica, S = 3 took 12% longer than
S separate matmuls, S = 2 and 4 13% less). Here the largest multiple of the thread count goes to one batched
matmul and the rest to matmuls that use every thread, each writing its replicas' part of one output: an op of
its own (`fastgen::stacked_matmul`), so that torch.compile calls it as one kernel. Written in plain aten ops
instead, the parts were joined by a copy of the whole output, and its backward filled a zeroed gradient per
part: at 3 replicas of the GAN, copies of every weight gradient that cost 3-4 ms of a 40 ms group step
(profiled on a 2-core AMD EPYC). On CUDA, and where the replicas divide by the threads, it is `torch.bmm`,
which Inductor may replace with its own kernels.
"""

from __future__ import annotations

import torch


@torch._dynamo.assume_constant_result  # read when the step is traced (the thread count is set before)
def _threads() -> int:
    return torch.get_num_threads()


def stacked_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.device.type != "cpu" or a.shape[0] % _threads() == 0:
        return torch.bmm(a, b)
    if torch.is_autocast_enabled("cpu"):  # as torch.bmm would under autocast: the op itself is not autocast
        dtype = torch.get_autocast_dtype("cpu")
        a, b = a.to(dtype), b.to(dtype)
    return _split_over_threads(a, b)


@torch.library.custom_op("fastgen::stacked_matmul", mutates_args=(), device_types="cpu")
def _split_over_threads(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    replicas = a.shape[0]
    whole = replicas - replicas % torch.get_num_threads()
    out = a.new_empty(replicas, a.shape[1], b.shape[2])
    if whole:
        torch.bmm(a[:whole], b[:whole], out=out[:whole])
    for s in range(whole, replicas):
        torch.mm(a[s], b[s], out=out[s])
    return out


@_split_over_threads.register_fake
def _(a, b):
    torch._check(a.dtype == b.dtype, lambda: f"stacked_matmul: {a.dtype} @ {b.dtype}")
    torch._check(a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1],
                 lambda: f"stacked_matmul: {tuple(a.shape)} @ {tuple(b.shape)}")  # fmt: skip
    return a.new_empty(a.shape[0], a.shape[1], b.shape[2])


def _setup_context(ctx, inputs, output):
    a, b = inputs
    ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b if ctx.needs_input_grad[0] else None)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    grad_a = _split_over_threads(grad, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
    grad_b = _split_over_threads(a.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
    return grad_a, grad_b


_split_over_threads.register_autograd(_backward, setup_context=_setup_context)
