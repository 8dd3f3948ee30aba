"""Every `fastgen::` op under `torch.library.opcheck` (schema, autograd registration, fake tensors, AOT
dispatch), on the eager CPU fallback and on the Triton kernels (interpreted on the CPU; compiled on a
GPU when there is one); float64 gradcheck of the fused ops' *registered* autograd formulas; and the
mutation declared by `fastgen::fused_adam_`.

A new `fastgen::` op must get sample inputs in `SAMPLES`: `test_every_fastgen_op_has_opcheck_samples`
fails until it does.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import fastgen
from fastgen.ops import bce_kl_loss, linear_leaky_relu_dropout, reparameterize
from fastgen.training.optim import fused_adam_

ALL_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
DEVICES = ["cpu", "cuda"]  # the cuda cases are gpu-marked: skipped without CUDA


# ---- sample inputs per op ------------------------------------------------------------------------


def _gen(salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + salt)


def _randn(gen, shape, dtype, device, requires_grad=False, scale=1.0):
    t = (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device=device, dtype=dtype)
    return t.requires_grad_(requires_grad)


def _rand(gen, shape, dtype, device, requires_grad=False):
    return torch.rand(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype).requires_grad_(requires_grad)


def _key(seed: int, step: int, device) -> torch.Tensor:
    return torch.tensor([seed, step], dtype=torch.int64, device=device)


def _keys(replicas: int, device) -> torch.Tensor:
    return torch.tensor([[31 + s, 2 * s] for s in range(replicas)], dtype=torch.int64, device=device)


P_VALUES = (0.0, 0.3)
# (M, K, N): a single element, odd sizes on every axis, M past one 64-row tile of the interpreter's config.
LINEAR_SHAPES = ((1, 1, 1), (47, 13, 5), (65, 33, 47))
# (B, L) for reparameterize; (B, D, L) for bce_kl_loss.
LATENT_SHAPES = ((1, 1), (47, 3), (5, 16))
LOSS_SHAPES = ((1, 1, 1), (47, 13, 3), (3, 101, 16))


def _linear_leaky_relu_dropout(device, dtype, rg):
    for i, ((M, K, N), p) in enumerate((s, p) for s in LINEAR_SHAPES for p in P_VALUES):
        g = _gen(i)
        bias = _randn(g, (N,), dtype, device, rg) if i % 2 == 0 else None
        args = (
            _randn(g, (M, K), dtype, device, rg),
            _randn(g, (N, K), dtype, device, rg, scale=K**-0.5),
            bias,
            _key(7 + i, i, device),
            0.2 if i % 3 else 0.0,
            p,
        )
        yield f"{M}x{K}x{N}-p{p}-{'bias' if bias is not None else 'nobias'}", args
    g = _gen(99)  # stacked replicas: a leading replica dimension and one key per replica (a group of seeds)
    args = (
        _randn(g, (3, 17, 13), dtype, device, rg),
        _randn(g, (3, 5, 13), dtype, device, rg, scale=13**-0.5),
        _randn(g, (3, 5), dtype, device, rg),
        _keys(3, device),
        0.2,
        0.3,
    )
    yield "stacked-3x17x13x5-p0.3", args


def _linear_leaky_relu_dropout_grad_pre(device, dtype, rg):
    for i, ((M, _, N), p) in enumerate((s, p) for s in LINEAR_SHAPES for p in P_VALUES):
        g = _gen(i)
        args = (_randn(g, (M, N), dtype, device, rg), _randn(g, (M, N), dtype, device, rg), _key(7 + i, i, device), 0.2, p)
        yield f"{M}x{N}-p{p}", args
    g = _gen(99)
    yield (
        "stacked-3x17x5",
        (_randn(g, (3, 17, 5), dtype, device, rg), _randn(g, (3, 17, 5), dtype, device, rg), _keys(3, device), 0.2, 0.3),
    )


def _reparameterize(device, dtype, rg):
    for i, (B, L) in enumerate(LATENT_SHAPES):
        for given_eps in (False, True):
            g = _gen(i)
            eps = _randn(g, (B, L), dtype, device, rg) if given_eps else None
            args = (_randn(g, (B, L), dtype, device, rg), _randn(g, (B, L), dtype, device, rg), eps, _key(3 + i, i, device))
            yield f"{B}x{L}-{'eps' if given_eps else 'drawn'}", args
    g = _gen(99)
    yield (
        "stacked-3x5x16",
        (_randn(g, (3, 5, 16), dtype, device, rg), _randn(g, (3, 5, 16), dtype, device, rg), None, _keys(3, device)),
    )


def _reparameterize_grad_logvar(device, dtype, rg):
    for i, (B, L) in enumerate(LATENT_SHAPES):
        for given_eps in (False, True):
            g = _gen(i)
            eps = _randn(g, (B, L), dtype, device, rg) if given_eps else None
            args = (_randn(g, (B, L), dtype, device, rg), _randn(g, (B, L), dtype, device, rg), eps, _key(3 + i, i, device))
            yield f"{B}x{L}-{'eps' if given_eps else 'drawn'}", args
    g = _gen(99)
    yield (
        "stacked-3x5x16",
        (_randn(g, (3, 5, 16), dtype, device, rg), _randn(g, (3, 5, 16), dtype, device, rg), None, _keys(3, device)),
    )


def _bce_kl_loss(device, dtype, rg):
    for i, (B, D, L) in enumerate(LOSS_SHAPES):
        g = _gen(i)
        args = (
            _randn(g, (B, D), dtype, device, rg, scale=3.0),
            _rand(g, (B, D), dtype, device, rg),
            _randn(g, (B, L), dtype, device, rg),
            _randn(g, (B, L), dtype, device, rg),
        )
        yield f"{B}x{D}x{L}", args


def _bce_kl_loss_backward(device, dtype, rg):
    for i, (B, D, L) in enumerate(LOSS_SHAPES):
        g = _gen(i)
        # dL/d(loss) is float32 whatever the inputs' dtype, as the op's own backward passes it.
        args = (
            _rand(g, (B,), torch.float32, device, rg),
            _randn(g, (B, D), dtype, device, rg, scale=3.0),
            _rand(g, (B, D), dtype, device, rg),
            _randn(g, (B, L), dtype, device, rg),
            _randn(g, (B, L), dtype, device, rg),
        )
        yield f"{B}x{D}x{L}", args


# The two draws are deterministic for a fixed key, so opcheck's repeated runs must agree.
def _eager_keep_mask(device, dtype, rg):
    for shape in ([1], [47, 5], [3, 1, 7], [0, 4]):
        for p in P_VALUES + (0.9,):
            yield f"{'x'.join(map(str, shape))}-p{p}", (_key(11, 2, device), shape, p)


def _eager_normal(device, dtype, rg):
    for shape in ([1], [47, 5], [3, 1, 7], [0, 4]):
        yield "x".join(map(str, shape)), (_key(11, 2, device), shape)


def _fused_adam_(device, dtype, rg):
    shapes = ((1,), (47,), (5, 3), ())
    for found_inf in (None, 0.0, 1.0):
        for copy_dtype in (None, torch.bfloat16, torch.float16):  # mixed precision: bf16 or fp16 working copies
            g = _gen(0)
            params = [_randn(g, s, torch.float32, device) for s in shapes]
            grads = [_randn(g, s, copy_dtype or torch.float32, device) for s in shapes]
            exp_avgs = [_randn(g, s, torch.float32, device, scale=0.1) for s in shapes]
            exp_avg_sqs = [_rand(g, s, torch.float32, device) for s in shapes]
            steps = [torch.full((), 3.0, device=device) for _ in shapes]
            copies = [p.to(copy_dtype) for p in params] if copy_dtype else []
            inf = None if found_inf is None else torch.tensor(found_inf, device=device)
            args = (params, grads, exp_avgs, exp_avg_sqs, steps, torch.tensor(1e-2, device=device), 0.9, 0.999, inf, copies)
            yield f"found_inf={found_inf}-copies={copy_dtype}", args


def _stacked_matmul(device, dtype, rg):
    # 3 replicas: a batched part and a full-width rest at 2 threads, one batched matmul at 1 (opcheck calls the
    # op directly; the wrapper calls it only where the replicas do not divide by the threads).
    g = _gen(5)
    yield "3x17x13x5", (_randn(g, (3, 17, 13), dtype, device, rg), _randn(g, (3, 13, 5), dtype, device, rg))
    a = _randn(g, (3, 13, 17), dtype, device)
    yield "transposed", (a.transpose(1, 2).requires_grad_(rg), _randn(g, (3, 13, 5), dtype, device, rg))


def _lerp_(device, dtype, rg):
    g = _gen(6)
    shapes = ((1,), (47,), (3, 5, 2))
    shadows, params = [_randn(g, s, dtype, device) for s in shapes], [_randn(g, s, dtype, device) for s in shapes]
    yield "three", (shadows, params, [torch.tensor(0.1, device=device)] * len(shapes))


@dataclass(frozen=True)
class OpSamples:
    make: Callable  # (device, dtype, requires_grad) -> iterable of (id, args)
    dtypes: tuple = (None,)  # None: the op takes no floating-point data (or only float32)
    differentiable: bool = False  # has a registered autograd formula: also checked with requires_grad inputs
    triton_branch: bool = False  # its body launches Triton kernels where Triton runs
    cpu_only: bool = False  # registered for the CPU alone


FLOAT = (torch.float32, torch.float16)
SAMPLES: dict[str, OpSamples] = {
    "linear_leaky_relu_dropout": OpSamples(_linear_leaky_relu_dropout, FLOAT, True, True),
    # The backward helpers have no autograd formula of their own (no double backward): requires_grad off.
    "linear_leaky_relu_dropout_grad_pre": OpSamples(_linear_leaky_relu_dropout_grad_pre, FLOAT, False, True),
    "reparameterize": OpSamples(_reparameterize, FLOAT, True, True),
    "reparameterize_grad_logvar": OpSamples(_reparameterize_grad_logvar, FLOAT, False, True),
    "bce_kl_loss": OpSamples(_bce_kl_loss, FLOAT, True, True),
    "bce_kl_loss_backward": OpSamples(_bce_kl_loss_backward, FLOAT, False, True),
    "eager_keep_mask": OpSamples(_eager_keep_mask),
    "eager_normal": OpSamples(_eager_normal),
    "fused_adam_": OpSamples(_fused_adam_),
    "stacked_matmul": OpSamples(_stacked_matmul, (torch.float32, torch.bfloat16), True, cpu_only=True),
    "lerp_": OpSamples(_lerp_, (torch.float32,), cpu_only=True),
}


def _cases():
    for device in DEVICES:
        for name, entry in SAMPLES.items():
            if entry.cpu_only and device != "cpu":
                continue
            for dtype in entry.dtypes:
                for rg in (False, True) if entry.differentiable else (False,):
                    dtype_id = str(dtype).removeprefix("torch.") if dtype is not None else "fixed-dtypes"
                    yield pytest.param(
                        device,
                        name,
                        dtype,
                        rg,
                        id=f"{device}-{name}-{dtype_id}-{'grad' if rg else 'nograd'}",
                        marks=[pytest.mark.gpu] if device == "cuda" else [],
                    )


# ---- every op is covered -------------------------------------------------------------------------

PACKAGE = Path(fastgen.__file__).resolve().parent
_DEFINITION = re.compile(r"""["']fastgen::(\w+)["']""")


def _fastgen_ops() -> set[str]:
    """Every `fastgen::` op: the names the sources spell out (their modules imported, so the ops are
    registered) and every `fastgen::` op the dispatcher knows."""
    names = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        found = _DEFINITION.findall(path.read_text(encoding="utf-8"))
        if found:
            module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
            importlib.import_module(module.removesuffix(".__init__"))
            names.update(found)
    names.update(n.split("::", 1)[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fastgen::"))
    return names


def test_every_fastgen_op_has_opcheck_samples():
    ops = _fastgen_ops()
    missing = sorted(ops - SAMPLES.keys())
    assert not missing, f"fastgen:: ops without opcheck sample inputs in tests/test_opcheck.py SAMPLES: {missing}"
    stale = sorted(SAMPLES.keys() - ops)
    assert not stale, f"SAMPLES names ops that no longer exist: {stale}"
    for name in ops:
        assert hasattr(torch.ops.fastgen, name), f"fastgen::{name} is named in the sources but not registered"


# ---- opcheck -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device, name, dtype, requires_grad", list(_cases()))
def test_opcheck(backend, device, name, dtype, requires_grad):
    entry = SAMPLES[name]
    op = getattr(torch.ops.fastgen, name).default
    test_utils = ALL_TESTS
    if entry.triton_branch and device == "cpu" and backend == "triton":
        # Under TRITON_INTERPRET=1, torch.library.wrap_triton returns the interpreted kernel itself rather
        # than the traceable launch (a higher-order op) it returns for a compiled kernel, so AOTDispatcher's
        # functional decomposition of the triton_op would launch the numpy interpreter on tensors without
        # data. Nothing compiles the interpreted kernels; on CUDA this sub-test runs.
        test_utils = tuple(t for t in ALL_TESTS if t != "test_aot_dispatch_dynamic")
    samples = list(entry.make(device, dtype, requires_grad))
    assert samples
    for sample_id, args in samples:
        try:
            torch.library.opcheck(op, args, test_utils=test_utils)
        except Exception as error:
            raise AssertionError(
                f"opcheck failed for fastgen::{name} sample {sample_id} "
                f"(backend {backend}, {device}, {dtype}, requires_grad={requires_grad})"
            ) from error


# ---- fused_adam_'s declared mutation -------------------------------------------------------------

ADAM_MUTATES = {"params", "exp_avgs", "exp_avg_sqs", "steps", "copies"}


def test_fused_adam_declares_exactly_the_arguments_it_writes():
    schema = torch.ops.fastgen.fused_adam_.default._schema
    declared = {a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write}
    assert declared == ADAM_MUTATES
    # ...and those are exactly the arguments a call changes (opcheck's schema test catches an argument
    # written but not declared; this also catches one declared but never written).
    for _, args in _fused_adam_("cpu", None, False):
        names = [a.name for a in schema.arguments]
        before = {n: _clone(v) for n, v in zip(names, args)}
        fused_adam_(*args)
        changed = {n for n, v in zip(names, args) if not _equal(before[n], v)}
        found_inf, copies = args[-2:]
        skipped = found_inf is not None and found_inf.item() != 0
        assert changed == (set() if skipped else ADAM_MUTATES - ({"copies"} if not copies else set())), (found_inf, changed)
        assert all(torch.equal(c, p.to(c.dtype)) for c, p in zip(copies, args[0]))  # each copy is its parameter, cast


def _clone(v):
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, list):
        return [t.clone() for t in v]
    return v


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, list):
        return all(torch.equal(x, y) for x, y in zip(a, b))
    return a == b


# The same update with `steps` left out of the declaration: opcheck must reject it.
@torch.library.custom_op("fastgen_tests::fused_adam_undeclared_steps", mutates_args=("params", "exp_avgs", "exp_avg_sqs"))
def _adam_undeclared_steps(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    found_inf: torch.Tensor | None,
    copies: list[torch.Tensor],
) -> None:
    torch.ops.fastgen.fused_adam_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, found_inf, copies)


