"""Training through the Python API, on the synthetic MNIST: the losses move as training should."""

import json

import torch

import fastgen
from fastgen.config import TrainConfig
from fastgen.data import DeviceSplit
from fastgen.training.trainers import GANTrainer, VAETrainer


def _losses(trainer, split, batch_size, steps, seed=0):
    """The stats of `steps` training steps, over as many epochs of `split` as that takes."""
    generator = torch.Generator().manual_seed(seed)
    batches = torch.cat([split.epoch_batches(batch_size, generator) for _ in range(-(-steps * batch_size // len(split)) + 1)])
    return torch.stack([trainer.step(split.batch(batches[i])) for i in range(steps)])


def test_vae_loss_goes_down(mnist):
    torch.manual_seed(0)
    config = TrainConfig(model="vae").resolved()
    split = DeviceSplit.load("mnist", "train", "cpu", 0.0, mnist, download=False)
    stats = _losses(VAETrainer(config, torch.device("cpu")), split, 100, 150)
    first, last = stats[:20, 0].mean().item(), stats[-20:, 0].mean().item()
    assert last < 0.7 * first, (first, last)
    assert torch.allclose(stats[:, 0], stats[:, 1] + stats[:, 2], rtol=1e-5)  # loss = bce + kl


def test_gan_discriminator_learns_to_separate(mnist):
    torch.manual_seed(0)
    config = TrainConfig(model="gan").resolved()
    split = DeviceSplit.load("mnist", "train", "cpu", -1.0, mnist, download=False)
    stats = _losses(GANTrainer(config, torch.device("cpu")), split, 32, 100)
    d_loss, g_loss, d_real, d_fake = stats[-20:].mean(0).tolist()
    assert d_loss < 1.38  # below log(4), the loss of a discriminator that cannot tell
    assert d_real > d_fake
    assert torch.isfinite(stats).all()


def test_python_api_train_returns_the_summary(mnist, tmp_path):
    summary = fastgen.train(
        fastgen.TrainConfig(
            model="vae",
            max_steps=20,
            data_dir=str(mnist),
            download=False,
            out=str(tmp_path / "run"),
            device="cpu",
            quiet=True,
            compile=False,
        )
    )
    assert summary["steps"] == 20 and summary["model"] == "vae"
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert isinstance(fastgen.load(tmp_path / "run"), fastgen.VAE)
