"""Triton kernels for y = dropout(leaky_relu(x @ w.T + b)).

Forward: a tiled matmul whose epilogue applies bias, LeakyReLU and Philox dropout to the fp32
accumulator; the mask is never written. Backward: one elementwise pass that turns dL/dy into
dL/d(pre-activation), regenerating the mask and reading the LeakyReLU branch off the saved output;
the two matmuls that follow go to cuBLAS through torch. Both run stacked replicas in one launch, replica r
on grid axis 1 with its own (seed, step) key (see philox.py); a single call is one replica.
"""

import triton
import triton.language as tl

from fastgen.ops.dispatch import TRITON_INTERPRET
from fastgen.ops.triton.philox import philox_keep, replica_block


def _tile(block_m, block_n, block_k, warps, stages):
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 8}, num_warps=warps, num_stages=stages
    )


# The autotuner's configs on a GPU, chosen so that no build spills a register on sm_80 or sm_90 (checked ahead
# of time, without a GPU, by tests/test_gpu_builds.py), whatever the layout and alignment of x and w. Left to
# itself ptxas sometimes stops at an occupancy step (64, 96, 128 or 168 registers) and spills a few bytes to
# stay there; these tiles are the ones it builds without spilling. (A `maxnreg` would stop that, but
# torch.compile drops it when it compiles a user kernel's configs.)
# Tensor cores (fp16, bf16; fp32 as TF32): BLOCK_K 32, because operands that are not 16-byte aligned (K = 100,
# a strided x) are staged through registers, and with BLOCK_K 64 that alone spills.
# The 16-row tiles are for the paper's small batches: at M = 32 and N = 256 a 64x64 tile keeps 4 of an H100's
# 132 SMs busy, a 16x32 one 16 (cuBLAS, the other candidate, splits K where that pays).
TENSOR_CORE_CONFIGS = [
    _tile(128, 128, 32, 8, 3),
    _tile(64, 128, 32, 8, 3),
    _tile(64, 64, 32, 4, 3),
    _tile(16, 64, 32, 4, 3),
    _tile(16, 32, 32, 2, 3),
]
# Dropout draws a Philox block (four 32-bit words live while it is computed) for every element of the tile:
# at most 32 elements a thread (64 accumulators a thread and their 256 words do not fit in 255 registers).
DROPOUT_CONFIGS = [c for c in TENSOR_CORE_CONFIGS if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 32 * 32 * c.num_warps]
# fp32 with INPUT_PRECISION="ieee" multiplies on the FMA units, each thread holding its rows and columns of a
# BLOCK_K slice in registers: short slices, but not under 16, the smallest K that Triton's dot takes on NVIDIA
# GPUs (Triton 3.6 refuses 8 when it compiles; 3.8 accepts it). With 16-deep slices 128x64 spills 4-8 bytes on
# sm_90 at 2 stages with x column-major and on sm_80 at 1 stage, and 64x128 at 3 stages: 64x128 keeps 2.
FMA_CONFIGS = [
    _tile(64, 128, 16, 8, 2),
    _tile(32, 64, 32, 4, 3),
    _tile(16, 32, 32, 2, 3),
]
GPU_CONFIGS = TENSOR_CORE_CONFIGS + [c for c in FMA_CONFIGS if c not in TENSOR_CORE_CONFIGS]
# The numpy interpreter: one large tile, no tuning.
INTERPRETER_CONFIGS = [_tile(64, 64, 64, 4, 3)]


def gpu_configs(dtype: str, HAS_DROPOUT: bool, INPUT_PRECISION: str, **_) -> list:
    """The configs the autotuner tries for one variant; `dtype` is the Triton name of x's type (fp32, fp16, bf16)."""
    if dtype == "fp32" and INPUT_PRECISION == "ieee":
        return FMA_CONFIGS
    return DROPOUT_CONFIGS if HAS_DROPOUT else TENSOR_CORE_CONFIGS


_DTYPE_NAMES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def _prune_configs(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}
    allowed = gpu_configs(_DTYPE_NAMES.get(str(args["x_ptr"].dtype), "fp16"), args["HAS_DROPOUT"], args["INPUT_PRECISION"])
    return [c for c in configs if c in allowed]


if TRITON_INTERPRET:
    _autotune = triton.autotune(configs=INTERPRETER_CONFIGS, key=["M", "N", "K", "HAS_DROPOUT", "INPUT_PRECISION"])
