"""Philox draws keyed by a device-side (seed, step) tensor; shared by every Triton kernel in fastgen.

Counter = (element index lo, element index hi, step lo, step hi), key = seed. A draw depends only on
(seed, step, element), so the backward regenerates the forward's mask instead of storing it.

Stacked replicas: the kernels take a contiguous (S, 2) key, replica r's (seed, step) at key_ptr + 2 * r, and
run replica r on grid axis 1; the element index stays the index within the replica, so replica r draws what a
single call with its key draws (a single call is replica 0 of a one-replica grid).
"""

import triton
import triton.language as tl


@triton.jit
def philox_pair(key_ptr, idx):
    """Two independent uint32 blocks for int64 element indices `idx`."""
    seed = tl.load(key_ptr)
    step = tl.load(key_ptr + 1)
    zero = tl.zeros(idx.shape, tl.uint32)
    step_lo = zero + (step & 0xFFFFFFFF).to(tl.uint32)
    step_hi = zero + ((step >> 32) & 0xFFFFFFFF).to(tl.uint32)
    r0, r1, _, _ = tl.random.philox(seed, idx.to(tl.uint32), (idx >> 32).to(tl.uint32), step_lo, step_hi)
    return r0, r1


@triton.jit
def philox_keep(key_ptr, idx, p):
    """Dropout keep-mask: True with probability 1 - p."""
    r0, _ = philox_pair(key_ptr, idx)
    return tl.random.uint_to_uniform_float(r0) >= p


@triton.jit
def philox_normal(key_ptr, idx):
    """Standard-normal draws (Box-Muller on the pair)."""
    r0, r1 = philox_pair(key_ptr, idx)
    n0, _ = tl.random.pair_uniform_to_normal(tl.random.uint_to_uniform_float(r0), tl.random.uint_to_uniform_float(r1))
    return n0


@triton.jit
def replica_block(key_ptr, stride_s, BLOCK: tl.constexpr):
    """An elementwise program's replica (grid axis 1): the offset of its first element (r * stride_s), its
    (seed, step) key, and the block's element indices within the replica (grid axis 0), which the draws use."""
    r = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return r * stride_s, key_ptr + 2 * r, offs


# n_elements is per replica and stride_s the elements between replicas in out. stride_s defaults to 0 so that
# a single call keeps its old form, and 0 (Triton takes it as divisible by 16) keeps its loads aligned.
@triton.jit
def keep_mask_kernel(key_ptr, out_ptr, n_elements, p, BLOCK: tl.constexpr, stride_s=0):
    base, key_ptr, offs = replica_block(key_ptr, stride_s, BLOCK)
    keep = philox_keep(key_ptr, offs, tl.cast(p, tl.float32))
    tl.store(out_ptr + base + offs, keep.to(tl.uint8), mask=offs < n_elements)


@triton.jit
def normal_kernel(key_ptr, out_ptr, n_elements, BLOCK: tl.constexpr, stride_s=0):
    base, key_ptr, offs = replica_block(key_ptr, stride_s, BLOCK)
    tl.store(out_ptr + base + offs, philox_normal(key_ptr, offs), mask=offs < n_elements)


# For the ahead-of-time build (see linear_leaky_relu_dropout.AOT_BUILDS): types and launcher values.
AOT_BUILDS = {
    "keep_mask_kernel": dict(
        args=dict(key_ptr="*i64", out_ptr="*u8", n_elements="i32", p="fp32", BLOCK="constexpr", stride_s="i32"),
        constexprs=dict(BLOCK=(1024,)),
    ),
    "normal_kernel": dict(
        args=dict(key_ptr="*i64", out_ptr="*fp32", n_elements="i32", BLOCK="constexpr", stride_s="i32"),
        constexprs=dict(BLOCK=(1024,)),
    ),
}
