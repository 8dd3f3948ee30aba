"""Each fused op against plain PyTorch, forward and every gradient, on the eager fallback and on the
Triton kernels (interpreted on the CPU; on the GPU when there is one)."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen.ops import bce_kl_loss, dropout_keep_mask, linear_leaky_relu_dropout, reparameterize
from fastgen.ops.reference import bce_kl_loss_reference, kl_to_standard_normal, linear_leaky_relu_dropout_reference
from tests.conftest import BACKENDS_TRITON_SLOW
from tests.helpers import assert_close

# The interpreter runs each kernel in numpy: keep the example counts small enough for CI.
EXAMPLES = int(os.environ.get("FASTGEN_HYPOTHESIS_EXAMPLES", "12"))
DTYPES = st.sampled_from([torch.float32, torch.float16])


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


@pytest.mark.parametrize("backend", BACKENDS_TRITON_SLOW, indirect=True)
@settings(max_examples=EXAMPLES)
@given(
    M=st.integers(1, 300),
    K=st.integers(1, 1100),
    N=st.integers(1, 1100),
    dtype=DTYPES,
    p=st.sampled_from([0.0, 0.9, None]),
    slope=st.sampled_from([0.0, 0.01, 0.2, 1.5]),
    bias=st.booleans(),
    transposed=st.booleans(),
    seed=st.integers(0, 2**40),
    data=st.data(),
)
def test_linear_leaky_relu_dropout_matches_reference(backend, M, K, N, dtype, p, slope, bias, transposed, seed, data):
    if p is None:
        p = data.draw(st.floats(0.01, 0.8))
    gen = torch.Generator().manual_seed(seed)
    # x transposed in memory covers non-contiguous inputs.
    x = torch.randn(K, M, generator=gen).t() if transposed else torch.randn(M, K, generator=gen)
    x = x.to(dtype).requires_grad_(True)
    w = (torch.randn(N, K, generator=gen) / math.sqrt(K)).to(dtype).requires_grad_(True)
    b = torch.randn(N, generator=gen).to(dtype).requires_grad_(True) if bias else None
    y = linear_leaky_relu_dropout(x, w, b, negative_slope=slope, p=p, seed=seed)
    grad = torch.randn(M, N, generator=gen).to(dtype)
    y.backward(grad)

    mask = dropout_keep_mask(seed, (M, N), p, "cpu")
    xr, wr = _leaf(x.float()), _leaf(w.float())
    br = _leaf(b.float()) if bias else None
    yr = linear_leaky_relu_dropout_reference(xr, wr, br, slope, mask, p)
    yr.backward(grad.float())

    assert y.dtype == dtype and y.shape == (M, N)
    assert_close(y, yr, dtype, "y")
    assert torch.all(y[~mask] == 0), "dropped elements must be exactly zero"
    assert_close(x.grad, xr.grad, dtype, "grad x")
    assert_close(w.grad, wr.grad, dtype, "grad weight")
    if bias:
        assert_close(b.grad, br.grad, dtype, "grad bias")


@settings(max_examples=EXAMPLES)
@given(B=st.integers(1, 300), L=st.integers(1, 64), dtype=DTYPES, given_eps=st.booleans(), seed=st.integers(0, 2**40))
def test_reparameterize_matches_reference(backend, B, L, dtype, given_eps, seed):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, L, generator=gen).to(dtype).requires_grad_(True)
    logvar = (torch.randn(B, L, generator=gen) * 2).to(dtype).requires_grad_(True)
    eps = torch.randn(B, L, generator=gen).to(dtype) if given_eps else None
    z = reparameterize(mu, logvar, eps=eps, seed=seed)
    if eps is None:
        # The drawn eps is recovered from a second call with mu = 0, logvar = 0 under the same seed.
        eps = reparameterize(torch.zeros_like(mu), torch.zeros_like(logvar), seed=seed).detach()
    grad = torch.randn(B, L, generator=gen).to(dtype)
    z.backward(grad)
    mur, lvr = _leaf(mu.float()), _leaf(logvar.float())
    zr = mur + torch.exp(0.5 * lvr) * eps.float()
    zr.backward(grad.float())
    assert_close(z, zr, dtype, "z")
    assert_close(mu.grad, mur.grad, dtype, "grad mu")
    assert_close(logvar.grad, lvr.grad, dtype, "grad logvar")


@pytest.mark.parametrize("backend", BACKENDS_TRITON_SLOW, indirect=True)
@settings(max_examples=EXAMPLES)
@given(
    B=st.integers(1, 300),
    D=st.integers(1, 1100),
    L=st.integers(1, 40),
    dtype=DTYPES,
    logit_scale=st.sampled_from([1.0, 30.0, 1e4]),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    seed=st.integers(0, 2**40),
)
def test_bce_kl_loss_matches_reference(backend, B, D, L, dtype, logit_scale, reduction, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, D, generator=gen) * logit_scale).to(dtype).requires_grad_(True)
    target = torch.rand(B, D, generator=gen).to(dtype)
    mu = torch.randn(B, L, generator=gen).to(dtype).requires_grad_(True)
    logvar = torch.randn(B, L, generator=gen).to(dtype).requires_grad_(True)
    loss = bce_kl_loss(logits, target, mu, logvar, reduction=reduction)
    grad = torch.rand(loss.shape, generator=gen)
    loss.backward(grad)
    leaves = [_leaf(t.double()) for t in (logits, mu, logvar)]
    ref = bce_kl_loss_reference(leaves[0], target.double(), leaves[1], leaves[2], reduction=reduction)
    ref.backward(grad.double())
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    assert_close(loss, ref, dtype, "loss")
    for name, t, r in zip(("logits", "mu", "logvar"), (logits, mu, logvar), leaves):
        assert_close(t.grad, r.grad, dtype, f"grad {name}")


def test_bce_kl_loss_is_exact_for_a_hand_computed_case(backend):
    # logits 0 -> BCE log 2 per pixel whatever the target; mu 0, logvar 0 -> KL 0.
    logits = torch.zeros(2, 5)
    loss = bce_kl_loss(logits, torch.rand(2, 5), torch.zeros(2, 3), torch.zeros(2, 3), reduction="none")
    assert torch.allclose(loss, torch.full((2,), 5 * math.log(2.0)))
    # mu 1, logvar 0 -> KL = 0.5 per latent dimension.
    loss = bce_kl_loss(torch.full((1, 1), 50.0), torch.ones(1, 1), torch.ones(1, 4), torch.zeros(1, 4), reduction="sum")
    assert abs(loss.item() - 2.0) < 1e-5


@pytest.mark.parametrize("scale", [1e-3, 1e-2, 1.0])
def test_kl_to_standard_normal_keeps_its_digits_near_a_standard_normal(scale):
    """The logged KL near mu = logvar = 0 (initialisation) against float64: the 1 + logvar - exp(logvar)
    form loses most digits there (2.7% at scale 1e-3); the expm1 form keeps them."""
    generator = torch.Generator().manual_seed(0)
    mu, logvar = (torch.randn(100, 16, generator=generator) * scale for _ in range(2))
    exact = (-0.5 * (1 + logvar.double() - mu.double() ** 2 - logvar.double().exp())).sum(1)
    relative = ((kl_to_standard_normal(mu, logvar).double() - exact).abs() / exact).max().item()
    assert relative < 1e-4, relative


def test_bce_kl_loss_of_an_empty_batch_is_empty(backend):
    empty, latents = torch.zeros(0, 1, 28, 28), torch.zeros(0, 16)
    for loss in (bce_kl_loss, bce_kl_loss_reference):
        assert loss(empty, empty, latents, latents, reduction="none").shape == (0,)
        assert loss(empty, empty, latents, latents, reduction="sum").item() == 0.0


# ---- dropout masks -------------------------------------------------------------------------------


def test_keep_fraction_is_within_binomial_bounds(backend):
    n, p = 200_000, 0.3
    kept = dropout_keep_mask(1234, (n,), p, "cpu").sum().item()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 5 * sigma


def test_fallback_masks_use_every_16_bit_lane_and_round_p_to_2_to_the_minus_16():
    """The CPU fallback reads four 16-bit lanes from each 64-bit draw: each lane position must be
    uniform on its own (a draw that never sets the top bit would drop every fourth element at p=0.5)."""
    from fastgen.ops.dispatch import cpu_backend
    from fastgen.ops.rng import DROP_RESOLUTION

    with cpu_backend("eager"):
        n, p = 400_000, 0.5
        kept = dropout_keep_mask(99, (n // 4, 4), p, "cpu").float()
        sigma = math.sqrt((n // 4) * p * (1 - p))
        for lane in range(4):
            assert abs(kept[:, lane].sum().item() - (n // 4) * (1 - p)) < 5 * sigma, lane
        assert not dropout_keep_mask(1, (1000,), 1 - DROP_RESOLUTION / 4, "cpu").any()  # rounds to 1: drop all
        assert dropout_keep_mask(1, (1000,), DROP_RESOLUTION / 4, "cpu").all()  # rounds to 0: keep all


def test_same_key_same_mask_different_seed_or_step_different_mask(backend):
    shape, p = (64, 300), 0.5
    a = dropout_keep_mask(7, shape, p, "cpu")
    assert torch.equal(a, dropout_keep_mask(7, shape, p, "cpu"))
    assert not torch.equal(a, dropout_keep_mask(8, shape, p, "cpu"))
    step1 = dropout_keep_mask(torch.tensor([7, 1]), shape, p, "cpu")
    assert not torch.equal(a, step1)
    assert torch.equal(a, dropout_keep_mask(torch.tensor([7, 0]), shape, p, "cpu"))
    # Different steps are independent, not shifted copies: agreement is near 50%.
    assert 0.4 < (a == step1).float().mean().item() < 0.6


def test_op_applies_exactly_the_published_mask(backend):
    x, w = torch.rand(33, 20) + 0.1, torch.rand(47, 20) + 0.1  # positive, so every pre-activation is > 0
    y = linear_leaky_relu_dropout(x, w, None, p=0.4, seed=torch.tensor([99, 5]))
    mask = dropout_keep_mask(torch.tensor([99, 5]), (33, 47), 0.4, "cpu")
    assert torch.equal(y > 0, mask)


def test_eval_mode_and_p_zero_apply_no_dropout(backend):
    x, w, b = torch.randn(8, 16), torch.randn(12, 16), torch.randn(12)
    expected = F.leaky_relu(F.linear(x, w, b), 0.2)
    assert torch.allclose(linear_leaky_relu_dropout(x, w, b, p=0.5, seed=1, training=False), expected, atol=1e-5)
    assert torch.allclose(linear_leaky_relu_dropout(x, w, b, p=0.0), expected, atol=1e-5)


def test_extra_leading_dimensions(backend):
    x, w = torch.randn(2, 3, 16), torch.randn(5, 16)
    y = linear_leaky_relu_dropout(x, w, None, negative_slope=0.1)
    assert y.shape == (2, 3, 5)
    assert torch.allclose(y, F.leaky_relu(x @ w.t(), 0.1), atol=1e-5)


def test_empty_batch(backend):
    x, w = torch.randn(0, 16, requires_grad=True), torch.randn(5, 16, requires_grad=True)
    y = linear_leaky_relu_dropout(x, w, None, p=0.3, seed=0)
    y.sum().backward()
    assert y.shape == (0, 5) and torch.equal(w.grad, torch.zeros_like(w))


def test_frozen_weight_gets_no_gradient(backend):
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(3, 8)  # requires_grad False: the backward must skip the weight gradient
    linear_leaky_relu_dropout(x, w, None, p=0.2, seed=3).sum().backward()
    assert x.grad is not None and w.grad is None


def test_gradcheck_in_float64_on_the_fallback():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: linear_leaky_relu_dropout(*a, p=0.3, seed=11), (x, w, b))
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, v: reparameterize(m, v, seed=2), (mu, lv))
    # bce_kl_loss computes in float32 by design, too coarse for finite differences: the hypothesis
    # test checks its gradients against a float64 autograd reference instead.


# ---- argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 5)), ValueError, "x"),
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), torch.randn(5)), ValueError, "bias"),
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3).half()), TypeError, "weight"),
        (lambda: linear_leaky_relu_dropout(torch.ones(2, 3, dtype=torch.long), torch.randn(4, 3)), TypeError, "x"),
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), p=1.0), ValueError, "p"),
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), p=float("nan")), ValueError, "p"),
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), p=-0.1), ValueError, "p"),
        (
            lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), negative_slope=-1),
            ValueError,
            "negative_slope",
        ),
        (lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), p=0.5, seed=float("nan")), TypeError, "seed"),
        (
            lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), p=0.5, seed=torch.tensor([1.0])),
            TypeError,
            "seed",
        ),
        (
            lambda: linear_leaky_relu_dropout(torch.randn(2, 3), torch.randn(4, 3), p=0.5, seed=torch.tensor([1, 2, 3])),
            ValueError,
            "seed",
        ),
        (lambda: reparameterize(torch.randn(2, 3), torch.randn(2, 4)), ValueError, "logvar"),
        (lambda: reparameterize(torch.randn(2, 3), torch.randn(2, 3).double()), TypeError, "logvar"),
        (lambda: reparameterize(torch.randn(2, 3), torch.randn(2, 3), eps=torch.randn(3, 3)), ValueError, "eps"),
        (lambda: bce_kl_loss(torch.randn(2, 5), torch.rand(2, 4), torch.randn(2, 3), torch.randn(2, 3)), ValueError, "target"),
        (lambda: bce_kl_loss(torch.randn(2, 5), torch.rand(2, 5), torch.randn(3, 3), torch.randn(3, 3)), ValueError, "mu"),
        (
            lambda: bce_kl_loss(torch.randn(2, 5), torch.rand(2, 5), torch.randn(2, 3), torch.randn(2, 3), reduction="avg"),
            ValueError,
            "reduction",
        ),
        (
            lambda: bce_kl_loss(torch.randn(2, 5), torch.rand(2, 5).half(), torch.randn(2, 3), torch.randn(2, 3)),
            TypeError,
            "target",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_argument(backend, call, error, needle):
    with pytest.raises(error, match=needle):
        call()


def test_float64_is_refused_where_triton_runs():
    from fastgen.ops import TRITON_INTERPRET, cpu_backend

    if not TRITON_INTERPRET:
        pytest.skip("needs the Triton interpreter")
    with cpu_backend("triton"), pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        linear_leaky_relu_dropout(torch.randn(2, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("seed, step", [(0, 0), (7, 1), (2**40 + 3, 5), (123, 2**33 + 1)])
def test_triton_masks_follow_the_published_philox_stream(seed, step):
    """The kernels' masks are Philox-4x32-10 at (seed, step, element): what native kernels must match."""
    from fastgen.ops import TRITON_INTERPRET, cpu_backend
    from tests.philox_reference import keep_mask

    if not TRITON_INTERPRET:
        pytest.skip("needs the Triton interpreter")
    n, p = 5000, 0.3
    with cpu_backend("triton"):
        mask = dropout_keep_mask(torch.tensor([seed, step]), (n,), p, "cpu")
    assert np.array_equal(mask.numpy(), keep_mask(seed, step, n, p))