else:
    _autotune = triton.autotune(
        configs=GPU_CONFIGS,
        key=["M", "N", "K", "HAS_DROPOUT", "INPUT_PRECISION"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )


@triton.jit
def _tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row tile, column tile) of program `pid`, in grouped order so neighbouring programs reuse the same rows of
    x from L2."""
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    first_m = pid // (GROUP_M * grid_n) * GROUP_M
    group_size = tl.minimum(grid_m - first_m, GROUP_M)
    return first_m + (pid % (GROUP_M * grid_n)) % group_size, (pid % (GROUP_M * grid_n)) // group_size


@_autotune
@triton.jit
def linear_leaky_relu_dropout_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    key_ptr,
    M,
    N,
    K,
    stride_xs,
    stride_xm,
    stride_xk,
    stride_ws,
    stride_wn,
    stride_wk,
    stride_bs,
    stride_ys,
    negative_slope,
    p,
    HAS_BIAS: tl.constexpr,
    HAS_DROPOUT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Replica r's slices (strides 0 for a single call); M, N, K, the tiles and the element index are per replica.
    r = tl.program_id(1).to(tl.int64)
    x_ptr += r * stride_xs
    w_ptr += r * stride_ws
    b_ptr += r * stride_bs
    y_ptr += r * stride_ys
    key_ptr += 2 * r
    pid_m, pid_n = _tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

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
    grad_y_ptr,
    y_ptr,
    grad_pre_ptr,
    key_ptr,
    n_elements,
    stride_s,
    negative_slope,
    p,
    HAS_DROPOUT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # grad_y, y and grad_pre are contiguous (replicas, M, N), n_elements = M * N, stride_s the elements between
    # replicas (0 for a single call): the flat offset within replica r (grid axis 1) is the forward's element index.
    base, key_ptr, offs = replica_block(key_ptr, stride_s, BLOCK)
    in_bounds = offs < n_elements
    g = tl.load(grad_y_ptr + base + offs, mask=in_bounds, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + base + offs, mask=in_bounds, other=0.0)
    # A non-negative slope keeps the sign: y > 0 exactly where the pre-activation was > 0.
    d = tl.where(y > 0, 1.0, tl.cast(negative_slope, tl.float32))
    if HAS_DROPOUT:
        p32 = tl.cast(p, tl.float32)
        d = tl.where(philox_keep(key_ptr, offs, p32), d / (1.0 - p32), 0.0)
    tl.store(grad_pre_ptr + base + offs, (g * d).to(grad_pre_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def leaky_relu_dropout_kernel(
    pre_ptr, key_ptr, n_elements, stride_s, negative_slope, p, HAS_DROPOUT: tl.constexpr, BLOCK: tl.constexpr
):
    """The fused forward's epilogue as its own pass, in place on a matmul's output (bias already added): what runs
    after cuBLAS where the measured choice says cuBLAS is faster (fastgen/ops/linear_tuning.py). pre is contiguous
    (replicas, M, N); the flat offset within replica r is the fused kernel's element index, so the mask is the
    same."""
    base, key_ptr, offs = replica_block(key_ptr, stride_s, BLOCK)
    in_bounds = offs < n_elements
    acc = tl.load(pre_ptr + base + offs, mask=in_bounds, other=0.0).to(tl.float32)
    y = tl.where(acc > 0, acc, acc * tl.cast(negative_slope, tl.float32))
    if HAS_DROPOUT:
        p32 = tl.cast(p, tl.float32)
        y = tl.where(philox_keep(key_ptr, offs, p32), y / (1.0 - p32), 0.0)
    tl.store(pre_ptr + base + offs, y.to(pre_ptr.dtype.element_ty), mask=in_bounds)


# For the ahead-of-time build (bench/aot_builds.py, tests/test_gpu_builds.py), per kernel: each
# parameter's Triton type ("{dtype}" is the op's float type: fp32, fp16 or bf16), every value each
# constexpr can take from the launcher (per dtype where it depends on it), the unit strides Triton
# turns into the constant 1 for the layouts the launcher accepts, and the autotuner's configs.
AOT_BUILDS = {
    "linear_leaky_relu_dropout_fwd_kernel": dict(
        args=dict(
            x_ptr="*{dtype}",
            w_ptr="*{dtype}",
            b_ptr="*{dtype}",
            y_ptr="*{dtype}",
            key_ptr="*i64",
            M="i32",
            N="i32",
            K="i32",
            stride_xs="i32",
            stride_xm="i32",
            stride_xk="i32",
            stride_ws="i32",
            stride_wn="i32",
            stride_wk="i32",
            stride_bs="i32",
            stride_ys="i32",
            negative_slope="fp32",
            p="fp32",
            HAS_BIAS="constexpr",
            HAS_DROPOUT="constexpr",
            INPUT_PRECISION="constexpr",
            BLOCK_M="constexpr",
            BLOCK_N="constexpr",
            BLOCK_K="constexpr",
            GROUP_M="constexpr",
        ),
        constexprs=dict(
            HAS_BIAS=(False, True),
            HAS_DROPOUT=(False, True),
            INPUT_PRECISION={"fp32": ("ieee", "tf32"), "fp16": ("ieee",), "bf16": ("ieee",)},
        ),
        layouts={"x row-major": dict(stride_xk=1, stride_wk=1), "x column-major": dict(stride_xm=1, stride_wk=1)},
        configs=gpu_configs,
    ),
    "linear_leaky_relu_dropout_bwd_kernel": dict(
        args=dict(
            grad_y_ptr="*{dtype}",
            y_ptr="*{dtype}",
            grad_pre_ptr="*{dtype}",
            key_ptr="*i64",
            n_elements="i32",
            stride_s="i32",
            negative_slope="fp32",
            p="fp32",
            HAS_DROPOUT="constexpr",
            BLOCK="constexpr",
        ),
        constexprs=dict(HAS_DROPOUT=(False, True), BLOCK=(1024,)),
    ),
    "leaky_relu_dropout_kernel": dict(
        args=dict(
            pre_ptr="*{dtype}",
            key_ptr="*i64",
            n_elements="i32",
            stride_s="i32",
            negative_slope="fp32",
            p="fp32",
            HAS_DROPOUT="constexpr",
            BLOCK="constexpr",
        ),
        constexprs=dict(HAS_DROPOUT=(False, True), BLOCK=(1024,)),
    ),
}
