"""The eager fast paths: on the native CPU kernels (fastgen/ops/eager_native.py, C++ autograd) and where Triton runs
(a `torch.autograd.Function` per op launching the registered op's kernels; on the CPU under the interpreter). Each is
bit for bit the registered ops' outputs, gradients and key steps, taken by eager calls, while torch.compile still
traces the registered `fastgen::` ops."""

import importlib
from dataclasses import dataclass

import pytest
import torch

import fastgen
from fastgen.ops import bce_kl_loss, cpu_backend, dispatch, eager_native, linear_leaky_relu_dropout, native, reparameterize
from fastgen.ops.dispatch import HAS_TRITON, TRITON_INTERPRET


@dataclass(frozen=True)
class Path:
    backend: str  # the CPU backend the kernels run on
    kernels: str  # what the functional ops and the layer are asked for
    switch: tuple  # (module, attribute) that turns the fast path off
    dtypes: tuple  # the half precision besides fp32: bf16 natively, fp16 in the interpreter (no bf16 there)
    fast_function: str | None  # the layer's fast entry point, patched to count its calls


PATHS = {
    "native": Path("native", "native", (eager_native, "ENABLED"), (torch.float32, torch.bfloat16), None),
    "triton": Path("triton", "auto", (dispatch, "EAGER_TRITON"), (torch.float32, torch.float16), "EagerTritonLinear"),
}
AVAILABLE = {
    "native": (native.load(), f"the native CPU kernels are not available: {native.reason}"),
    "triton": (HAS_TRITON and TRITON_INTERPRET, "needs the Triton interpreter (TRITON_INTERPRET=1)"),
}


@pytest.fixture(params=list(PATHS))
def path(request):
    available, reason = AVAILABLE[request.param]
    if not available:
        pytest.skip(reason)
    with cpu_backend(PATHS[request.param].backend):
        yield PATHS[request.param]


def _off(monkeypatch, path: Path) -> None:
    monkeypatch.setattr(*path.switch, False)


def _layer(dtype, p, bias, kernels):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 33, generator=gen).to(dtype).requires_grad_()
    w = torch.randn(19, 33, generator=gen).to(dtype).requires_grad_()
    b = torch.randn(19, generator=gen).to(dtype).requires_grad_() if bias else None
    key = torch.tensor([123, 4])
    return (x, w, b), lambda x, w, b: linear_leaky_relu_dropout(x, w, b, negative_slope=0.2, p=p, seed=key, kernels=kernels)


def _reparameterize(dtype, given_eps, kernels):
    gen = torch.Generator().manual_seed(1)
    mu, logvar = (torch.randn(9, 16, generator=gen).to(dtype).requires_grad_() for _ in range(2))
    eps = torch.randn(9, 16, generator=gen).to(dtype).requires_grad_() if given_eps else None
    return (mu, logvar, eps), lambda m, v, e: reparameterize(m, v, eps=e, seed=None if e is not None else 77, kernels=kernels)


def _bce_kl(dtype, reduction, kernels):
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(5, 40, generator=gen) * 3).to(dtype).requires_grad_()
    target = torch.rand(5, 40, generator=gen).to(dtype)
    mu, logvar = (torch.randn(5, 6, generator=gen).to(dtype).requires_grad_() for _ in range(2))
    return (logits, mu, logvar), lambda a, m, v: bce_kl_loss(a, target, m, v, reduction=reduction, kernels=kernels)


def _reparameterize_keyed(dtype, kernels):
    """The call the Reparameterize layer makes: a (seed, step) key tensor (the functional's own fast path)."""
    gen = torch.Generator().manual_seed(3)
    mu, logvar = (torch.randn(9, 16, generator=gen).to(dtype).requires_grad_() for _ in range(2))
    key = torch.tensor([77, 5])
    return (mu, logvar), lambda m, v: reparameterize(m, v, seed=key, kernels=kernels)


CASES = {
    "layer p=0.3": lambda d, k: _layer(d, 0.3, True, k),
    "layer p=0 no bias": lambda d, k: _layer(d, 0.0, False, k),
    "reparameterize": lambda d, k: _reparameterize(d, False, k),
    "reparameterize given eps": lambda d, k: _reparameterize(d, True, k),
    "reparameterize keyed": lambda d, k: _reparameterize_keyed(d, k),
    "bce_kl_loss mean": lambda d, k: _bce_kl(d, "mean", k),
    "bce_kl_loss none": lambda d, k: _bce_kl(d, "none", k),
}


def _output_and_grads(inputs, fn):
    leaves = [t for t in inputs if t is not None]
    for t in leaves:
        t.grad = None
    out = fn(*inputs)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype))
    return out.detach().clone(), [t.grad.clone() for t in leaves]


