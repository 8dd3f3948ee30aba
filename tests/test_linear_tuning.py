"""The fused linear's implementation chosen by measurement (fastgen/ops/linear_tuning.py): the fastest candidate
kept, measured once per case and never while tracing, remembered on disk per GPU and versions (a corrupt or
foreign file ignored and rewritten), and every choice drawing the same Philox mask. Timings are injected: these
tests count measurements and launches, they do not time anything."""

import json
import sys

import pytest
import torch

from fastgen.ops import cpu_backend, linear_leaky_relu_dropout, linear_tuning
from fastgen.ops.dispatch import HAS_TRITON, TRITON_INTERPRET
from fastgen.ops.rng import keep_mask

pytestmark = pytest.mark.skipif(not (HAS_TRITON and TRITON_INTERPRET), reason="needs the Triton interpreter (TRITON_INTERPRET=1)")
op_module = sys.modules["fastgen.ops.linear_leaky_relu_dropout"]
CPU = torch.device("cpu")
CASE = linear_tuning.LinearCase(0, 32, 256, 100, "fp32", True, True, "ieee", True)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A fresh cache folder and no choices in memory, as in a new process on a new machine."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(linear_tuning, "_caches", {})
    monkeypatch.setattr(linear_tuning, "_known", {})
    with cpu_backend("triton"):
        yield


def _timer(fastest: str):
    calls = []

    def time_candidate(name):
        calls.append(name)
        return 1.0 if name == fastest else 2.0 + len(calls)

    return time_candidate, calls


def test_the_fastest_candidate_is_kept_measured_once_and_read_back_by_a_new_process(monkeypatch):
    time_candidate, calls = _timer(linear_tuning.CUBLAS)
    assert linear_tuning.tune(CASE, CPU, time_candidate) == linear_tuning.CUBLAS
    assert calls == list(linear_tuning.candidates(CASE))  # every candidate, once
    assert linear_tuning.tune(CASE, CPU, time_candidate) == linear_tuning.CUBLAS
    assert len(calls) == len(linear_tuning.candidates(CASE))  # known: not measured again
    monkeypatch.setattr(linear_tuning, "_caches", {})  # a new process
    monkeypatch.setattr(linear_tuning, "_known", {})
    assert linear_tuning.choice(CASE, CPU) == linear_tuning.CUBLAS
    saved = json.loads(linear_tuning.cache_for(CPU).path.read_text())
    assert saved["identity"] == linear_tuning.identity(CPU) and saved["choices"] == {CASE.key(): linear_tuning.CUBLAS}


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", json.dumps({"identity": {"gpu": "another GPU"}, "choices": {CASE.key(): "cublas"}}), ""],
    ids=["corrupt", "not an object", "foreign", "empty"],
)
def test_a_corrupt_or_foreign_cache_file_is_ignored_and_rewritten(monkeypatch, content):
    path = linear_tuning.cache_for(CPU).path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    monkeypatch.setattr(linear_tuning, "_caches", {})
    monkeypatch.setattr(linear_tuning, "_known", {})
    assert linear_tuning.choice(CASE, CPU) is None
    time_candidate, calls = _timer(linear_tuning.CUBLAS)
    linear_tuning.tune(CASE, CPU, time_candidate)
    assert calls  # measured again
    assert json.loads(path.read_text())["choices"] == {CASE.key(): linear_tuning.CUBLAS}


def test_a_remembered_name_that_is_no_longer_a_candidate_is_measured_again(monkeypatch):
    linear_tuning.cache_for(CPU).put(CASE.key(), "m999n1k1w1s1")
    assert linear_tuning.choice(CASE, CPU) is None


def test_nothing_is_measured_on_the_cpu_under_tracing_or_on_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert not linear_tuning.can_measure(torch.ones(2))
    with FakeTensorMode():
        assert not linear_tuning.can_measure(torch.ones(2))
    assert linear_leaky_relu_dropout.__module__  # the functional op is importable beside its module
    assert op_module.tune(torch.randn(8, 4), torch.randn(8), 3, 0.3) == {}  # a trainer's warm-up on the CPU


def _call(x, w, b, key):
    return linear_leaky_relu_dropout(x, w, b, negative_slope=0.2, p=0.3, seed=key)


def test_an_eager_call_measures_its_case_once_then_launches_the_choice(monkeypatch):
    """Where measuring is possible (a GPU; here pretended), the first call of a shape times every candidate; later
    calls of that shape launch the choice (here cuBLAS + epilogue) without measuring; a new shape is measured."""
    timed, matmuls = [], []
    monkeypatch.setattr(linear_tuning, "can_measure", lambda *tensors: True)
    monkeypatch.setattr(op_module, "_time", lambda launch: timed.append(launch()) or (0.0 if len(timed) % 2 == 0 else 1.0))
    cublas = op_module._matmul_with_bias
    monkeypatch.setattr(op_module, "_matmul_with_bias", lambda *a: matmuls.append(1) or cublas(*a))
    w, b, key = torch.randn(24, 10), torch.randn(24), torch.tensor([3, 1])
    _call(torch.randn(5, 10), w, b, key)
    measured = len(linear_tuning.candidates(op_module._linear_case(torch.randn(5, 10), w, b, 0.3)))
    assert len(timed) == measured  # one timing per candidate, on real tensors
    launched = len(matmuls)
    for _ in range(3):
        _call(torch.randn(5, 10), w, b, key)
    assert len(timed) == measured and len(matmuls) == launched + 3  # the choice (cuBLAS: measured faster), no timing
    _call(torch.randn(6, 10), w, b, key)
    assert len(timed) == 2 * measured  # another shape is another case


