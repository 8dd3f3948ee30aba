"""The native Adam kernel (`fastgen_native::adam_`, the CPU's update with or without --amp): torch's fused CPU Adam bit for bit
on every element (torch's AVX2 and AVX-512 kernels, whose scalar loop for each tensor's last numel % 8 elements
rounds one step differently, as ours does there), the bf16 copies exactly what a cast gives, the moving average
exactly what `torch._foreach_lerp_` gives, and the same bits on every kernel table and thread count.

Skipped when the library cannot be built here, unless FASTGEN_REQUIRE_NATIVE=1 (as tests/test_native.py).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgen.ops.native as native
from fastgen.config import TrainConfig
from fastgen.training.checkpoint import trainer_tensors
from fastgen.training.trainers import TRAINERS
from tests.test_native import _denormals_kept, kernel_table, native_library, threads  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("native_library")

# torch's generic CPU kernels (no AVX2) round its Adam otherwise: there the two agree within float32 rounding only.
TORCH_VECTOR_KERNELS = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _assert_torch_bits(ours: torch.Tensor, torchs: torch.Tensor, msg=None) -> None:
    if TORCH_VECTOR_KERNELS:
        assert torch.equal(ours, torchs), msg
    else:  # up to about 1% apart there (measured on exp_avg), on the scale of the tensor
        scale = float(torchs.abs().max()) if torchs.numel() else 0.0
        torch.testing.assert_close(ours, torchs, rtol=2e-2, atol=1e-4 * scale, msg=msg)


def _state(shapes, grad_dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "params": [torch.randn(s, generator=g) for s in shapes],
        "grads": [(torch.randn(s, generator=g) * 1e-2).to(grad_dtype) for s in shapes],
        "exp_avgs": [torch.randn(s, generator=g) * 1e-3 for s in shapes],
        "exp_avg_sqs": [torch.rand(s, generator=g) * 1e-5 for s in shapes],
        "steps": [torch.full((), 6.0) for _ in shapes],
        "averages": [torch.randn(s, generator=g) for s in shapes],
    }


def _native_step(state, beta1, lr=2e-4, copies=True, average_weight=0.1):
    """One native update of a copy of `state`; returns the new state and the copies."""
    s = {k: [t.clone() for t in v] for k, v in state.items()}
    out = [torch.empty_like(p, dtype=torch.bfloat16) for p in s["params"]] if copies else []
    weight = torch.tensor(average_weight) if s["averages"] else None
    torch.ops.fastgen_native.adam_(
        s["params"], s["grads"], s["exp_avgs"], s["exp_avg_sqs"], s["steps"], torch.tensor(lr), beta1, 0.999, 1e-8, out,
        s["averages"], weight,
    )  # fmt: skip
    return s, out


def _torch_step(state, beta1, lr=2e-4, average_weight=0.1):
    """The same update by torch: its fused Adam on float32 gradients, then its multi-tensor lerp."""
    s = {k: [t.clone() for t in v] for k, v in state.items()}
    torch._foreach_add_(s["steps"], 1)
    grads = [g.float() for g in s["grads"]]
    torch._fused_adam_(
        s["params"], grads, s["exp_avgs"], s["exp_avg_sqs"], [], s["steps"], lr=torch.tensor(lr), beta1=beta1, beta2=0.999,
        weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
    )  # fmt: skip
    torch._foreach_lerp_(s["averages"], s["params"], [torch.tensor(average_weight)] * len(s["params"]))
    return s


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("beta1", [0.5, 0.9])  # torch's lerp takes its two branches at weights 0.5 and 0.1
@pytest.mark.parametrize("n_threads", [1, 2])
def test_matches_torch_fused_adam_bit_for_bit(grad_dtype, beta1, n_threads):
    """Lengths that torch updates in 16-wide vectors, in 8-wide ones and in its scalar loop. Ours gives the same bits
    on any thread count (the threads take 32K-element chunks of the parameters in turn: (1024, 784) spans 25 of them,
    and one boundary falls inside the scalar-loop tail of (32767,), which starts 3 elements in)."""
    shapes = ((3,), (32767,), (1024, 784), (256,), (16,), (3, 48), (1,), (17,), (1007,), (24, 3))
    state = _state(shapes, grad_dtype)
    with threads(1):
        expected = _torch_step(state, beta1)
    with threads(n_threads):
        for isa in native.supported_isas():
            with kernel_table(isa):
                ours, copies = _native_step(state, beta1)
            for name in ("params", "exp_avgs", "exp_avg_sqs", "steps", "averages"):
                for a, b in zip(ours[name], expected[name]):
                    _assert_torch_bits(a, b, (isa, name, a.shape))
            assert all(torch.equal(c, p.bfloat16()) for c, p in zip(copies, ours["params"])), isa
            assert all(s.item() == 7 for s in ours["steps"])


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
    grad_dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    copies=st.booleans(),
    averaged=st.booleans(),
    beta1=st.sampled_from([0.5, 0.9]),
)
def test_any_lengths_agree_with_torch_and_across_kernel_tables_and_threads(sizes, grad_dtype, copies, averaged, beta1):
    """Any lengths, several tensors in one chunk of the parallel loop: every kernel table and thread count gives the
    same bits, torch's."""
    state = _state([(n,) for n in sizes], grad_dtype)
    if not averaged:
        state["averages"] = []
    results = {}
    for isa in native.supported_isas():
        for n in (1, 2):
            with kernel_table(isa), threads(n):
                results[isa, n] = _native_step(state, beta1, copies=copies)
    (first, (reference, reference_copies)), *others = results.items()
    for where, (ours, ours_copies) in others:
        assert all(torch.equal(a, b) for k in ours for a, b in zip(ours[k], reference[k])), (where, first)
        assert all(torch.equal(a, b) for a, b in zip(ours_copies, reference_copies))
    expected = _torch_step({**state, "averages": state["averages"] or [p.clone() for p in state["params"]]}, beta1)
    for name in ("params", "exp_avgs", "exp_avg_sqs") + (("averages",) if averaged else ()):
        for a, b in zip(reference[name], expected[name]):
            _assert_torch_bits(a, b, name)
    assert all(torch.equal(c, p.bfloat16()) for c, p in zip(reference_copies, reference["params"]))


