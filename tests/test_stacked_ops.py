"""The fused ops over stacked replicas (a leading replica dimension and one (seed, step) key per replica), as a
group of seeds trains them: replica s computes what a single call with its slices and its key computes, with
the same dropout mask and noise bit for bit, on every CPU backend (the eager ops, the native kernels, the
Triton kernels under the interpreter)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastgen.ops import cpu_backend, linear_leaky_relu_dropout, native, reparameterize
from fastgen.ops.dispatch import HAS_TRITON, TRITON_INTERPRET
from fastgen.ops.rng import keep_mask, normal
from tests.helpers import assert_close

STACKED_BACKENDS = ["eager"] + (["native"] if native.load() else []) + (["triton"] if HAS_TRITON and TRITON_INTERPRET else [])
KERNELS = {"eager": "eager", "native": "native", "triton": "triton"}


def _keys(replicas: int, step: int = 3) -> torch.Tensor:
    return torch.tensor([[1000 + 17 * s, step + s] for s in range(replicas)], dtype=torch.int64)


def _leaves(*tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


def _linear_pair(backend, S, B, K, N, p, bias=True, salt=0):
    """(stacked output and gradients, per-replica outputs and gradients) of the fused linear."""
    gen = torch.Generator().manual_seed(salt)
    x, w = torch.randn(S, B, K, generator=gen), torch.randn(S, N, K, generator=gen) / K**0.5
    b = torch.randn(S, N, generator=gen) if bias else None
    keys, grad = _keys(S), torch.randn(S, B, N, generator=gen)
    with cpu_backend(backend):
        leaves = _leaves(x, w, *([b] if bias else []))
        y = linear_leaky_relu_dropout(*leaves, negative_slope=0.2, p=p, seed=keys, kernels=KERNELS[backend])
        y.backward(grad)
        singles = []
        for s in range(S):
            one = _leaves(x[s], w[s], *([b[s]] if bias else []))
            ys = linear_leaky_relu_dropout(*one, negative_slope=0.2, p=p, seed=keys[s], kernels=KERNELS[backend])
            ys.backward(grad[s])
            singles.append((ys, [t.grad for t in one]))
    return y, [t.grad for t in leaves], singles


@pytest.mark.parametrize("backend", STACKED_BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_stacked_linear_is_each_replicas_single_call(backend, p):
    y, grads, singles = _linear_pair(backend, S=3, B=37, K=19, N=29, p=p)
    assert y.shape == (3, 37, 29)
    for s, (ys, single_grads) in enumerate(singles):
        assert torch.equal(y[s] != 0, ys != 0), f"replica {s}: the dropout mask differs from its single call's"
        assert_close(y[s], ys, torch.float32, f"y[{s}]")
        for name, g, gs in zip(("x", "weight", "bias"), grads, single_grads):
            assert_close(g[s], gs, torch.float32, f"grad {name}[{s}]")


@pytest.mark.parametrize("backend", STACKED_BACKENDS)
def test_stacked_reparameterize_draws_each_replicas_noise(backend):
    gen = torch.Generator().manual_seed(1)
    mu, logvar, grad = (torch.randn(4, 23, 16, generator=gen) for _ in range(3))
    keys = _keys(4)
    with cpu_backend(backend):
        leaves = _leaves(mu, logvar)
        z = reparameterize(*leaves, seed=keys, kernels=KERNELS[backend])
        z.backward(grad)
        for s in range(4):
            one = _leaves(mu[s], logvar[s])
            zs = reparameterize(*one, seed=keys[s], kernels=KERNELS[backend])
            zs.backward(grad[s])
            assert torch.equal(z[s], zs), f"replica {s}: z differs from its single call's"
            assert torch.equal(leaves[1].grad[s], one[1].grad), f"replica {s}: grad logvar differs"


@pytest.mark.parametrize("backend", STACKED_BACKENDS)
def test_stacked_draws_are_the_single_draws_bit_for_bit(backend):
    keys = _keys(3, step=11)
    with cpu_backend(backend):
        masks, noise = keep_mask(keys, (3, 40, 7), 0.3), normal(keys, (3, 40, 7), torch.float32)
        for s in range(3):
            assert torch.equal(masks[s], keep_mask(keys[s], (40, 7), 0.3))
            assert torch.equal(noise[s], normal(keys[s], (40, 7), torch.float32))
    assert not torch.equal(masks[0], masks[1]), "replicas with different keys drew the same mask"


def test_a_stacked_call_refuses_keys_that_do_not_match_its_replicas():
    x, w, b = torch.zeros(3, 4, 5), torch.zeros(3, 6, 5), torch.zeros(3, 6)
    with pytest.raises(ValueError, match=r"int64 tensor of shape \(3, 2\)"):
        linear_leaky_relu_dropout(x, w, b, p=0.3, seed=7)
    with pytest.raises(ValueError, match=r"int64 tensor of shape \(3, 2\)"):
        linear_leaky_relu_dropout(x, w, b, p=0.3, seed=_keys(2))
    with pytest.raises(ValueError, match="stacked replicas need"):
        linear_leaky_relu_dropout(torch.zeros(2, 4, 5), w, b, p=0.3, seed=_keys(3))
    with pytest.raises(ValueError, match="bias must be 2-D"):
        linear_leaky_relu_dropout(x, w, torch.zeros(6), p=0.3, seed=_keys(3))
    with pytest.raises(ValueError, match="stacked replicas first"):
        reparameterize(torch.zeros(2, 4), torch.zeros(2, 4), seed=_keys(3))


@pytest.mark.parametrize("backend", [b for b in STACKED_BACKENDS if b != "triton"])  # the interpreter: slow per example
@given(
    S=st.integers(1, 4),
    B=st.integers(1, 40),
    K=st.integers(1, 40),
    N=st.integers(1, 40),
    p=st.sampled_from([0.0, 0.1, 0.5]),
    bias=st.booleans(),
)
def test_stacked_linear_matches_single_calls_for_any_shape(backend, S, B, K, N, p, bias):
    y, grads, singles = _linear_pair(backend, S, B, K, N, p, bias=bias, salt=S * 1000 + B)
    for s, (ys, single_grads) in enumerate(singles):
        assert torch.equal(y[s] != 0, ys != 0)
        assert_close(y[s], ys, torch.float32, f"y[{s}]")
        for g, gs in zip(grads, single_grads):
            assert_close(g[s], gs, torch.float32, "grad")


@pytest.mark.skipif("triton" not in STACKED_BACKENDS, reason="the Triton kernels run on the CPU under TRITON_INTERPRET=1")
def test_stacked_triton_calls_launch_each_kernel_once(monkeypatch):
    """A stacked call launches its kernel once, the replicas on the grid's second axis, not once per replica."""
    from fastgen.ops.triton import linear_leaky_relu_dropout as linear_kernels
    from fastgen.ops.triton import philox
    from fastgen.ops.triton import reparameterize as reparameterize_kernels

    launches = {}
    for module in (linear_kernels, philox, reparameterize_kernels):
        for name in module.AOT_BUILDS:
            kernel = getattr(module, name)  # under the interpreter, `wrap_triton(kernel)` is the kernel itself

            def counted(*args, _name=name, _run=kernel.run, **kwargs):
                launches[_name] = launches.get(_name, 0) + 1
                return _run(*args, **kwargs)

            monkeypatch.setattr(kernel, "run", counted)
    gen = torch.Generator().manual_seed(5)
    keys = _keys(3)
    with cpu_backend("triton"):
        x, w, b = _leaves(*(torch.randn(*shape, generator=gen) for shape in ((3, 70, 9), (3, 11, 9), (3, 11))))
        linear_leaky_relu_dropout(x, w, b, p=0.3, seed=keys, kernels="triton").sum().backward()
        mu, logvar = _leaves(torch.randn(3, 5, 16, generator=gen), torch.randn(3, 5, 16, generator=gen))
        reparameterize(mu, logvar, seed=keys, kernels="triton").sum().backward()
        keep_mask(keys, (3, 40, 7), 0.3)
        normal(keys, (3, 40, 7), torch.float32)
    assert launches == {
        name: 1
        for name in (
            "linear_leaky_relu_dropout_fwd_kernel",
            "linear_leaky_relu_dropout_bwd_kernel",
            "reparameterize_fwd_kernel",
            "reparameterize_bwd_kernel",
            "keep_mask_kernel",
            "normal_kernel",
        )
    }


