"""bench/step_floor.py: its list of the GAN step's matmuls is the one autograd runs, and it reports the parts."""

from collections import Counter

import torch

from bench import step_floor
from fastgen.config import TrainConfig
from fastgen.training.trainers import GANTrainer


def test_the_listed_matmuls_are_the_ones_a_gan_step_runs():
    torch.manual_seed(0)
    config = TrainConfig(model="gan", batch_size=8, kernels="eager").resolved()
    trainer = GANTrainer(config, torch.device("cpu"), None)
    with torch.profiler.profile(record_shapes=True) as prof:
        trainer.step(torch.rand(8, 784) * 2 - 1)
    ran = Counter()
    for event in prof.events():
        if event.name == "aten::mm":
            (m, k), (_, n) = event.input_shapes[:2]
            ran[(m, k, n)] += 1
        elif event.name == "aten::addmm":
            (m, k), (_, n) = event.input_shapes[1:3]
            ran[(m, k, n)] += 1
    assert ran == Counter(step_floor.step_matmuls(8))


def test_it_reports_step_matmuls_adam_and_the_rest(capsys):
    result = step_floor.main(["--rounds", "1", "--eager"])
    assert set(result) == {"step", "matmuls", "adam", "rest"} and result["matmuls"] > 0 and result["adam"] > 0
    assert "30 matmuls" in capsys.readouterr().out
