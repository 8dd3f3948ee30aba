"""`linear_leaky_relu_dropout`: y = dropout(leaky_relu(x @ weight.T + bias)), one op on every device."""

from __future__ import annotations

from typing import Optional

import torch
from torch.library import wrap_triton

from fastgen.ops import eager_native, linear_tuning
from fastgen.ops.dispatch import define_op, native_runs_on, triton_runs_on, use_eager_triton, use_fused_ops
from fastgen.ops.reference import linear_leaky_relu_dropout_grad_pre_reference, linear_leaky_relu_dropout_reference
from fastgen.ops.rng import check_p, keep_mask, philox_key, random_seed
from fastgen.ops.stacked_matmul import stacked_matmul
from fastgen.ops.validation import check_same, check_slope, check_tensor


def _input_precision(dtype: torch.dtype) -> str:
    # Follow torch's own switch for fp32 matmuls instead of silently using TF32.
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


@define_op("fastgen::linear_leaky_relu_dropout")
def _forward(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], key: torch.Tensor, negative_slope: float, p: float
) -> torch.Tensor:
    """x (M, K), weight (N, K), bias (N,), key (2,); or stacked replicas: x (S, M, K), weight (S, N, K), bias (S, N),
    key (S, 2), each replica computing what a single call with its slices computes. Every path takes both forms."""
    if native_runs_on(x.device, x.dtype):
        pre = stacked_matmul(x, weight.transpose(1, 2)) if key.dim() == 2 else torch.mm(x, weight.t())
        # Bias, activation and mask in place on the whole output (each replica with its own bias row and key). Never
        # in place on a replica's slice: torch.compile traces this body, and in-place ops on slices of another op's
        # output came out wrong there for every replica but the first (tested).
        torch.ops.fastgen_native.leaky_relu_dropout_(pre, bias, key, negative_slope, p)
        return pre
    if not triton_runs_on(x.device):
        mask = keep_mask(key, (*x.shape[:-1], weight.shape[-2]), p) if p > 0.0 else None
        return linear_leaky_relu_dropout_reference(x, weight, bias, negative_slope, mask, p)
    return _triton_forward(x, weight, bias, key, negative_slope, p)


def _triton_forward(x, weight, bias, key, negative_slope: float, p: float) -> torch.Tensor:
    """One launch for a single call (2-D x, key (2,)) or for all stacked replicas (3-D x, key (S, 2)), or cuBLAS and
    one epilogue launch: whichever was measured faster for this case (linear_tuning), measured now if this is
    its first eager call on a GPU."""
    if bias is not None:
        bias = bias.contiguous()  # the kernels read a replica's bias with unit stride
    case = _linear_case(x, weight, bias, p)
    name = linear_tuning.choice(case, x.device)
    if name is None and linear_tuning.can_measure(x, weight, bias, key):
        launch = (x, weight, bias, key, negative_slope, p)
        name = linear_tuning.tune(case, x.device, lambda n: _time(lambda: _launch(n, case, *launch)))
    return _launch(name, case, x, weight, bias, key, negative_slope, p)


_TRITON_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _linear_case(x, weight, bias, p: float) -> linear_tuning.LinearCase:
    M, K = x.shape[-2:]
    replicas = x.shape[0] if x.dim() == 3 else 0
    dtype, precision = _TRITON_NAMES[x.dtype], _input_precision(x.dtype)
    N, row_major = weight.shape[-2], x.stride(-1) == 1
    return linear_tuning.LinearCase(replicas, M, N, K, dtype, bias is not None, p > 0.0, precision, row_major)


def _time(launch) -> float:
    """Median seconds of one launch on the GPU (triton's CUDA-event timer, a few warm-up runs first)."""
    import triton.testing

    return triton.testing.do_bench(launch, warmup=5, rep=20, return_mode="median") / 1e3


