"""Triton kernels for y = dropout(leaky_relu(x @ w.T + b)).

Forward: a tiled matmul whose epilogue applies bias, LeakyReLU and Philox dropout to the fp32
accumulator; the mask is never written. Backward: one elementwise pass that turns dL/dy into
dL/d(pre-activation), regenerating the mask and reading the LeakyReLU branch off the saved output;
the two matmuls that follow go to cuBLAS through torch.
"""
import triton
import triton.language as tl

from fastgen.ops.dispatch import TRITON_INTERPRET
from fastgen.ops.triton.philox import philox_keep

if TRITON_INTERPRET:  # the numpy interpreter: one large tile, no tuning
    _CONFIGS = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8})]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (128, 128, 64, 8, 3),
            (128, 64, 64, 4, 4),
            (64, 128, 64, 4, 4),
            (64, 64, 64, 4, 4),
            (32, 64, 64, 4, 4),
            (16, 64, 128, 4, 3),
        ]
    ]


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K", "HAS_DROPOUT"])
@triton.jit
def linear_leaky_relu_dropout_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, key_ptr,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk,
    negative_slope, p,
    HAS_BIAS: tl.constexpr, HAS_DROPOUT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped tile order so neighbouring programs reuse the same rows of x from L2.
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * grid_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * grid_n)) % group_size
    pid_n = (pid % (GROUP_M * grid_n)) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    w_cols = w_ptr + offs_n[None, :].to(tl.int64) * stride_wn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(x_rows + k[None, :] * stride_xk, mask=(offs_m[:, None] < M) & (k[None, :] < K), other=0.0)
        b = tl.load(w_cols + k[:, None] * stride_wk, mask=(k[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y = tl.where(acc > 0, acc, acc * tl.cast(negative_slope, tl.float32))
    if HAS_DROPOUT:
        p32 = tl.cast(p, tl.float32)
        idx = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
        y = tl.where(philox_keep(key_ptr, idx, p32), y / (1.0 - p32), 0.0)

    out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    out = y_ptr + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
    tl.store(out, y.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def linear_leaky_relu_dropout_bwd_kernel(
    grad_y_ptr, y_ptr, grad_pre_ptr, key_ptr, n_elements, negative_slope, p,
    HAS_DROPOUT: tl.constexpr, BLOCK: tl.constexpr,
):
    # grad_y, y and grad_pre are contiguous (M, N): the flat offset is the forward's element index.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offs < n_elements
    g = tl.load(grad_y_ptr + offs, mask=in_bounds, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=in_bounds, other=0.0)
    # A non-negative slope keeps the sign: y > 0 exactly where the pre-activation was > 0.
    d = tl.where(y > 0, 1.0, tl.cast(negative_slope, tl.float32))
    if HAS_DROPOUT:
        p32 = tl.cast(p, tl.float32)
        d = tl.where(philox_keep(key_ptr, offs, p32), d / (1.0 - p32), 0.0)
    tl.store(grad_pre_ptr + offs, (g * d).to(grad_pre_ptr.dtype.element_ty), mask=in_bounds)
