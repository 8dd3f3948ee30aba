"""The native CPU kernels (`kernels/`, `fastgen.ops.native`): every `fastgen_native::` op under opcheck and
against the reference math; their draws bit for bit against the published Philox stream
(tests/philox_reference.py) and against the Triton kernels under the interpreter; every kernel table this
CPU runs (AVX-512, AVX2, scalar) and 1 or 2 threads giving the same bits; and the library's life cycle:
built once into the cache, loaded once, refused when built for another torch, off with FASTGEN_NATIVE=0.

Skipped when the library cannot be built here (the reason is printed), unless FASTGEN_REQUIRE_NATIVE=1.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgen.ops.native as native
from fastgen.ops import cpu_backend
from fastgen.ops.dispatch import TRITON_INTERPRET
from fastgen.ops.reference import (
    bce_kl_loss_backward_reference,
    bce_kl_loss_reference,
    linear_leaky_relu_dropout_grad_pre_reference,
    linear_leaky_relu_dropout_reference,
    reparameterize_grad_logvar_reference,
    reparameterize_reference,
)
from tests.helpers import REPO, assert_close
from tests.philox_reference import keep_mask as reference_keep_mask

ops = torch.ops.fastgen_native
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TOLERANCES = {torch.float16: 1e-2, torch.bfloat16: 2e-2}  # float32: compared far tighter, see close()
SEEDS_AND_STEPS = [(0, 0), (7, 1), (2**40 + 3, 5), (123, 2**33 + 1), (2**63 - 1, 2**63 - 1)]
needs_interpreter = pytest.mark.skipif(not TRITON_INTERPRET, reason="needs the Triton interpreter (TRITON_INTERPRET=1)")


@pytest.fixture(autouse=True)
def _denormals_kept():
    """fastgen.train flushes denormals to zero process-wide (for training speed), and earlier tests in this
    process may have run it; these tests compare IEEE arithmetic, subnormals included."""
    flushed = (torch.tensor([1e-40]) * 1.0).item() == 0.0
    torch.set_flush_denormal(False)
    yield
    if flushed:
        torch.set_flush_denormal(True)


@pytest.fixture(scope="session", autouse=True)
def native_library():
    """Builds (first time on this machine: about a minute) and loads the library once per session."""
    if not native.load():
        if os.environ.get("FASTGEN_REQUIRE_NATIVE") == "1":
            pytest.fail(f"native kernels unavailable: {native.reason}")
        pytest.skip(f"native kernels unavailable: {native.reason}")
    return native.library_path()


@pytest.fixture(params=native.ISAS)
def isa(request):
    """Runs a test on each kernel table this CPU supports (the others are skipped)."""
    if request.param not in native.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    with kernel_table(request.param):
        yield request.param


@contextmanager
def kernel_table(name: str):
    previous = native.isa()
    native.set_isa(name)
    try:
        yield
    finally:
        native.set_isa(previous)


@contextmanager
def threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def key(seed: int, step: int = 0) -> torch.Tensor:
    return torch.tensor([seed, step], dtype=torch.int64)


def close(actual, expected, dtype, what, rtol=2e-6):
    """float32: |a - e| <= rtol (|e| + max|e|), a few ulp (the kernels' exp and log are not torch's);
    float16/bfloat16: tests.helpers.assert_close."""
    if dtype != torch.float32:
        return assert_close(actual, expected, dtype, what)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    a, e = actual.double(), expected.double()
    finite = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), finite), f"{what}: NaN/inf differ"
    if a.numel():
        scale = e[finite].abs().max().item() if finite.any() else 0.0
        bad = finite & ((a - e).abs() > rtol * (e.abs() + scale))
        assert not bad.any(), f"{what}: {int(bad.sum())} of {a.numel()} off, first at {bad.nonzero()[0].tolist()}"


# ---- an independent numpy Philox for the normal's two words and for counters past 2^32 ------------------

M32 = np.uint64(0xFFFFFFFF)


def philox_words(seed: int, step: int, index: np.ndarray) -> list[np.ndarray]:
    """The four output words of Philox-4x32-10 at counter (index, step), key seed."""
    index = index.astype(np.uint64)
    c = [
        index & M32,
        index >> np.uint64(32),
        np.full(index.shape, step & 0xFFFFFFFF, np.uint64),
        np.full(index.shape, step >> 32, np.uint64),
    ]
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    for _ in range(10):
        pb, pa = np.uint64(0xCD9E8D57) * c[2], np.uint64(0xD2511F53) * c[0]
        c = [(pb >> np.uint64(32)) ^ c[1] ^ k0, pb & M32, (pa >> np.uint64(32)) ^ c[3] ^ k1, pa & M32]
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & M32, (k1 + np.uint64(0xBB67AE85)) & M32
    return [w.astype(np.uint32) for w in c]


def uniform(word: np.ndarray) -> np.ndarray:
    x = word.view(np.int32)
    return np.where(x < 0, ~x, x).astype(np.float32) * np.float32(4.6566127342e-10)


def reference_normal(seed: int, step: int, index: np.ndarray) -> np.ndarray:
    """Box-Muller on the float32 uniforms, in float64: the value the kernels approximate."""
    w = philox_words(seed, step, index)
    u1, u2 = np.maximum(np.float32(1e-7), uniform(w[0])), uniform(w[1])
    theta = np.float32(6.283185307179586) * u2  # float32, as the kernels compute it
    return np.sqrt(-2.0 * np.log(u1.astype(np.float64))) * np.cos(theta.astype(np.float64))


def test_numpy_philox_here_is_the_published_one():
    for seed, step in SEEDS_AND_STEPS:
        assert np.array_equal(
            uniform(philox_words(seed, step, np.arange(999))[0]) >= np.float32(0.3), reference_keep_mask(seed, step, 999, 0.3)
        )


# ---- the draws, bit for bit ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed, step", SEEDS_AND_STEPS)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9, 0.123456789])
def test_masks_are_the_published_philox_stream(isa, seed, step, p):
    n = 4099  # odd: every kernel table's tail
    mask = ops.keep_mask(key(seed, step), [n], p)
    assert mask.dtype == torch.uint8
    assert np.array_equal(mask.numpy().astype(bool), reference_keep_mask(seed, step, n, p))


@pytest.mark.parametrize("seed, step", SEEDS_AND_STEPS[1:])
def test_the_epilogue_and_its_backward_apply_exactly_the_published_mask(isa, seed, step):
    M, N, p = 37, 111, 0.3
    expected = torch.from_numpy(reference_keep_mask(seed, step, M * N, p).reshape(M, N))
    ones = torch.ones(M, N)
    y = ops.leaky_relu_dropout(ones, None, key(seed, step), 0.2, p)
    assert torch.equal(y != 0, expected) and torch.equal(y[expected], torch.full_like(y[expected], 1 / np.float32(0.7)))
    grad = ops.leaky_relu_dropout_grad_pre(ones, ones, key(seed, step), 0.2, p)
    assert torch.equal(grad, y)


@pytest.mark.parametrize("seed, step", SEEDS_AND_STEPS)
def test_normal_noise_is_box_muller_on_the_stream(isa, seed, step):
    n = 20001
    z = ops.normal(key(seed, step), [n])
    assert z.dtype == torch.float32
    assert np.abs(z.numpy() - reference_normal(seed, step, np.arange(n))).max() < 1e-5


@pytest.mark.parametrize("seed, step", SEEDS_AND_STEPS[2:])
def test_draws_past_element_2_to_the_32(isa, seed, step):
    """Element indices whose low counter word wraps within one vector (no tensor here is that large)."""
    first, count = 2**32 - 21, 45
    handle = ctypes.CDLL(str(native.library_path()))
    mask = np.zeros(count, np.uint8)
    handle.fastgen_native_draw_range(
        0,
        mask.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_int64(first),
        ctypes.c_int64(count),
        ctypes.c_uint64(seed),
        ctypes.c_uint64(step),
        ctypes.c_float(0.5),
    )
    index = np.arange(first, first + count, dtype=np.uint64)
    assert np.array_equal(mask.astype(bool), uniform(philox_words(seed, step, index)[0]) >= np.float32(0.5))
    normals = np.zeros(count, np.float32)
    handle.fastgen_native_draw_range(
        1,
        normals.ctypes.data_as(ctypes.c_void_p),
        ctypes.c_int64(first),
        ctypes.c_int64(count),
        ctypes.c_uint64(seed),
        ctypes.c_uint64(step),
        ctypes.c_float(0),
    )
    assert np.abs(normals - reference_normal(seed, step, index)).max() < 1e-5


def test_every_kernel_table_and_thread_count_gives_the_same_bits():
    """Elementwise results are identical across AVX-512 / AVX2 / scalar and 1 / 2 threads; the per-row loss
    sums in another order per table (same within float32 rounding)."""
    g = torch.Generator().manual_seed(0)
    M, N, B, D, L = 67, 1031, 33, 787, 17
    pre, grad, bias = torch.randn(M, N, generator=g), torch.randn(M, N, generator=g), torch.randn(N, generator=g)
    lat = [torch.randn(B, L, generator=g) * 3 for _ in range(3)]
    logits, target = torch.randn(B, D, generator=g) * 5, torch.rand(B, D, generator=g)
    k = key(2**40 + 1, 3)

    def run():
        y = ops.leaky_relu_dropout(pre, bias, k, 0.2, 0.3)
        return [
            y,
            ops.leaky_relu_dropout_grad_pre(grad, y, k, 0.2, 0.3),
            ops.keep_mask(k, [M, N], 0.4),
            ops.normal(k, [M, N]),
            ops.reparameterize(lat[0], lat[1], None, k),
            ops.reparameterize_grad_logvar(lat[2], lat[1], None, k),
            *ops.bce_kl_loss_backward(lat[0][:, 0], logits, target, lat[1], lat[2]),
        ]

    results, losses = {}, {}
    for name in native.supported_isas():
        for n in (1, 2):
            with kernel_table(name), threads(n):
                results[name, n] = run()
                losses[name, n] = ops.bce_kl_loss(logits, target, lat[1], lat[2])
    first = next(iter(results))
    for where, outs in results.items():
        assert all(torch.equal(a, b) for a, b in zip(outs, results[first])), (where, first)
        torch.testing.assert_close(losses[where], losses[first], rtol=1e-6, atol=0)
        assert torch.equal(losses[where], losses[where[0], 1])


# ---- the kernels against the reference math (hypothesis) -------------------------------------------------

dims = st.integers(0, 70)
probabilities = st.one_of(st.sampled_from([0.0, 0.9]), st.floats(0.0, 0.95))


def _draw(data, shape, dtype, scale=1.0, transposed=False):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="tensor seed"))
    if transposed:  # a non-contiguous view
        return (torch.randn(tuple(reversed(shape)), generator=gen) * scale).to(dtype).t()
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


@settings(max_examples=40)
@given(
    data=st.data(),
    M=dims,
    N=st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    p=probabilities,
    slope=st.sampled_from([0.0, 0.2, 1.0]),
    bias=st.booleans(),
    transposed=st.booleans(),
    n_threads=st.sampled_from([1, 2]),
)
def test_leaky_relu_dropout_matches_the_reference(data, M, N, dtype, p, slope, bias, transposed, n_threads):
    pre = _draw(data, (M, N), dtype, transposed=transposed)
    b = _draw(data, (N,), dtype) if bias else None
    k = key(data.draw(st.integers(0, 2**63 - 1)), data.draw(st.integers(0, 2**40)))
    with threads(n_threads):
        y = ops.leaky_relu_dropout(pre, b, k, slope, p)
        mask = torch.from_numpy(reference_keep_mask(*k.tolist(), M * N, np.float32(p)).reshape(M, N))
        # The reference's linear with an identity weight is pre + bias, exactly.
        expected = linear_leaky_relu_dropout_reference(pre, torch.eye(N, dtype=dtype), b, slope, mask, p)
        assert y.dtype == dtype and y.shape == (M, N)
        close(y, expected, dtype, "leaky_relu_dropout")
        in_place = pre.clone()
        ops.leaky_relu_dropout_(in_place, b, k, slope, p)
        assert torch.equal(in_place, y)

        grad_y = _draw(data, (M, N), dtype, transposed=not transposed)
        grad_pre = ops.leaky_relu_dropout_grad_pre(grad_y, y, k, slope, p)
        expected = linear_leaky_relu_dropout_grad_pre_reference(grad_y.float(), y.float(), slope, mask, p)
        close(grad_pre, expected.to(dtype), dtype, "leaky_relu_dropout_grad_pre")


@settings(max_examples=40)
@given(
    data=st.data(),
    B=dims,
    L=st.integers(0, 40),
    dtype=st.sampled_from(DTYPES),
    given_eps=st.booleans(),
    transposed=st.booleans(),
    n_threads=st.sampled_from([1, 2]),
)
def test_reparameterize_matches_the_reference(data, B, L, dtype, given_eps, transposed, n_threads):
    mu, logvar = _draw(data, (B, L), dtype, transposed=transposed), _draw(data, (B, L), dtype, scale=3.0)
    grad_z = _draw(data, (B, L), dtype, transposed=not transposed)
    k = key(data.draw(st.integers(0, 2**63 - 1)), data.draw(st.integers(0, 2**40)))
    eps = _draw(data, (B, L), dtype) if given_eps else None
    # The drawn noise itself is checked against float64 Box-Muller by test_normal_noise_is_box_muller_on_the_stream.
    noise = eps.float() if given_eps else ops.normal(k, [B, L])
    with threads(n_threads):
        z = ops.reparameterize(mu, logvar, eps, k)
        grad_logvar = ops.reparameterize_grad_logvar(grad_z, logvar, eps, k)
    assert z.dtype == dtype and grad_logvar.dtype == dtype
    close(z, reparameterize_reference(mu.float(), logvar.float(), noise).to(dtype), dtype, "z")
    close(
        grad_logvar, reparameterize_grad_logvar_reference(grad_z.float(), logvar.float(), noise).to(dtype), dtype, "grad_logvar"
    )


@settings(max_examples=40)
@given(
    data=st.data(),
    B=st.integers(1, 70),
    D=st.integers(0, 800),
    L=st.integers(0, 40),
    dtype=st.sampled_from(DTYPES),
    logit_scale=st.sampled_from([1.0, 8.0, 60.0]),
    transposed=st.booleans(),
    n_threads=st.sampled_from([1, 2]),
)
def test_bce_kl_loss_matches_the_reference(data, B, D, L, dtype, logit_scale, transposed, n_threads):
    # B = 0: test_empty_inputs (the reference's reshape(B, -1) cannot take it)
    logits = _draw(data, (B, D), dtype, scale=logit_scale, transposed=transposed)
    target = _draw(data, (B, D), dtype).sigmoid()
    mu, logvar = _draw(data, (B, L), dtype), _draw(data, (B, L), dtype, scale=2.0)
    grad_loss = _draw(data, (B,), torch.float32)
    with threads(n_threads):
        loss = ops.bce_kl_loss(logits, target, mu, logvar)
        grads = ops.bce_kl_loss_backward(grad_loss, logits, target, mu, logvar)
    assert loss.dtype == torch.float32 and loss.shape == (B,)
    # Summed over up to 800 pixels in float32 by both, in different orders.
    close(loss, bce_kl_loss_reference(logits, target, mu, logvar, reduction="none"), torch.float32, "loss", rtol=2e-5)
    for name, got, want in zip(
        ("logits", "mu", "logvar"), grads, bce_kl_loss_backward_reference(grad_loss, logits, target, mu, logvar)
    ):
        assert got.dtype == dtype and got.shape == want.shape
        close(got, want, dtype, f"grad_{name}", rtol=1e-5)


def test_exp_is_within_two_ulp_over_the_float32_range(isa):
    """reparameterize with mu = 0, eps = 1 is exp(logvar / 2): subnormal results, overflow, inf and NaN included."""
    x = np.concatenate(
        [np.linspace(-104, 89, 200001, dtype=np.float32), np.array([-np.inf, np.inf, np.nan, 0.0, -0.0], dtype=np.float32)]
    )
    logvar = torch.from_numpy(2 * x)  # exact, and halved exactly by the kernel
    got = ops.reparameterize(torch.zeros_like(logvar), logvar, torch.ones_like(logvar), key(0)).numpy()
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(got == np.inf, want == np.inf)
    normal = np.isfinite(want) & (want >= np.float32(1.17549435e-38))
    ulp = np.abs(got[normal].view(np.int32).astype(np.int64) - want[normal].view(np.int32).astype(np.int64))
    assert ulp.max() <= 2
    tiny = np.isfinite(want) & ~normal
    assert np.abs(got[tiny] - want[tiny]).max() <= np.float32(2.0**-148)


def test_extreme_logits_give_a_finite_loss_and_exact_limits():
    logits = torch.tensor([[100.0, -100.0, 0.0, 1e-30]])
    target = torch.tensor([[1.0, 0.0, 0.5, 0.5]])
    mu, logvar = torch.zeros(1, 1), torch.zeros(1, 1)
    loss = ops.bce_kl_loss(logits, target, mu, logvar)
    torch.testing.assert_close(loss, bce_kl_loss_reference(logits, target, mu, logvar, reduction="none"), rtol=1e-6, atol=0)
    grad_logits, _, _ = ops.bce_kl_loss_backward(torch.ones(1), logits, target, mu, logvar)
    assert grad_logits[0, 0] == 0 and grad_logits[0, 1] == 0 and grad_logits[0, 2] == 0


def test_empty_inputs():
    k = key(1, 2)
    for shape in [(0, 5), (5, 0), (0, 0)]:
        t = torch.randn(shape)
        assert ops.leaky_relu_dropout(t, None, k, 0.2, 0.5).shape == shape
        assert ops.leaky_relu_dropout_grad_pre(t, t, k, 0.2, 0.5).shape == shape
        assert ops.reparameterize(t, t, None, k).shape == shape
        assert ops.keep_mask(k, list(shape), 0.5).shape == shape
    assert ops.bce_kl_loss(torch.randn(0, 7), torch.rand(0, 7), torch.randn(0, 3), torch.randn(0, 3)).shape == (0,)
    # No pixels or no latents: the other sum alone.
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    close(
        ops.bce_kl_loss(torch.randn(4, 0), torch.rand(4, 0), mu, logvar),
        bce_kl_loss_reference(torch.randn(4, 0), torch.rand(4, 0), mu, logvar, reduction="none"),
        torch.float32,
        "kl only",
    )


def test_in_place_epilogue_writes_into_its_argument():
    pre, k = torch.randn(9, 33), key(3, 4)
    expected = ops.leaky_relu_dropout(pre, None, k, 0.2, 0.5)
    pointer = pre.data_ptr()
    ops.leaky_relu_dropout_(pre, None, k, 0.2, 0.5)
    assert pre.data_ptr() == pointer and torch.equal(pre, expected)
    strided = torch.randn(33, 9).t()  # not contiguous: computed, then copied in
    expected = ops.leaky_relu_dropout(strided, None, k, 0.2, 0.5)
    ops.leaky_relu_dropout_(strided, None, k, 0.2, 0.5)
    assert torch.equal(strided, expected)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_bf16_epilogue_and_backward_round_the_float32_result_once(p):
    """Contiguous bfloat16 is read and written as it is (the mixed-precision step's case): every kernel table and
    thread count gives what the float32 kernels give on the same values, rounded once, NaN and infinities included."""
    g = torch.Generator().manual_seed(0)
    pre, grad = (torch.randn(67, 1031, generator=g) * 4).bfloat16(), torch.randn(67, 1031, generator=g).bfloat16()
    bias = torch.randn(1031, generator=g).bfloat16()
    pre[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    k = key(2**40 + 1, 3)
    y32 = ops.leaky_relu_dropout(pre.float(), bias.float(), k, 0.2, p)
    y = y32.bfloat16()
    expected_grad = ops.leaky_relu_dropout_grad_pre(grad.float(), y.float(), k, 0.2, p).bfloat16()
    for name in native.supported_isas():
        for n in (1, 2):
            with kernel_table(name), threads(n):
                out, in_place = ops.leaky_relu_dropout(pre, bias, k, 0.2, p), pre.clone()
                ops.leaky_relu_dropout_(in_place, bias, k, 0.2, p)
                grad_pre = ops.leaky_relu_dropout_grad_pre(grad, y, k, 0.2, p)
            for result in (out, in_place):
                assert result.dtype == torch.bfloat16 and torch.equal(result.isnan(), y.isnan()), (name, n)
                assert torch.equal(result.nan_to_num(), y.nan_to_num()), (name, n)
            assert torch.equal(grad_pre, expected_grad), (name, n)


def test_bce_kl_loss_reads_bf16_logits_as_their_float32_values():
    """Mixed precision's logits are read as they are: the loss of their float32 values bit for bit, and the logits'
    gradient the float32 one rounded once, on every kernel table and thread count."""
    g = torch.Generator().manual_seed(0)
    logits, target = (torch.randn(33, 787, generator=g) * 5).bfloat16(), torch.rand(33, 787, generator=g)
    mu, logvar, grad_loss = torch.randn(33, 17, generator=g), torch.randn(33, 17, generator=g), torch.rand(33, generator=g)
    grads32 = ops.bce_kl_loss_backward(grad_loss, logits.float(), target, mu, logvar)
    for name in native.supported_isas():
        for n in (1, 2):
            with kernel_table(name), threads(n):  # each table sums a row in its own order
                loss, expected = ops.bce_kl_loss(logits, target, mu, logvar), ops.bce_kl_loss(logits.float(), target, mu, logvar)
                grad_logits, grad_mu, grad_logvar = ops.bce_kl_loss_backward(grad_loss, logits, target, mu, logvar)
            assert torch.equal(loss, expected), (name, n)
            assert grad_logits.dtype == torch.bfloat16 and torch.equal(grad_logits, grads32[0].bfloat16()), (name, n)
            assert torch.equal(grad_mu, grads32[1]) and torch.equal(grad_logvar, grads32[2]), (name, n)


def keys(replicas: int) -> torch.Tensor:
    return torch.tensor([[5 + s, 2 * s] for s in range(replicas)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_stacked_epilogue_is_each_replicas_single_call(dtype):
    """Stacked replicas (pre (S, B, N), bias (S, N), key (S, 2)) in one call: each replica's output and gradient
    bit for bit its single call's with its slices and key, on every kernel table and thread count, in and out of
    place. 3 x 200 rows of 29: on 2 threads the forward's rows (grain 141) and the backward's elements (grain
    4096) split inside a replica."""
    g = torch.Generator().manual_seed(3)
    pre, bias = torch.randn(3, 200, 29, generator=g).to(dtype), torch.randn(3, 29, generator=g).to(dtype)
    grad_y, stacked_keys = torch.randn(3, 200, 29, generator=g).to(dtype), keys(3)
    for name in native.supported_isas():
        for n in (1, 2):
            with kernel_table(name), threads(n):
                y = ops.leaky_relu_dropout(pre, bias, stacked_keys, 0.2, 0.3)
                in_place = pre.clone()
                ops.leaky_relu_dropout_(in_place, bias, stacked_keys, 0.2, 0.3)
                grad_pre = ops.leaky_relu_dropout_grad_pre(grad_y, y, stacked_keys, 0.2, 0.3)
                for s, k in enumerate(stacked_keys):
                    single = ops.leaky_relu_dropout(pre[s], bias[s], k, 0.2, 0.3)
                    assert torch.equal(y[s], single) and torch.equal(in_place[s], single), (name, n, s)
                    assert torch.equal(grad_pre[s], ops.leaky_relu_dropout_grad_pre(grad_y[s], single, k, 0.2, 0.3))


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: ops.keep_mask(key(1), [3], 1.0), "p must be in"),
        (lambda: ops.keep_mask(torch.tensor([1, 2], dtype=torch.int32), [3], 0.5), "key must be"),
        (lambda: ops.keep_mask(torch.tensor([1]), [3], 0.5), "key must be"),
        (lambda: ops.leaky_relu_dropout(torch.randn(2, 3), torch.randn(4), key(1), 0.2, 0.1), "bias has shape"),
        (lambda: ops.leaky_relu_dropout(torch.randn(2, 4, 3), torch.randn(3), keys(2), 0.2, 0.1), "bias has shape"),
        (lambda: ops.leaky_relu_dropout(torch.randn(3, 4, 3), None, keys(2), 0.2, 0.1), "stacked replicas"),
        (lambda: ops.leaky_relu_dropout_grad_pre(torch.randn(3, 2), torch.randn(3, 2), keys(2), 0.2, 0.1), "stacked"),
        (lambda: ops.leaky_relu_dropout(torch.randn(2, 3), None, key(1), -0.1, 0.1), "negative_slope"),
        (lambda: ops.leaky_relu_dropout(torch.randn(2, 3, dtype=torch.float64), None, key(1), 0.2, 0.1), "float32, float16"),
        (lambda: ops.leaky_relu_dropout_grad_pre(torch.randn(2, 3), torch.randn(3, 2), key(1), 0.2, 0.1), "grad_y has shape"),
        (lambda: ops.reparameterize(torch.randn(2, 3), torch.randn(2, 4), None, key(1)), "logvar has shape"),
        (lambda: ops.bce_kl_loss(torch.randn(2, 3), torch.rand(2, 3), torch.randn(3, 4), torch.randn(3, 4)), "rows"),
        (
            lambda: ops.bce_kl_loss_backward(
                torch.ones(3), torch.randn(2, 3), torch.rand(2, 3), torch.randn(2, 4), torch.randn(2, 4)
            ),
            "grad_loss must be",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, needle):
    with pytest.raises(RuntimeError, match=needle):
        call()


# ---- against the Triton kernels under the interpreter ----------------------------------------------------


@needs_interpreter
@pytest.mark.parametrize("seed, step", SEEDS_AND_STEPS[1:4])
def test_draws_match_the_interpreted_triton_kernels(seed, step):
    from fastgen.ops.rng import keep_mask, normal

    k, shape = key(seed, step), (61, 67)
    with cpu_backend("triton"):
        triton_mask = keep_mask(k, shape, 0.3)
        triton_normal = normal(k, shape, torch.float32)
    assert torch.equal(ops.keep_mask(k, list(shape), 0.3), triton_mask)
    assert (ops.normal(k, list(shape)) - triton_normal).abs().max() < 1e-5


@needs_interpreter
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_linear_epilogue_and_backward_match_the_interpreted_triton_kernels(p):
    from fastgen.ops import linear_leaky_relu_dropout

    g = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(47, 33, generator=g), torch.randn(70, 33, generator=g) / 6, torch.randn(70, generator=g)
    k = key(2**35 + 9, 2**32 + 7)
    with cpu_backend("triton"):
        y_triton = linear_leaky_relu_dropout(x, w, b, negative_slope=0.2, p=p, seed=k, kernels="triton")
        grad_y = torch.randn(47, 70, generator=g)
        grad_triton = torch.ops.fastgen.linear_leaky_relu_dropout_grad_pre(grad_y, y_triton, k, 0.2, p)
    y = ops.leaky_relu_dropout(x @ w.t(), b, k, 0.2, p)
    assert torch.equal(y == 0, y_triton == 0)  # the same elements dropped
    torch.testing.assert_close(y, y_triton, rtol=1e-5, atol=1e-5)  # matmuls summed in other orders
    # The backward is elementwise on the same inputs, operation for operation: bit for bit.
    assert torch.equal(ops.leaky_relu_dropout_grad_pre(grad_y, y_triton, k, 0.2, p), grad_triton)


@needs_interpreter
def test_reparameterize_and_loss_match_the_interpreted_triton_kernels():
    from fastgen.ops import bce_kl_loss, reparameterize

    g = torch.Generator().manual_seed(5)
    mu, logvar, grad_z = torch.randn(53, 16, generator=g), torch.randn(53, 16, generator=g), torch.randn(53, 16, generator=g)
    logits, target = torch.randn(53, 101, generator=g) * 4, torch.rand(53, 101, generator=g)
    k = key(11, 2**33)
    with cpu_backend("triton"):
        z_triton = reparameterize(mu, logvar, seed=k, kernels="triton")
        grad_lv_triton = torch.ops.fastgen.reparameterize_grad_logvar(grad_z, logvar, None, k)
        loss_triton = bce_kl_loss(logits, target, mu, logvar, reduction="none", kernels="triton")
        grads_triton = torch.ops.fastgen.bce_kl_loss_backward(torch.ones(53), logits, target, mu, logvar)
    torch.testing.assert_close(ops.reparameterize(mu, logvar, None, k), z_triton, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.reparameterize_grad_logvar(grad_z, logvar, None, k), grad_lv_triton, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.bce_kl_loss(logits, target, mu, logvar), loss_triton, rtol=1e-5, atol=0)
    for got, want in zip(ops.bce_kl_loss_backward(torch.ones(53), logits, target, mu, logvar), grads_triton):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---- opcheck -------------------------------------------------------------------------------------------


def _samples(name: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(len(name))

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(dtype)

    k = key(7, 2**33 + 1)
    if name in ("leaky_relu_dropout", "leaky_relu_dropout_"):
        return [(randn(47, 13), randn(13), k, 0.2, 0.3), (randn(1, 1), None, k, 0.0, 0.0), (randn(3, 2, 5), None, k, 0.2, 0.9)]
    if name == "leaky_relu_dropout_grad_pre":
        return [(randn(47, 13), randn(47, 13), k, 0.2, 0.3), (randn(5, 1), randn(5, 1), k, 0.2, 0.0)]
    if name == "keep_mask":
        return [(k, [47, 5], 0.3), (k, [0, 4], 0.3), (k, [3, 1, 7], 0.0)]
    if name == "normal":
        return [(k, [47, 5]), (k, [0, 4])]
    if name in ("reparameterize", "reparameterize_grad_logvar"):
        return [(randn(47, 3), randn(47, 3), None, k), (randn(5, 16), randn(5, 16), randn(5, 16), k)]
    if name == "bce_kl_loss":
        return [
            (randn(47, 13, scale=3), torch.rand(47, 13, generator=g).to(dtype), randn(47, 3), randn(47, 3)),
            (randn(3, 2, 5), torch.rand(3, 2, 5, generator=g).to(dtype), randn(3, 16), randn(3, 16)),
        ]
    if name == "bce_kl_loss_backward":
        return [
            (
                torch.rand(47, generator=g),
                randn(47, 13, scale=3),
                torch.rand(47, 13, generator=g).to(dtype),
                randn(47, 3),
                randn(47, 3),
            )
        ]
    if name == "fused_linear_leaky_relu_dropout":  # gradients too: these ops hold their own backward
        return [
            (randn(47, 13).requires_grad_(), randn(5, 13).requires_grad_(), randn(5).requires_grad_(), k, 0.2, 0.3),
            (randn(3, 4), randn(2, 4).requires_grad_(), None, k, 0.0, 0.0),
        ]
    if name == "fused_reparameterize":
        return [
            (randn(47, 3).requires_grad_(), randn(47, 3).requires_grad_(), None, k),
            (randn(5, 16), randn(5, 16).requires_grad_(), randn(5, 16).requires_grad_(), k),
        ]
    if name == "fused_bce_kl_loss":
        target = torch.rand(47, 13, generator=g).to(dtype)
        return [(randn(47, 13, scale=3).requires_grad_(), target, randn(47, 3).requires_grad_(), randn(47, 3).requires_grad_())]
    if name == "adam_":  # grads in `dtype`; with and without bf16 copies and a moving average
        shapes = ((47,), (5, 3), (1,), ())
        samples = []
        for copies, averaged in ((False, False), (True, True), (True, False)):
            params = [randn(*s).float() for s in shapes]
            samples.append(
                (
                    params,
                    [randn(*s, scale=0.1) for s in shapes],
                    [randn(*s, scale=0.01).float() for s in shapes],
                    [torch.rand(s, generator=g) * 1e-4 for s in shapes],
                    [torch.full((), 3.0) for _ in shapes],
                    torch.tensor(1e-2),
                    0.5,
                    0.999,
                    1e-8,
                    [p.bfloat16() for p in params] if copies else [],
                    [randn(*s).float() for s in shapes] if averaged else [],
                    torch.tensor(0.25) if averaged else None,
                )
            )
        return samples
    raise AssertionError(f"no opcheck samples for fastgen_native::{name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(native.SCHEMAS))
def test_opcheck(name, dtype):
    """Schema (mutation included), fake kernel, AOT dispatch. The kernels hold no autograd formula of their own
    (the fastgen:: ops that call them do), so their inputs do not require grad; the fused_* ops carry their
    backward in C++, and theirs do."""
    op = getattr(ops, name).default
    for args in _samples(name, dtype):
        torch.library.opcheck(op, args)


def test_every_schema_has_a_cpu_kernel():
    for name in native.SCHEMAS:
        qualified = f"{native.NAMESPACE}::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU"), name


# ---- the library's life cycle ------------------------------------------------------------------------------


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, **env}
    )


def _ours(libraries) -> list:
    return [p for p in libraries if os.path.basename(p) == native.LIBRARY_FILE]


@pytest.mark.slow
def test_loaded_once_per_process(native_library):
    assert native.load() and native.load() and native.available()
    assert len(_ours(torch.ops.loaded_libraries)) == 1
    assert native.check_build(native_library.parent) is None and native.isa() in native.supported_isas()
    # A fresh process finds the cached build: no second build (no notice), one load for several calls,
    # and the kernel table FASTGEN_NATIVE_ISA names.
    wanted = native.supported_isas()[-1]
    done = _run_python(
        "import torch, fastgen.ops.native as n; ok = n.load() and n.load() and n.available(); "
        "print(ok, sum(p.endswith(n.LIBRARY_FILE) for p in torch.ops.loaded_libraries), n.isa(), "
        "n.library_path())",
        FASTGEN_NATIVE_ISA=wanted,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1", wanted, str(native_library)]
    assert "building" not in done.stderr


@pytest.mark.slow
def test_turned_off_by_the_environment(tmp_path):
    """FASTGEN_NATIVE=0: not available, with the reason, and nothing built or loaded (an empty cache stays empty)."""
    done = _run_python(
        "import torch, fastgen.ops.native as n; print(n.available()); print(n.reason); "
        "print(sum(p.endswith(n.LIBRARY_FILE) for p in torch.ops.loaded_libraries))",
        FASTGEN_NATIVE="0",
        XDG_CACHE_HOME=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    available, reason, loaded = done.stdout.strip().split("\n")
    assert available == "False" and "FASTGEN_NATIVE=0" in reason and loaded == "0"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_no_cmake_means_unavailable_with_a_reason(tmp_path):
    done = _run_python(
        "import fastgen.ops.native as n; print(n.available()); print(n.reason)", PATH=str(tmp_path), XDG_CACHE_HOME=str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False", "native kernels need cmake on PATH"]


@pytest.mark.parametrize("field, value", [("torch", "2.0.0+cpu"), ("torch_git", "0" * 40), ("sources", "f" * 64)])
def test_a_build_for_another_torch_or_other_sources_is_refused(native_library, tmp_path, field, value):
    stale = tmp_path / "stale"
    shutil.copytree(native_library.parent, stale)
    record = json.loads((stale / native.RECORD_FILE).read_text())
    record[field] = value
    (stale / native.RECORD_FILE).write_text(json.dumps(record))
    problem = native.check_build(stale)
    assert problem is not None and field in problem and value in problem
    before = list(torch.ops.loaded_libraries)
    with pytest.raises(native.Unavailable, match=field):
        native.load_build(stale)
    assert list(torch.ops.loaded_libraries) == before
    assert native.check_build(native_library.parent) is None  # the real one is still good


def test_processes_building_at_once_build_once(tmp_path, monkeypatch):
    """The build runs under a lock into a private folder renamed into place: a second builder waits, then
    finds the result (threads stand in for processes: flock excludes separate opens of the lock file)."""
    calls = []

    def fake_cmake(cmake, compiler, scratch, failed_log):
        calls.append(scratch)
        time.sleep(0.3)
        staged = scratch / "out"
        staged.mkdir()
        (staged / native.LIBRARY_FILE).write_bytes(b"a library")
        (staged / native.RECORD_FILE).write_text(json.dumps(native.expected_record()))
        return staged

    monkeypatch.setattr(native, "_run_cmake", fake_cmake)
    target = tmp_path / "native" / "build"
    builders = [threading.Thread(target=native.build, args=(target,)) for _ in range(3)]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join()
    assert len(calls) == 1 and native.check_build(target) is None
    assert sorted(p.name for p in target.parent.iterdir()) == ["build", "build.lock"]  # no scratch left


def test_a_failed_build_is_not_retried_until_its_log_is_deleted(tmp_path, monkeypatch):
    calls = []

    def failing_cmake(cmake, compiler, scratch, failed_log):
        calls.append(scratch)
        failed_log.write_text("error: ...")
        raise native.Unavailable(f"the native build failed (log: {failed_log})")

    monkeypatch.setattr(native, "_run_cmake", failing_cmake)
    target = tmp_path / "native" / "build"
    for _ in range(2):
        with pytest.raises(native.Unavailable, match="failed"):
            native.build(target)
    assert len(calls) == 1 and not target.exists()
    (tmp_path / "native" / "build.failed.log").unlink()
    with pytest.raises(native.Unavailable):
        native.build(target)
    assert len(calls) == 2


def test_the_cache_path_names_torch_and_the_sources():
    directory = native.build_dir()
    assert directory.parent == native.cache_root()
    assert directory.name == f"{torch.__version__}-{native.source_hash()[:16]}"
    assert native.library_path() == directory / native.LIBRARY_FILE


@pytest.mark.slow
def test_the_library_keeps_flush_to_zero_off():
    """-ffast-math in any object of the library would turn on flush-to-zero in the whole process that loads it.
    Checked in a fresh process: this one may have run fastgen.train, which flushes denormals on purpose."""
    code = (
        "import torch, torch.nn.functional as F, fastgen.ops.native as n; assert n.load(), n.reason; "
        "tiny = torch.tensor([1e-40]); print((tiny * 1.0).item(), F.relu(tiny).item())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert all(float(v) != 0.0 for v in result.stdout.split()), result.stdout


def test_a_wheel_ships_the_kernel_sources_where_the_loader_finds_them(tmp_path, monkeypatch):
    """setup.py's build_py copies CMakeLists.txt and kernels/ into the wheel's fastgen/native_src/, and
    `source_root` of an installed package (no checkout above it) finds them there, with the same source
    hash as the checkout, so a wheel install builds the same library on first use."""
    import importlib.util

    from setuptools.dist import Distribution

    spec = importlib.util.spec_from_file_location("fastgen_setup", REPO / "setup.py")
    setup_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_module)  # defines the command; setup() runs only as __main__
    monkeypatch.chdir(REPO)
    distribution = Distribution({"name": "fastgen", "packages": ["fastgen"], "script_name": "setup.py"})
    command = setup_module.BuildPyWithKernels(distribution)
    command.build_lib = str(tmp_path / "lib")
    command.ensure_finalized()
    command.run()
    installed = tmp_path / "lib" / "fastgen"
    assert native.source_root(installed) == installed / "native_src"
    for name in ["CMakeLists.txt"] + [f"kernels/{p.name}" for p in (REPO / "kernels").iterdir()]:
        assert (installed / "native_src" / name).read_bytes() == (REPO / name).read_bytes(), name
    assert native.source_root(REPO / "fastgen") == REPO  # a checkout builds from its own sources