def _launch(name, case, x, weight, bias, key, negative_slope: float, p: float) -> torch.Tensor:
    """The forward by one candidate of `case`: a tile config's name (that config, no autotuner), CUBLAS, or None (the
    autotuned kernel). Grid axis 1 runs the replicas, a single call being one replica with replica strides 0."""
    from fastgen.ops.triton.linear_leaky_relu_dropout import leaky_relu_dropout_kernel
    from fastgen.ops.triton.linear_leaky_relu_dropout import linear_leaky_relu_dropout_fwd_kernel as tuned

    stacked = x.dim() == 3
    M, K = x.shape[-2:]
    N = weight.shape[-2]
    if name == linear_tuning.CUBLAS:
        y = _matmul_with_bias(x, weight, bias)
        n = M * N
        if n:
            grid = ((n + 1023) // 1024, x.shape[0] if stacked else 1)
            wrap_triton(leaky_relu_dropout_kernel)[grid](
                y, key.contiguous(), n, n if stacked else 0, negative_slope, p, HAS_DROPOUT=p > 0.0, BLOCK=1024
            )
        return y
    y = torch.empty((*x.shape[:-1], N), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    kernel, config = tuned, {}
    if name is not None:  # the measured config, launched as it is: no autotuner on the call's path
        chosen = linear_tuning.candidates(case)[name]
        kernel, config = tuned.fn, dict(**chosen.kwargs, num_warps=chosen.num_warps, num_stages=chosen.num_stages)

    def replica_stride(t):
        return t.stride(0) if stacked else 0

    def grid(meta):
        tiles = ((M + meta["BLOCK_M"] - 1) // meta["BLOCK_M"]) * ((N + meta["BLOCK_N"] - 1) // meta["BLOCK_N"])
        return (tiles, x.shape[0] if stacked else 1)

    wrap_triton(kernel)[grid](
        x,
        weight,
        bias if bias is not None else y,
        y,
        key.contiguous(),  # replica r's (seed, step) at 2 * r
        M,
        N,
        K,
        replica_stride(x),
        x.stride(-2),
        x.stride(-1),
        replica_stride(weight),
        weight.stride(-2),
        weight.stride(-1),
        replica_stride(bias) if bias is not None else 0,
        replica_stride(y),
        negative_slope,
        p,
        HAS_BIAS=bias is not None,
        HAS_DROPOUT=p > 0.0,
        INPUT_PRECISION=case.input_precision,
        **config,
    )
    return y


def _matmul_with_bias(x, weight, bias) -> torch.Tensor:
    """x @ weight^T + bias on cuBLAS (bias added to the accumulator), single or stacked, contiguous."""
    if x.dim() == 3:
        w_t = weight.transpose(1, 2)
        out = torch.bmm(x, w_t) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w_t)
    else:
        out = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
    return out.contiguous()


@define_op("fastgen::linear_leaky_relu_dropout_grad_pre")
def _grad_pre_activation(
    grad_y: torch.Tensor, y: torch.Tensor, key: torch.Tensor, negative_slope: float, p: float
) -> torch.Tensor:
    """dL/d(pre-activation) from dL/dy, the saved output and the regenerated mask; a single call or stacked replicas
    (key (S, 2)) on every path."""
    if native_runs_on(y.device, y.dtype):
        return torch.ops.fastgen_native.leaky_relu_dropout_grad_pre(grad_y, y, key, negative_slope, p)
    if not triton_runs_on(y.device):
        mask = keep_mask(key, y.shape, p) if p > 0.0 else None
        return linear_leaky_relu_dropout_grad_pre_reference(grad_y, y, negative_slope, mask, p)
    return _triton_grad_pre_activation(grad_y, y, key, negative_slope, p)


def _triton_grad_pre_activation(grad_y, y, key, negative_slope: float, p: float) -> torch.Tensor:
    """One launch, a single call or all stacked replicas (key (S, 2)) on grid axis 1."""
    from fastgen.ops.triton.linear_leaky_relu_dropout import linear_leaky_relu_dropout_bwd_kernel as kernel

    grad_pre = torch.empty_like(y)
    replicas = y.shape[0] if key.dim() == 2 else 1
    n = y.numel() // replicas if replicas else 0  # elements per replica: the index the mask is drawn at
    if n:
        block = 1024
        stride_s = n if key.dim() == 2 else 0
        wrap_triton(kernel)[((n + block - 1) // block, replicas)](
            grad_y, y, grad_pre, key.contiguous(), n, stride_s, negative_slope, p, HAS_DROPOUT=p > 0.0, BLOCK=block
        )
    return grad_pre


# Explicit fake kernels. A triton_op's default fake is its Python body, but under TRITON_INTERPRET=1
# `wrap_triton` hands back the interpreted kernel itself (no traceable launch), so tracing the Triton
# branch with fake tensors would run the interpreter on tensors without data. These mirror the outputs
# both branches allocate.
@_forward.register_fake
def _(x, weight, bias, key, negative_slope, p):
    return x.new_empty((*x.shape[:-1], weight.shape[-2]))


@_grad_pre_activation.register_fake
def _(grad_y, y, key, negative_slope, p):
    return torch.empty_like(y)


def _setup_context(ctx, inputs, output):
    x, weight, bias, key, negative_slope, p = inputs
    # Only x, weight, the output and the 2-element key: no pre-activation, no mask.
    ctx.save_for_backward(x, weight, output, key)
    ctx.negative_slope, ctx.p = negative_slope, p


def _backward(ctx, grad_y):
    return _input_grads(ctx, grad_y, _grad_pre_activation)


def _input_grads(ctx, grad_y, grad_pre_op):
    x, weight, y, key = ctx.saved_tensors
    grad_pre = grad_pre_op(grad_y.contiguous(), y, key, ctx.negative_slope, ctx.p)
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    matmul = stacked_matmul if weight.dim() == 3 else torch.matmul  # stacked replicas: (S, B, N) @ (S, N, K) ...
    grad_x = matmul(grad_pre, weight) if need_x else None
    grad_w = matmul(grad_pre.transpose(-1, -2), x) if need_w else None
    grad_b = grad_pre.sum(-2) if need_b else None
    return grad_x, grad_w, grad_b, None, None, None


_forward.register_autograd(_backward, setup_context=_setup_context)


class EagerTritonLinear(torch.autograd.Function):
    """The eager fast path where Triton runs (`dispatch.use_eager_triton`): the registered op's kernels, launched
    directly, forward and backward (bit for bit the registered op's outputs and gradients: tested)."""

    @staticmethod
    def forward(x, weight, bias, key, negative_slope: float, p: float):
        return _triton_forward(x, weight, bias, key, negative_slope, p)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad_y):
        return _input_grads(ctx, grad_y, _triton_grad_pre_activation)


def tune(weight: torch.Tensor, bias: Optional[torch.Tensor], rows: int, p: float) -> dict[str, str]:
    """Measure now, on real tensors, which implementation the forward takes for `rows` rows of input with these
    weights (a trainer calls this before it compiles its step, so that tracing finds the choice made). Returns
    {case: choice}, empty where nothing is measured (no GPU, or tracing)."""
    if not (triton_runs_on(weight.device) and linear_tuning.can_measure(weight)):
        return {}
    x = torch.randn(*weight.shape[:-2], rows, weight.shape[-1], device=weight.device, dtype=weight.dtype)
    key = torch.zeros(*weight.shape[:-2], 2, dtype=torch.int64, device=weight.device)  # a key of its own
    weight = weight.detach()
    bias = bias.detach().contiguous() if bias is not None else None
    _triton_forward(x, weight, bias, key, 0.2, p)
    case = _linear_case(x, weight, bias, p)
    return {case.key(): linear_tuning.choice(case, weight.device)}


def linear_leaky_relu_dropout(
    x, weight, bias=None, *, negative_slope: float = 0.2, p: float = 0.0, seed=None, training: bool = True, kernels: str = "auto"
) -> torch.Tensor:
    """y = dropout(leaky_relu(x @ weight.T + bias), p), fused into one kernel on CUDA.

    `weight` is (out, in) like `nn.Linear`. The dropout mask is a function of `seed` (an int, or an
    int64 tensor `(seed,)` / `(seed, step)` on x's device) and the element index; see
    `dropout_keep_mask`. With `seed=None` a seed is drawn from torch's default generator.
    `kernels` ("auto", "triton", "eager") picks the fused op or plain PyTorch ops (`use_fused_ops`).

    Stacked replicas: `x` (S, B, in), `weight` (S, out, in), `bias` (S, out) and `seed` an int64 (S, 2)
    tensor give (S, B, out), replica s equal to the call with `x[s]`, `weight[s]`, `bias[s]`, `seed[s]`.
    """
    check_tensor("x", x)
    check_tensor("weight", weight)
    replicas = weight.shape[0] if weight.dim() == 3 else None
    if replicas is None and weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), or 3-D (replicas, out, in), got shape {tuple(weight.shape)}")
    tensors = [("x", x), ("weight", weight)]
    if bias is not None:
        check_tensor("bias", bias, ndim=weight.dim() - 1)
        tensors.append(("bias", bias))
    if x.dim() < 1 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has shape {tuple(x.shape)} but weight {tuple(weight.shape)} needs last dimension {weight.shape[-1]}")
    if replicas is not None and (x.dim() != 3 or x.shape[0] != replicas):
        need = f"({replicas}, batch, {weight.shape[-1]})"
        raise ValueError(f"x has shape {tuple(x.shape)} but {replicas} stacked replicas need {need}")
    if bias is not None and bias.shape != weight.shape[:-1]:
        raise ValueError(f"bias has shape {tuple(bias.shape)} but weight {tuple(weight.shape)} needs {tuple(weight.shape[:-1])}")
    negative_slope = check_slope(negative_slope)
    p = check_p(p) if training else 0.0
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
        tensors = [("x", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    check_same(tensors)
    key = philox_key(random_seed() if seed is None and replicas is None else seed, x.device, replicas) if p > 0.0 else None
    if not use_fused_ops(kernels, x.device):
        mask = keep_mask(key, (*x.shape[:-1], weight.shape[-2]), p) if key is not None else None
        return linear_leaky_relu_dropout_reference(x, weight, bias, negative_slope, mask, p)
    if key is None:  # the op's schema takes a key either way
        key = torch.zeros(2 if replicas is None else (replicas, 2), dtype=torch.int64, device=x.device)
    if replicas is not None:
        return _forward(x, weight, bias, key, negative_slope, p)
    op = _forward
    if eager_native.use_eager_native(x.device, x.dtype):
        op = eager_native.linear_leaky_relu_dropout
    elif use_eager_triton(x.device):
        op = EagerTritonLinear.apply
    if x.dim() == 2:
        return op(x, weight, bias, key, negative_slope, p)
    y = op(x.reshape(-1, x.shape[-1]), weight, bias, key, negative_slope, p)
    return y.reshape(*x.shape[:-1], weight.shape[0])
