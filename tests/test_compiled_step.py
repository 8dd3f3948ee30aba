"""The compiled (and, on CUDA, graph-captured) training step computes what the eager step computes."""

import pytest
import torch

from fastgen.config import TrainConfig
from fastgen.data import DeviceSplit
from fastgen.training.compiled_step import CompiledStep, GraphedStep, build_step, describe
from fastgen.training.optim import DeviceLossScaler, StepAdam
from fastgen.training.trainers import GANTrainer, VAETrainer

TRAINERS = {"gan": GANTrainer, "vae": VAETrainer}
cuda_only = pytest.mark.gpu


def _run(model, device, mnist, steps, compile=False, cuda_graphs=False, amp_dtype=None):
    torch.manual_seed(0)
    config = TrainConfig(model=model).resolved()
    split = DeviceSplit.load("mnist", "train", device, -1.0 if model == "gan" else 0.0, mnist, download=False)
    trainer = TRAINERS[model](config, device, amp_dtype)
    notices = []
    step = build_step(trainer.step, device, compile, cuda_graphs, notices.append)
    batches = split.epoch_batches(config.batch_size, torch.Generator(device=device).manual_seed(0))
    losses = torch.stack([step(split.batch(batches[i])) for i in range(steps)])
    return losses.cpu(), describe(step), notices, trainer


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_compiled_step_matches_eager_over_20_steps(mnist, model):
    """Same seed: compiled and eager losses agree within 1% over 20 steps. Step 1 agrees to float32
    rounding; the adversarial updates then amplify reassociation differences (about 2e-3 by step 20).

    Inductor draws torch.randn from its own generator unless told to fall back to torch's; with the
    fallback both runs see the same noise, so any difference is the compiled arithmetic.
    """
    torch._dynamo.reset()
    eager, _, _, _ = _run(model, torch.device("cpu"), mnist, 20)
    with torch._inductor.config.patch(fallback_random=True):
        compiled, path, notices, _ = _run(model, torch.device("cpu"), mnist, 20, compile=True)
    assert notices == [] and path["compile"], notices
    assert torch.allclose(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(compiled, eager, rtol=1e-2, atol=1e-3), (compiled - eager).abs().max()


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_training_step_has_no_graph_break(mnist, model, amp_dtype):
    torch._dynamo.reset()
    torch.manual_seed(0)
    trainer = TRAINERS[model](TrainConfig(model=model).resolved(), torch.device("cpu"), amp_dtype)
    x = torch.rand(trainer.__class__ is GANTrainer and 32 or 100, 784)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        explanation = torch._dynamo.explain(trainer.step)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_a_step_that_cannot_compile_falls_back_to_eager_with_one_notice():
    torch._dynamo.reset()
    notices = []

    def step(x):
        torch._dynamo.graph_break()  # stands for anything Dynamo cannot trace: fullgraph must refuse it
        return x.sum()

    compiled = CompiledStep(step, notices.append)
    x = torch.ones(3)
    assert compiled(x).item() == 3.0 and compiled(x).item() == 3.0
    assert len(notices) == 1 and "without compilation" in notices[0]
    assert describe(compiled) == {"compile": False, "cuda_graphs": False}


def test_the_compiled_step_traces_autograd_and_leaves_dynamos_settings_as_it_found_them():
    """Its autograd.grad is traced (fullgraph would refuse it otherwise: one notice, eager), the switch is set
    only around each call, and later calls (guards skipped) still compute the step."""
    torch._dynamo.reset()
    notices = []
    w = torch.tensor([2.0], requires_grad=True)

    def step(x):
        (grad,) = torch.autograd.grad((w * x).sum(), [w])
        return grad

    compiled = CompiledStep(step, notices.append)
    before = torch._dynamo.config.trace_autograd_ops
    for value in (1.0, 2.0, 3.0):
        assert compiled(torch.full((3,), value)).item() == 3 * value
    assert notices == [] and compiled.compiled_once and torch._dynamo.config.trace_autograd_ops == before


@pytest.mark.parametrize(
    "error, says",
    [
        (RuntimeError(), "(RuntimeError)"),
        (ValueError("first line\nsecond line"), "(ValueError: first line)"),
        (ValueError("x" * 500), "(ValueError: " + "x" * 200 + ")"),
    ],
)
def test_fallback_notices_stay_one_line_whatever_the_exception_says(monkeypatch, error, says):
    def compiled(x):
        raise error

    monkeypatch.setattr(torch, "compile", lambda step, **options: compiled)  # a compiler failing this way
    notices = []
    step = build_step(lambda x: x.sum(), torch.device("cpu"), compile=True, cuda_graphs=False, notice=notices.append)
    assert step(torch.ones(3)).item() == 3.0 and step(torch.ones(3)).item() == 3.0
    assert notices == [f"torch.compile failed {says}; training continues without compilation"]
    assert describe(step) == {"compile": False, "cuda_graphs": False}


def test_cuda_graphs_are_not_applied_on_cpu():
    step = build_step(lambda x: x, torch.device("cpu"), compile=False, cuda_graphs=True, notice=print)
    assert not isinstance(step, GraphedStep)


def test_loss_scaler_skips_non_finite_steps_and_backs_off():
    p = torch.nn.Parameter(torch.ones(3))
    adam = StepAdam([p], 0.1, (0.9, 0.999), torch.device("cpu"), fused=True)
    scaler = DeviceLossScaler(torch.device("cpu"), init_scale=4.0)
    adam.step(*scaler.grads((p * torch.tensor([1.0, float("inf"), 1.0])).sum(), [p]))
    assert torch.equal(p.data, torch.ones(3)) and scaler.scale.item() == 2.0 and adam.steps[0].item() == 0
    grads, found_inf = scaler.grads((2 * p).sum(), [p])
    assert torch.equal(grads[0], torch.full((3,), 2.0)) and found_inf.item() == 0  # unscaled
    adam.step(grads, found_inf)
    assert torch.allclose(p.data, torch.full((3,), 0.9)) and adam.steps[0].item() == 1


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "multi-tensor"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_step_adam_matches_torch_adam(fused, compiled):
    """Both update paths, called directly or inside torch.compile(fullgraph=True), are torch's Adam."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 4))
    b = torch.nn.Parameter(a.detach().clone())
    ours = StepAdam([a], 1e-2, (0.5, 0.999), torch.device("cpu"), fused=fused)
    update = torch.compile(ours.step, fullgraph=True) if compiled else ours.step
    theirs = torch.optim.Adam([b], lr=1e-2, betas=(0.5, 0.999))
    for _ in range(5):
        g = torch.randn(5, 4)
        update([g])
        b.grad = g.clone()
        theirs.step()
    assert torch.allclose(a, b, atol=1e-6)
    assert ours.steps[0].item() == 5


def test_fp16_loss_scaling_compiles_without_a_graph_break():
    """The fused update with found_inf (the fp16 path) stays inside one compiled graph and still skips
    a non-finite step."""
    torch._dynamo.reset()
    p = torch.nn.Parameter(torch.ones(3))
    adam = StepAdam([p], 0.1, (0.9, 0.999), torch.device("cpu"), fused=True)
    scaler = DeviceLossScaler(torch.device("cpu"), init_scale=4.0)

    def step(x):
        adam.step(*scaler.grads((p * x).sum(), [p]))

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        explanation = torch._dynamo.explain(step)(torch.tensor([1.0, float("inf"), 1.0]))
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(step, fullgraph=True)
        compiled(torch.tensor([1.0, float("inf"), 1.0]))
        assert torch.equal(p.data, torch.ones(3)) and adam.steps[0].item() == 0
        compiled(torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(p.data, torch.full((3,), 0.9)) and adam.steps[0].item() == 1


@cuda_only
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_graphed_step_matches_eager_on_cuda(mnist, model):
    """As the CPU test above: the same noise (Inductor falls back to torch's generator, which CUDA graphs
    replay safely), step 1 equal to float32 rounding, 1% over 20 steps. On an H200 (torch 2.11,
    2026-11-26) step 1 agreed to 4 digits but not to rounding for either model; the VAE's logged KL differed
    by 1% while its loss agreed to 1e-6, which the KL's old ill-conditioned form would explain (it is
    computed with expm1 since). Not rerun on a GPU since; the GAN's cause is not known."""
    torch._dynamo.reset()
    eager, _, _, _ = _run(model, torch.device("cuda"), mnist, 20)
    with torch._inductor.config.patch(fallback_random=True):
        graphed, path, notices, _ = _run(model, torch.device("cuda"), mnist, 20, compile=True, cuda_graphs=True)
    assert notices == [] and path == {"compile": True, "cuda_graphs": True}, notices
    assert torch.allclose(graphed[0], eager[0], rtol=1e-5, atol=1e-6), (graphed[0].tolist(), eager[0].tolist())
    assert torch.allclose(graphed, eager, rtol=1e-2, atol=1e-3), (graphed - eager).abs().max()


@cuda_only
def test_graph_replays_draw_new_dropout_masks(mnist):
    _, path, _, trainer = _run("gan", torch.device("cuda"), mnist, 6, cuda_graphs=True)
    assert path["cuda_graphs"]
    # Each step advances each discriminator layer's key twice (the D pass and the G pass):
    # 6 steps, 3 of them replays, leave step == 12 on the device.
    assert all(int(layer.philox_key[1]) == 12 for layer in trainer.discriminator.hidden)


@cuda_only
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_amp_trains_on_cuda(mnist, amp_dtype):
    losses, _, notices, _ = _run("gan", torch.device("cuda"), mnist, 20, compile=True, cuda_graphs=True, amp_dtype=amp_dtype)
    assert torch.isfinite(losses).all()
