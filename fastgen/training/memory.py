"""How much memory a group of seeds needs, checked before anything is allocated, so that a group too large for
the device stops with one line instead of an out-of-memory error halfway through building it."""

from __future__ import annotations

import os

import torch

from fastgen.errors import FastgenError

# Per parameter and replica, float32: the weight, its gradient, Adam's two moments, the moving average (the GAN's
# generator only, counted for every network to stay on the safe side), a gradient re-laid for the fused Adam, and
# the replica's slices copied out when its files are written.
BYTES_PER_PARAMETER = 4 * 7
# Per image and hidden unit: the activations a step keeps for its backward and their gradients (float32), with
# room for the discriminator's doubled batch (real and fake in one pass).
BYTES_PER_ACTIVATION = 4 * 6
USABLE_SHARE = 0.8  # of the memory free now: the rest is left to the allocator, the compiler and the data


def replica_bytes(model: str, batch_size: int) -> int:
    """A rough upper estimate of one replica's memory in a group: its training state and one step's activations."""
    from fastgen.training.trainers import TRAINERS

    with torch.random.fork_rng(), torch.device("cpu"):  # built only to count: leaves torch's generator untouched
        networks = [network_class() for network_class in _network_classes(TRAINERS[model].modules)]
    parameters = sum(p.numel() for network in networks for p in network.parameters())
    units = sum(m.out_features for network in networks for m in network.modules() if isinstance(m, torch.nn.Linear))
    return parameters * BYTES_PER_PARAMETER + 2 * batch_size * units * BYTES_PER_ACTIVATION


def _network_classes(names) -> list[type]:
    from fastgen.models import VAE, Discriminator, Generator

    classes = {"generator": Generator, "discriminator": Discriminator, "vae": VAE}
    return [classes[name] for name in names]


def free_bytes(device: torch.device) -> int:
    """Memory free now on the device: the GPU's (CUDA), or the machine's available memory (the CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_group_fits(model: str, replicas: int, batch_size: int, device: torch.device) -> None:
    """Refuse, in one line, a group of seeds whose estimated memory exceeds what the device has free."""
    if replicas <= 1:
        return
    each = replica_bytes(model, batch_size)
    usable = int(free_bytes(device) * USABLE_SHARE)
    if replicas * each > usable:
        raise FastgenError(
            f"--seeds {replicas}: a {model} group needs about {replicas * each / 2**30:.2f} GiB "
            f"({each / 2**20:.0f} MiB a replica at batch {batch_size}) but {device.type} has {usable / 2**30:.2f} GiB "
            f"to spare; at most {max(usable // each, 0)} replicas fit: use fewer seeds"
        )