def test_tracing_never_measures(monkeypatch):
    """What Inductor does to the registered op's body (run it on fake tensors) and a body run while torch.compile
    traces: no timing, the choice left to the autotuned kernel (None) where none is remembered."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    timed, launched = [], []
    monkeypatch.setattr(op_module, "_time", lambda launch: timed.append(1) or 1.0)
    monkeypatch.setattr(op_module, "_launch", lambda name, case, x, *rest: launched.append(name) or x)
    monkeypatch.setattr(linear_tuning, "can_measure", linear_tuning.not_tracing)  # as if these were CUDA tensors
    args = (torch.randn(5, 10), torch.randn(24, 10), torch.randn(24), torch.tensor([3, 1]), 0.2, 0.3)
    assert linear_tuning.not_tracing(*args[:4])  # eager, real tensors: where a GPU would measure
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        op_module._triton_forward(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    op_module._triton_forward(*args)
    assert timed == [] and launched == [None, None]


@pytest.mark.parametrize("replicas", [0, 3], ids=["single", "stacked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_every_choice_draws_the_same_mask_and_computes_the_same_layer(replicas, dtype):
    """The fused kernel autotuned, at a fixed tile config, and cuBLAS + the epilogue pass: the same dropped
    elements (the Philox stream does not depend on the implementation) and the reference's values."""
    from fastgen.ops.reference import linear_leaky_relu_dropout_reference

    gen = torch.Generator().manual_seed(4)
    lead = (replicas,) if replicas else ()
    x = torch.randn(*lead, 37, 50, generator=gen).to(dtype)
    w, b = torch.randn(*lead, 70, 50, generator=gen).to(dtype), torch.randn(*lead, 70, generator=gen).to(dtype)
    key = torch.tensor([[5, 3], [6, 1], [7, 2]]) if replicas else torch.tensor([5, 3])
    mask = keep_mask(key, (*lead, 37, 70), 0.3)
    if replicas:
        pre = torch.bmm(x.float(), w.float().transpose(1, 2))
    expected = linear_leaky_relu_dropout_reference(x.float(), w.float(), b.float(), 0.2, mask, 0.3)
    if replicas:
        expected = torch.stack(
            [linear_leaky_relu_dropout_reference(x[s].float(), w[s].float(), b[s].float(), 0.2, mask[s], 0.3) for s in range(3)]
        )
        assert pre.shape == expected.shape
    case = op_module._linear_case(x, w, b, 0.3)
    for name in [None, *linear_tuning.candidates(case)]:
        y = op_module._launch(name, case, x, w, b, key, 0.2, 0.3)
        assert torch.equal(y != 0, mask.bool() & (expected != 0)), name
        torch.testing.assert_close(y.float(), expected, **({} if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)))


def test_the_triton_apis_the_launch_and_the_timer_use_exist():
    """The chosen config is launched through the autotuned kernel's own jitted function with its config as keyword
    arguments, and timed with triton.testing.do_bench: public APIs of Triton 3.6 (the GPU machines') and 3.8."""
    import inspect

    import triton.testing

    from fastgen.ops.triton.linear_leaky_relu_dropout import linear_leaky_relu_dropout_fwd_kernel as kernel

    assert {"warmup", "rep", "return_mode"} <= set(inspect.signature(triton.testing.do_bench).parameters)
    assert callable(kernel.fn.__getitem__) and kernel.fn.arg_names[0] == "x_ptr"
    for config in kernel.configs:
        assert {"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"} == set(config.kwargs) and config.num_warps and config.num_stages


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_a_trainers_warm_up_measures_every_case_its_step_launches(monkeypatch, model):
    """`Trainer.tune_kernels` before the step is compiled: afterwards the step itself (here eager, interpreted, as if on
    a GPU) finds every fused linear's case measured and measures nothing more."""
    from fastgen.config import TrainConfig
    from fastgen.training.trainers import TRAINERS

    timed = []
    monkeypatch.setattr(linear_tuning, "can_measure", linear_tuning.not_tracing)  # as if these were CUDA tensors
    monkeypatch.setattr(op_module, "_time", lambda launch: timed.append(1) or float(len(timed) % 3))
    torch.manual_seed(0)
    batch = 4
    trainer = TRAINERS[model](TrainConfig(model=model, batch_size=batch, kernels="triton").resolved(), CPU)
    choices = trainer.tune_kernels(batch, torch.float32)
    layers = {"gan": [(100, 256), (256, 512), (512, 1024), (784, 1024), (1024, 512), (512, 256)], "vae": None}[model]
    if layers:  # G's three hidden layers at B rows, D's three at 2B and at B
        rows = [batch] * 3 + [2 * batch] * 3 + [batch] * 3
        expected = {f"0x{m}x{n}x{k}" for m, (k, n) in zip(rows, layers[:3] + layers[3:] + layers[3:])}
        assert {key.split("-")[0] for key in choices} == expected
    measured = len(timed)
    assert measured and all(choices.values())
    low = -1.0 if model == "gan" else 0.0
    trainer.step(torch.rand(batch, 784) * (1 - low) + low)
    assert len(timed) == measured  # the step's calls were all measured before it ran


def test_a_case_with_symbolic_sizes_has_no_choice():
    """A step traced for any batch size (dynamic shapes) sees M as a symbol: no choice, the autotuned kernel."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    linear_tuning.cache_for(CPU).put(CASE.key(), linear_tuning.CUBLAS)
    assert linear_tuning.choice(CASE, CPU) == linear_tuning.CUBLAS
    symbol = ShapeEnv().create_unbacked_symint()
    assert linear_tuning.choice(CASE._replace(M=symbol), CPU) is None
