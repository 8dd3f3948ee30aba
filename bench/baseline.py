"""The plain way to train the paper's models, the yardstick fastgen's speed is measured against.

What a tutorial (and the paper's published code) does: a torchvision DataLoader with
ToTensor/Normalize transforms, eager `nn.Sequential` models with Sigmoid + BCELoss, fresh label
tensors each batch, one optimizer step per batch. Same layer sizes, dropout and batch sizes as fastgen.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torchvision import datasets, transforms


def generator() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(100, 256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, 512),
        nn.LeakyReLU(0.2),
        nn.Linear(512, 1024),
        nn.LeakyReLU(0.2),
        nn.Linear(1024, 784),
        nn.Tanh(),
    )


def discriminator() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(784, 1024),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(1024, 512),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 1),
        nn.Sigmoid(),
    )


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 32))
        self.decoder = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784))

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


def loader(data_dir: str, batch_size: int, model: str) -> torch.utils.data.DataLoader:
    steps = [transforms.ToTensor()] + ([transforms.Normalize((0.5,), (0.5,))] if model == "gan" else [])
    dataset = datasets.MNIST(data_dir, train=True, download=False, transform=transforms.Compose(steps))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)


def gan_steps(data_dir: str, batch_size: int):
    """Yields after each GAN step (D then G), plain style."""
    G, D = generator(), discriminator()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = nn.BCELoss()
    while True:
        for real, _ in loader(data_dir, batch_size, "gan"):
            real = real.view(real.size(0), -1)
            ones, zeros = torch.ones(real.size(0), 1), torch.zeros(real.size(0), 1)
            fake = G(torch.randn(real.size(0), 100))
            opt_d.zero_grad()
            d_loss = criterion(D(real), ones) + criterion(D(fake.detach()), zeros)
            d_loss.backward()
            opt_d.step()
            opt_g.zero_grad()
            g_loss = criterion(D(fake), ones)
            g_loss.backward()
            opt_g.step()
            yield


def vae_steps(data_dir: str, batch_size: int):
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    while True:
        for x, _ in loader(data_dir, batch_size, "vae"):
            x = x.view(x.size(0), -1)
            logits, mu, logvar = model(x)
            bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (bce + kl) / x.size(0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            yield


def serve(model: str, data_dir: str, batch_size: int) -> None:
    """Train in this plain process, as a user's script would, on request: each line "N" on stdin runs
    N steps, then "done" is printed. Lets a benchmark time the baseline outside fastgen's process,
    whose settings (denormal flushing, glibc malloc tuning) would otherwise speed it up too."""
    torch.manual_seed(0)
    stepper = (gan_steps if model == "gan" else vae_steps)(data_dir, batch_size)
    for line in sys.stdin:
        for _ in range(int(line)):
            next(stepper)
        print("done", flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]))
