"""bench/step_floor.py: the matmuls it replays are the ones a step runs, and it reports the parts."""

from collections import Counter

import pytest
import torch

from bench import step_floor
from fastgen.config import TrainConfig
from fastgen.environment import cpu_has_fast_bf16
from fastgen.training.trainers import GANTrainer


def test_the_profiled_matmuls_are_the_ones_a_gan_step_runs():
    """The profiled list against the one derived by hand from the layer sizes."""
    torch.manual_seed(0)
    config = TrainConfig(model="gan", batch_size=8, kernels="eager").resolved()
    trainer = GANTrainer(config, torch.device("cpu"), None)
    ran = step_floor.profiled_matmuls(trainer, torch.rand(8, 784) * 2 - 1)
    assert {dtype for *_, dtype in ran} == {torch.float32}
    assert Counter((m, k, n) for m, k, n, _ in ran) == Counter(step_floor.step_matmuls(8))


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_it_reports_step_matmuls_adam_and_the_rest(capsys, model):
    result = step_floor.main(["--model", model, "--rounds", "1", "--eager"])
    assert set(result) == {"step", "matmuls", "adam", "rest", "over_floor"} and result["matmuls"] > 0
    # Adam's time is (Adam + matmuls) - matmuls, whose sign one round on a busy machine can flip: check instead that
    # it replays the model's own updates over its parameters (GAN: G and D, 2.95 M; VAE: one, 1.08 M).
    out = capsys.readouterr().out
    assert f"{30 if model == 'gan' else 17} matmuls" in out
    assert ("2 Adam update(s)" if model == "gan" else "1 Adam update(s)") in out
    assert f"({'2.95' if model == 'gan' else '1.08'} M parameters)" in out


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no fast bf16: --amp trains in float32")
def test_with_amp_it_replays_bf16_matmuls(capsys):
    result = step_floor.main(["--model", "vae", "--amp", "--rounds", "1", "--eager"])
    assert result["over_floor"] > 0
    assert "bf16" in capsys.readouterr().out


def _ops_run(step, x) -> set[str]:
    with torch.profiler.profile() as prof:
        step(x)
    return {event.name for event in prof.events()}


def test_torch_adam_runs_the_step_with_torch_update_and_leaves_the_native_one_in_place(capsys):
    """--torch-adam's step runs torch's fused Adam (not the native kernel) and puts the native update back after each
    call, so the step it is compared with keeps its own."""
    config = TrainConfig(model="gan", batch_size=8, kernels="native").resolved()
    trainer = GANTrainer(config, torch.device("cpu"), None)
    optimizers = list(trainer.optimizers.values())
    if not all(opt.native for opt in optimizers):
        pytest.skip("no native kernels here: nothing to compare with")
    x = torch.rand(8, 784) * 2 - 1
    torch_update_step = step_floor._with_torch_update(trainer.step, optimizers)
    ran = _ops_run(torch_update_step, x)
    assert "aten::_fused_adam_" in ran and "fastgen_native::adam_" not in ran
    assert all(opt.native for opt in optimizers)
    ran = _ops_run(trainer.step, x)
    assert "fastgen_native::adam_" in ran and "aten::_fused_adam_" not in ran
    # The copy that --torch-adam compiles is the step under a code object of its own (torch.compile caches per code).
    again = step_floor._separate_copy(GANTrainer.step)
    assert again.__code__ is not GANTrainer.step.__code__ and again.__code__.co_code == GANTrainer.step.__code__.co_code
    assert again.__get__(trainer)(x).shape == trainer.step(x).shape

    result = step_floor.main(["--model", "vae", "--rounds", "1", "--eager", "--torch-adam"])
    assert result["torch_adam_step"] > 0 and result["native_update_speedup"] > 0
    assert "The same step with torch's update" in capsys.readouterr().out