@_adam_undeclared_steps.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, found_inf, copies) -> None:
    return None


def test_opcheck_catches_an_undeclared_mutation():
    _, args = next(iter(_fused_adam_("cpu", None, False)))
    with pytest.raises(Exception, match="steps is not defined as mutable but was mutated"):
        torch.library.opcheck(_adam_undeclared_steps, args, test_utils="test_schema")


def test_fused_adam_on_several_parameters_matches_torch_adam():
    """The op itself over a list of odd-shaped parameters: torch.optim.Adam's numbers, step by step."""
    gen = torch.Generator().manual_seed(0)
    shapes = ((1,), (47,), (5, 3), ())
    ours = [torch.randn(s, generator=gen) for s in shapes]
    theirs = [torch.nn.Parameter(p.clone()) for p in ours]
    exp_avgs, exp_avg_sqs = [torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours]
    steps = [torch.zeros(()) for _ in ours]
    reference = torch.optim.Adam(theirs, lr=3e-2, betas=(0.5, 0.999), eps=1e-8)
    for _ in range(3):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        fused_adam_(ours, grads, exp_avgs, exp_avg_sqs, steps, torch.tensor(3e-2), 0.5, 0.999, None, [])
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        reference.step()
        for a, b in zip(ours, theirs):
            assert torch.allclose(a, b.detach(), rtol=1e-6, atol=1e-7)
    assert all(s.item() == 3 for s in steps)