@pytest.mark.parametrize("precision", ["fp32", "half"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_the_registered_op_bit_for_bit(monkeypatch, path, case, precision):
    inputs, fn = CASES[case](path.dtypes[precision == "half"], path.kernels)
    fast_out, fast_grads = _output_and_grads(inputs, fn)
    _off(monkeypatch, path)
    op_out, op_grads = _output_and_grads(inputs, fn)
    assert torch.equal(fast_out, op_out)
    assert all(torch.equal(a, b) for a, b in zip(fast_grads, op_grads))


OP_MODULES = {"layer p=0.3": "linear_leaky_relu_dropout", "reparameterize": "reparameterize", "bce_kl_loss mean": "bce_kl_loss"}


@pytest.mark.parametrize("case", list(OP_MODULES))
def test_an_eager_call_skips_the_custom_op_dispatch(monkeypatch, path, case):
    """The registered op's Python entry (`_forward`, a torch.library op) is not called eagerly; with the fast path off it is."""
    module = importlib.import_module(f"fastgen.ops.{OP_MODULES[case]}")
    calls = []
    registered = module._forward
    monkeypatch.setattr(module, "_forward", lambda *args: calls.append(1) or registered(*args))
    inputs, fn = CASES[case](torch.float32, path.kernels)
    fn(*inputs).sum().backward()
    assert calls == []
    _off(monkeypatch, path)
    fn(*inputs).sum().backward()
    assert calls == [1]


@pytest.mark.parametrize("case", ["layer p=0.3", "reparameterize", "bce_kl_loss mean"])
def test_torch_compile_traces_the_registered_op(path, case):
    inputs, fn = CASES[case](torch.float32, path.kernels)
    targets = []

    def backend(gm, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes)
        return gm

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    assert torch.equal(compiled(*inputs), fn(*inputs))
    assert any(t.startswith("fastgen.") for t in targets), targets


@pytest.mark.parametrize("training", [True, False])
def test_the_layer_takes_the_fast_path_with_the_same_masks_and_key_steps(monkeypatch, path, training):
    """LinearLeakyReLUDropout called eagerly: same outputs, gradients and key advance as through the registered op,
    call after call (and where the fast path is a Python function, it is the one called)."""
    applied = []
    if path.fast_function:
        function = getattr(importlib.import_module("fastgen.models.layers"), path.fast_function)
        fast_apply = function.apply
        monkeypatch.setattr(function, "apply", lambda *a: applied.append(1) or fast_apply(*a))

    def run():
        torch.manual_seed(0)
        layer = fastgen.LinearLeakyReLUDropout(33, 19, negative_slope=0.2, p=0.3, kernels=path.kernels).train(training)
        x = torch.randn(7, 33, requires_grad=True)
        outs = []
        for _ in range(3):
            y = layer(x)
            y.backward(torch.ones_like(y))
            outs += [y.detach().clone(), x.grad.clone(), layer.weight.grad.clone(), layer.philox_key.clone()]
            x.grad = layer.weight.grad = layer.bias.grad = None
        return outs

    fast = run()
    assert len(applied) == (3 if path.fast_function else 0)
    _off(monkeypatch, path)
    assert all(torch.equal(a, b) for a, b in zip(fast, run()))
    assert len(applied) == (3 if path.fast_function else 0)  # not called with the fast path off
    assert int(fast[3][1]) == (1 if training else 0)  # the key's step after the first call (eval mode draws no mask)


def test_an_eval_call_can_be_differentiated_after_a_training_call_advanced_the_key(path):
    """The fast path saves the key it used for the backward: without dropout a shared constant, not the layer's
    buffer, which the training call below advances in place."""
    layer = fastgen.LinearLeakyReLUDropout(6, 5, p=0.3, kernels=path.kernels)
    x = torch.randn(3, 6, requires_grad=True)
    evaluated = layer.eval()(x)
    layer.train()(x)
    evaluated.sum().backward()
    assert x.grad is not None and int(layer.philox_key[1]) == 1


def test_the_dispatcher_knows_the_dtypes_the_native_kernels_take():
    from fastgen.ops.dispatch import NATIVE_DTYPES

    assert NATIVE_DTYPES == native.DTYPES


def test_the_functional_fast_path_runs_what_the_general_path_would():
    """reparameterize with a key tensor: plain ops where the general path takes plain ops (kernels="auto" on the
    CPU), the fused op where it takes the fused op; the general path's checks still refuse bad input."""
    from fastgen.ops.reference import reparameterize_reference
    from fastgen.ops.rng import normal

    mu, logvar, key = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([9, 2])
    with cpu_backend("native" if native.load() else "eager"):
        plain = reparameterize(mu, logvar, seed=key, kernels="auto")  # "auto" on the CPU: plain PyTorch ops
        assert torch.equal(plain, reparameterize_reference(mu, logvar, normal(key, mu.shape, mu.dtype)))
        with pytest.raises(ValueError, match="logvar has shape"):
            reparameterize(mu, logvar[:, :3], seed=key, kernels="auto")
        with pytest.raises(TypeError, match="logvar has dtype"):
            reparameterize(mu, logvar.double(), seed=key, kernels="auto")
