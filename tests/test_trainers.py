"""What each trainer's step computes, beyond its losses: the GAN's generator update does not compute
the discriminator's weight gradients, also through fastgen's custom ops."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastgen.config import TrainConfig
from fastgen.training.trainers import GANTrainer


class MatmulShapes(TorchDispatchMode):
    """The output shapes of every aten.mm run inside the mode (the backward's weight and input gradients)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.mm.default:
            self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("kernels", ["triton", "eager"])  # "triton" on the CPU: the fastgen:: ops' eager bodies
def test_gan_step_computes_each_discriminator_weight_gradient_once(kernels):
    torch.manual_seed(0)
    trainer = GANTrainer(TrainConfig(model="gan", kernels=kernels).resolved(), torch.device("cpu"))
    d_weight_shapes = [
        tuple(p.shape) for name, p in trainer.discriminator.named_parameters() if name.endswith("weight") and p.shape[0] > 1
    ]
    with MatmulShapes() as seen:
        trainer.step(torch.rand(8, 784) * 2 - 1)
    # Once for D's own update; never again for G's update through D.
    assert all(seen.shapes.count(shape) == 1 for shape in d_weight_shapes), seen.shapes