# ---- float64 gradcheck of the registered autograd formulas ---------------------------------------
# kernels="triton" makes the functionals call the `fastgen::` ops; the autouse eager CPU backend runs
# their bodies on the reference math (the Triton kernels take fp16/bf16/fp32 only), so what gradcheck
# differentiates is the op's registered backward, not plain PyTorch autograd. tests/test_ops.py checks
# the plain-PyTorch path (kernels="auto" on the CPU).


def _autograd_nodes(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


def _uses_op(t: torch.Tensor, name: str) -> bool:
    return any(f"fastgen_{name}_default" in n for n in _autograd_nodes(t))


def _leaves(gen, *shapes, requires_grad=True):
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_(requires_grad) for s in shapes]


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("frozen_weight", [False, True])
def test_linear_leaky_relu_dropout_gradcheck_through_the_op(p, bias, frozen_weight):
    gen = torch.Generator().manual_seed(int(p * 10) + 2 * bias + 4 * frozen_weight)
    x, w, b = _leaves(gen, (6, 7), (5, 7), (5,))
    w.requires_grad_(not frozen_weight)
    seed = torch.tensor([11, 3])  # a fixed key: the same mask on every call

    def f(x, w, *b):
        return linear_leaky_relu_dropout(x, w, *b, negative_slope=0.2, p=p, seed=seed, kernels="triton")

    inputs = (x, w, b) if bias else (x, w)
    y = f(*inputs)
    assert _uses_op(y, "linear_leaky_relu_dropout")
    if p > 0:
        assert (y == 0).any(), "the fixed mask should drop something"
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("eps_given", [True, False], ids=["given-eps", "drawn-eps"])
def test_reparameterize_gradcheck_through_the_op(eps_given):
    gen = torch.Generator().manual_seed(5)
    mu, logvar, eps = _leaves(gen, (4, 3), (4, 3), (4, 3))
    seed = torch.tensor([2, 9])

    def f(mu, logvar, *eps):
        return reparameterize(mu, logvar, eps=eps[0] if eps else None, seed=seed, kernels="triton")

    inputs = (mu, logvar, eps) if eps_given else (mu, logvar)
    z = f(*inputs)
    assert _uses_op(z, "reparameterize")
    if not eps_given:  # the drawn noise is a fixed function of the key
        assert torch.equal(z, f(*inputs))
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_bce_kl_loss_gradcheck_through_the_op(reduction):
    gen = torch.Generator().manual_seed(8)
    logits, mu, logvar = _leaves(gen, (3, 5), (3, 2), (3, 2))
    target = torch.rand(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(logits, target, mu, logvar):
        return bce_kl_loss(logits, target, mu, logvar, reduction=reduction, kernels="triton")

    loss = f(logits, target, mu, logvar)
    assert _uses_op(loss, "bce_kl_loss")
    # The op computes the loss in float32 whatever its inputs' dtype (its contract), so float64 inputs
    # get a float32-accurate function: finite differences with gradcheck's default step (1e-6) would
    # measure rounding. A step of 1e-3 with 1e-3 tolerances is what float32 supports; a wrong formula
    # (a factor, a sign, a missing term) is still off by O(1).
    assert torch.autograd.gradcheck(f, (logits, target, mu, logvar), eps=1e-3, atol=1e-3, rtol=1e-3)