_COMPILED_VS_EAGER = """
import torch
from fastgen.ops import cpu_backend, linear_leaky_relu_dropout
gen = torch.Generator().manual_seed(5)
x, w, b = torch.rand(3, 16, 40, generator=gen), torch.randn(3, 24, 40, generator=gen) / 7, torch.randn(3, 24, generator=gen)
keys = torch.tensor([[1000 + 17 * s, 3 + s] for s in range(3)])
leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]


def forward(x, w, b):
    return linear_leaky_relu_dropout(x, w, b, negative_slope=0.2, p=0.3, seed=keys, kernels="{kernels}")


def forward_backward(x, w, b):
    y = forward(x, w, b)
    return (y.detach(), *torch.autograd.grad(y.square().sum(), (x, w, b)))


with cpu_backend("{kernels}"), torch._dynamo.config.patch(trace_autograd_ops=True):
    eager = (forward(x, w, b), *forward_backward(*leaves))
    compiled = (torch.compile(forward, fullgraph=True)(x, w, b), *torch.compile(forward_backward, fullgraph=True)(*leaves))
for e, c in zip(eager, compiled):
    print(max(((e[s] - c[s]).abs().max() / (e[s].abs().max() + 1e-6)).item() for s in range(3)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in STACKED_BACKENDS if b != "triton"])  # the interpreter does not compile
def test_a_compiled_stacked_linear_matches_the_eager_one(backend):
    """torch.compile traces the op's body on the native kernels: every replica, not just the first, must come out
    as it does eagerly (forward alone, and forward and gradients). In a fresh process without the Triton
    interpreter, as users run it (an in-place epilogue on each replica's slice was wrong only there)."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    done = subprocess.run(
        [sys.executable, "-c", _COMPILED_VS_EAGER.format(kernels=backend)], capture_output=True, text=True, env=cli_env()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [float(line) for line in done.stdout.split()]
    assert len(errors) == 5 and max(errors) < 1e-5, errors  # y alone; y, grad x, grad weight, grad bias


@pytest.mark.parametrize("bias", [True, False])
def test_stacked_plain_linear_is_each_replicas_linear_with_weight_gradients_laid_out_as_weights(bias):
    """The stacked nn.Linear (the networks' last layers): each replica's output and gradients are its own
    nn.Linear's, and the weight's gradient is contiguous like the weight (the fused Adam takes it without a copy)."""
    from fastgen.models.stacked import StackedLinear

    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    layers = [torch.nn.Linear(19, 7, bias=bias) for _ in range(3)]
    stacked = StackedLinear(layers)
    x, grad = torch.randn(3, 11, 19, generator=gen, requires_grad=True), torch.randn(3, 11, 7, generator=gen)
    y_stacked = stacked(x)
    y_stacked.backward(grad)
    assert stacked.weight.grad.is_contiguous()
    for s, layer in enumerate(layers):
        xs = x.detach()[s].clone().requires_grad_(True)
        y = layer(xs)
        y.backward(grad[s])
        assert_close(y_stacked[s], y, torch.float32, f"y[{s}]")
        assert_close(x.grad[s], xs.grad, torch.float32, f"grad x[{s}]")
        assert_close(stacked.weight.grad[s], layer.weight.grad, torch.float32, f"grad weight[{s}]")
        if bias:
            assert_close(stacked.bias.grad[s], layer.bias.grad, torch.float32, f"grad bias[{s}]")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 weights under autocast, as torch's layers run
        y = stacked(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()  # the backward's matmuls on the forward's bf16 casts: no dtype mismatch
