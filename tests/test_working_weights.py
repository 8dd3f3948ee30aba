"""--amp's low-precision working copies (fastgen/training/working_weights.py): the step computes with bf16 copies
of the float32 master weights, which Adam updates and the copies follow; nothing changes in float32."""

import pytest
import torch
from torch.func import functional_call

import fastgen
from fastgen.config import TrainConfig
from fastgen.environment import cpu_has_fast_bf16
from fastgen.training import checkpoint
from fastgen.training.optim import DeviceLossScaler, StepAdam
from fastgen.training.trainers import GANTrainer, VAETrainer, apply_update
from fastgen.training.working_weights import WorkingWeights

TRAINERS = {"gan": GANTrainer, "vae": VAETrainer}
CPU = torch.device("cpu")


def _trainer(model: str, amp_dtype=torch.bfloat16, seed: int = 0):
    torch.manual_seed(seed)
    return TRAINERS[model](TrainConfig(model=model, batch_size=16).resolved(), CPU, amp_dtype)


def _batches(model: str, n: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    low = -1.0 if model == "gan" else 0.0
    return [torch.rand(16, 784, generator=gen) * (1 - low) + low for _ in range(n)]


def _masters(trainer) -> list[torch.Tensor]:
    return [p for name in trainer.modules for p in getattr(trainer, name).parameters()]


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_copies_follow_the_float32_masters_after_every_step(model):
    trainer = _trainer(model)
    for x in _batches(model, 3):
        trainer.step(x)
        for working in trainer.working:
            for master, copy in zip(working.masters, working.copies):
                assert master.dtype == torch.float32 and copy.dtype == torch.bfloat16
                assert torch.equal(copy, master.detach().to(torch.bfloat16))
    assert all(m.dtype == torch.float32 for opt in trainer.optimizers.values() for m in opt.exp_avgs + opt.exp_avg_sqs)


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_the_step_equals_autocast_on_the_masters_bit_for_bit(model):
    """Casting each weight at each use (autocast on float32 weights, the step before working copies) and the
    copies give the same bf16 operands and the same float32 gradients: losses and weights agree exactly."""
    with_copies, casting = _trainer(model), _trainer(model)
    casting.working = []
    if model == "gan":
        casting.g_work = casting.d_work = None
    else:
        casting.work = None
    for i, x in enumerate(_batches(model)):
        torch.manual_seed(i)  # the same latent noise for both GANs
        a = with_copies.step(x)
        torch.manual_seed(i)
        assert torch.equal(a, casting.step(x))
    assert all(torch.equal(a, b) for a, b in zip(_masters(with_copies), _masters(casting)))


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_no_weight_is_cast_in_the_forward_or_backward(model):
    """The only float32 -> bf16 conversions of weight-shaped tensors are the copies' refresh after Adam."""
    trainer = _trainer(model)
    shapes = {tuple(p.shape) for p in _masters(trainer) if p.dim() == 2}
    trainer.step(_batches(model)[0])  # warm
    with torch.profiler.profile(record_shapes=True) as prof:
        trainer.step(_batches(model)[1])
    casts = [
        e
        for e in prof.events()
        if e.name == "aten::_to_copy" and e.input_shapes and tuple(e.input_shapes[0]) in shapes and e.input_dtypes[0] == "float"
    ]
    assert casts == []


def test_without_amp_there_are_no_copies_and_the_step_is_unchanged():
    trainer = _trainer("gan", amp_dtype=None)
    assert trainer.working == [] and trainer.g_work is None and trainer.d_work is None
    assert _trainer("vae", amp_dtype=None).working == []


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_a_restored_checkpoint_rewrites_the_copies_from_its_weights(model):
    trained = _trainer(model)
    for x in _batches(model, 2):
        trained.step(x)
    saved = checkpoint.Checkpoint(
        {k: v.clone() for k, v in checkpoint.trainer_tensors(trained).items()}, {"model": model}, [], None
    )
    fresh = _trainer(model, seed=1)
    checkpoint.restore(fresh, saved)
    for a, b in zip(fresh.working, trained.working):
        assert all(torch.equal(x, y) for x, y in zip(a.copies, b.copies))
    x = _batches(model)[3]
    torch.manual_seed(5)  # the GAN's latent noise comes from torch's generator
    after_restore = fresh.step(x)
    torch.manual_seed(5)
    assert torch.equal(after_restore, trained.step(x))


def test_fp16_copies_keep_their_values_when_loss_scaling_skips_a_step():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    working = WorkingWeights(layer, torch.float16)
    opt, scaler = StepAdam(working.masters, 1e-3, (0.9, 0.999), CPU, fused=True), DeviceLossScaler(CPU, init_scale=2.0**16)
    before = [c.clone() for c in working.copies]
    loss = functional_call(layer, working.by_name, (torch.full((2, 4), 1e4, dtype=torch.float16),)).sum()  # overflows
    apply_update(loss, working.copies, opt, scaler, working=working)
    assert all(torch.equal(a, b) for a, b in zip(before, working.copies))
    assert float(scaler.scale) == 2.0**15  # the skip backed the scale off
    loss = functional_call(layer, working.by_name, (torch.ones(1, 4, dtype=torch.float16),)).sum()
    apply_update(loss, working.copies, opt, scaler, working=working)
    assert not torch.equal(before[0], working.copies[0])
    assert torch.equal(working.copies[0], layer.weight.detach().half())


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no fast bf16: --amp trains in float32 here")
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_amp_resume_at_an_epoch_boundary_is_bit_identical(mnist, tmp_path, model):
    settings = dict(model=model, train_images=320, batch_size=32, amp=True, compile=False, quiet=True)
    settings.update(data_dir=str(mnist), download=False, device="cpu")
    fastgen.train(fastgen.TrainConfig(out=str(tmp_path / "straight"), epochs=3, **settings))
    fastgen.train(fastgen.TrainConfig(out=str(tmp_path / "cut"), epochs=1, **settings))
    fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "cut"), epochs=3, quiet=True))
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(a[k].dtype != torch.bfloat16 for k in a)  # the masters are what is saved
    assert all(torch.equal(a[k], b[k]) for k in a)