cuda_only = pytest.mark.gpu


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (47, 1023, 300), (4096, 784, 1024)])
def test_cuda_kernels_match_reference(dtype, M, K, N):
    """The compiled Triton kernels on the GPU, bf16 included (the interpreter cannot run bf16)."""
    gen = torch.Generator().manual_seed(M * K + N)
    x = torch.randn(M, K, generator=gen).to("cuda", dtype).requires_grad_(True)
    w = (torch.randn(N, K, generator=gen) / math.sqrt(K)).to("cuda", dtype).requires_grad_(True)
    b = torch.randn(N, generator=gen).to("cuda", dtype).requires_grad_(True)
    y = linear_leaky_relu_dropout(x, w, b, p=0.3, seed=5)
    grad = torch.randn(M, N, generator=gen).to("cuda", dtype)
    y.backward(grad)
    mask = dropout_keep_mask(5, (M, N), 0.3, "cuda")
    xr, wr, br = (_leaf(t.float()) for t in (x, w, b))
    yr = linear_leaky_relu_dropout_reference(xr, wr, br, 0.2, mask, 0.3)
    yr.backward(grad.float())
    pairs = (("y", y, yr), ("grad x", x.grad, xr.grad), ("grad weight", w.grad, wr.grad), ("grad bias", b.grad, br.grad))
    for name, a, e in pairs:
        assert_close(a, e, dtype, name)

    mu = torch.randn(M, 16, generator=gen).to("cuda", dtype).requires_grad_(True)
    logvar = torch.randn(M, 16, generator=gen).to("cuda", dtype).requires_grad_(True)
    target = torch.rand(M, K, generator=gen).to("cuda", dtype)
    logits = (torch.randn(M, K, generator=gen) * 10).to("cuda", dtype).requires_grad_(True)
    loss = bce_kl_loss(logits, target, mu, logvar)
    loss.backward()
    leaves = [_leaf(t.double()) for t in (logits, mu, logvar)]
    ref = bce_kl_loss_reference(leaves[0], target.double(), leaves[1], leaves[2])
    ref.backward()
    assert_close(loss, ref, dtype, "bce_kl loss")
    for name, t, r in zip(("logits", "mu", "logvar"), (logits, mu, logvar), leaves):
        assert_close(t.grad, r.grad, dtype, f"bce_kl grad {name}")

    z = reparameterize(mu.detach(), logvar.detach(), seed=9)
    eps = reparameterize(torch.zeros_like(mu), torch.zeros_like(logvar), seed=9)
    assert_close(z, mu.float() + torch.exp(0.5 * logvar.float()) * eps.float(), dtype, "z")
    if eps.numel() > 500:  # the in-kernel noise is standard normal
        assert abs(eps.float().mean().item()) < 0.2 and 0.8 < eps.float().std().item() < 1.2


@cuda_only
def test_cuda_masks_same_key_same_mask_new_step_new_mask():
    a = dropout_keep_mask(torch.tensor([3, 0], device="cuda"), (256, 256), 0.5, "cuda")
    assert torch.equal(a, dropout_keep_mask(torch.tensor([3, 0], device="cuda"), (256, 256), 0.5, "cuda"))
    b = dropout_keep_mask(torch.tensor([3, 1], device="cuda"), (256, 256), 0.5, "cuda")
    assert 0.45 < (a == b).float().mean().item() < 0.55


def test_a_seed_tensor_on_the_same_device_under_another_name_is_accepted():
    from fastgen.ops.rng import philox_key

    key = torch.tensor([7, 3])
    assert torch.equal(philox_key(key, "cpu:0"), key) and torch.equal(philox_key(key.to("cpu:0"), "cpu"), key)
    with pytest.raises(ValueError, match="seed is on"):
        philox_key(key.to("meta"), "cpu")