def test_bf16_copies_round_as_torch_casts():
    """Ties to even, the largest finite floats rounding to infinity, infinities, NaN, signed zeros, subnormals:
    with a learning rate of 0 the parameters stay as they are and the copies are their casts."""
    f32 = torch.tensor(
        [0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0x7F7F8000, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
         0x7FC00000, 0x7F800001, 0xFFC00001, 0x00000000, 0x80000000, 0x00000001, 0x00008000, 0x0000C000, 0x807FFFFF],
        dtype=torch.int64,
    ).to(torch.int32).view(torch.float32)  # fmt: skip
    for isa in native.supported_isas():
        params = [f32.clone()]
        copies = [torch.empty(f32.shape, dtype=torch.bfloat16)]
        with kernel_table(isa):
            torch.ops.fastgen_native.adam_(
                params, [torch.zeros_like(f32)], [torch.zeros_like(f32)], [torch.zeros_like(f32)], [torch.zeros(())],
                torch.tensor(0.0), 0.9, 0.999, 1e-8, copies, [], None,
            )  # fmt: skip
        expected = f32.bfloat16()
        nan = expected.isnan()
        assert torch.equal(copies[0].isnan(), nan), isa
        assert torch.equal(copies[0][~nan].view(torch.int16), expected[~nan].view(torch.int16)), isa


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda a: a.update(copies=[c.float() for c in a["copies"]]), "a copy must be a contiguous CPU BFloat16"),
        (lambda a: a.update(grads=[g.half() for g in a["grads"]]), "a gradient must be a float32 or bfloat16"),
        (lambda a: a.update(exp_avgs=a["exp_avgs"][:1]), "lists of one length"),
        (lambda a: a.update(params=[p.t() for p in a["params"]]), "a parameter must be a contiguous"),
        (lambda a: a.update(average_weight=None), "averages and average_weight come together"),
        (lambda a: a.update(steps=[s.double() for s in a["steps"]]), "a step must be a one-element float32"),
        (lambda a: a["grads"].__setitem__(1, a["grads"][1].half()), "a gradient must be a float32 or bfloat16"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(change, needle):
    """...and change nothing: no step is counted before every argument is checked (the last case fails on the
    second parameter)."""
    state = _state([(4, 3), (3,)], torch.bfloat16)
    args = {
        **{k: state[k] for k in ("params", "grads", "exp_avgs", "exp_avg_sqs", "steps")},
        "lr": torch.tensor(1e-3),
        "beta1": 0.5,
        "beta2": 0.999,
        "eps": 1e-8,
        "copies": [p.bfloat16() for p in state["params"]],
        "averages": state["averages"],
        "average_weight": torch.tensor(0.1),
    }
    change(args)
    steps = [s.clone() for s in args["steps"]]
    with pytest.raises(RuntimeError, match=needle):
        torch.ops.fastgen_native.adam_(*args.values())
    assert all(torch.equal(a, b) for a, b in zip(args["steps"], steps))


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_float32_training_updates_with_it_as_torch_fused_adam_and_lerp_do(model):
    """Without --amp too the CPU's update is the native one (the moving average moved in the same pass): a few steps
    on, the run's state and metrics are the ones torch's fused Adam and lerp give, bit for bit. Under --kernels eager,
    torch's update."""

    def trainer(kernels, native_adam):
        torch.manual_seed(0)
        t = TRAINERS[model](TrainConfig(model=model, kernels=kernels).resolved(), torch.device("cpu"), None)
        for optimizer in t.optimizers.values():
            assert optimizer.native == (kernels == "auto")
            optimizer.native &= native_adam
        return t

    ours, torchs = trainer("auto", True), trainer("auto", False)
    assert not any(optimizer.native for optimizer in trainer("eager", True).optimizers.values())
    g = torch.Generator().manual_seed(1)
    low = -1.0 if model == "gan" else 0.0
    for _ in range(4):
        x = torch.rand(16, 784, generator=g) * (1 - low) + low
        _assert_torch_bits(ours.step(x), torchs.step(x))
    expected, got = trainer_tensors(torchs), trainer_tensors(ours)
    assert got.keys() == expected.keys()
    for name in expected:
        _assert_torch_bits(got[name], expected[name], name)
