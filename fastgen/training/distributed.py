"""Data-parallel training under torchrun: one process per device, gradients averaged across ranks.

fastgen's step takes gradients with torch.autograd.grad (so the GAN never computes the frozen half's
weight gradients), which DistributedDataParallel's reducer does not see: it hooks `.backward()`. So the
averaging DDP would do is done here explicitly: one all-reduce of all of an update's gradients, flattened
into one buffer (DDP's buckets, as one bucket), between the gradients and the Adam update.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from fastgen.errors import FastgenError

_RANK_STRIDE = 0x2545F4914F6CDD1D  # an odd 62-bit constant: rank r offsets seeds by r times it
_SEED_MASK = (1 << 62) - 1


@dataclass(frozen=True)
class Group:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def average_grads(self, grads) -> list[torch.Tensor]:
        """The mean over ranks of each gradient, in one collective."""
        grads = list(grads)
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        return list(_unflatten_dense_tensors(flat, grads))

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out.div_(self.world_size)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any rank (a host sync: called once per log interval)."""
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_choice: str) -> tuple[Group | None, str]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU), or (None, device) alone.

    Returns the group and the device this rank trains on (cuda:LOCAL_RANK under CUDA).
    """
    if not launched_by_torchrun():
        return None, device_choice
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise FastgenError(
                f"torchrun started {world} processes per node but this node has {torch.cuda.device_count()} CUDA devices"
            )
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Group(rank, world, local), (f"cuda:{local}" if use_cuda else "cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def own_random_streams(trainer, seed: int, rank: int, step: int) -> None:
    """Give rank > 0 its own noise and dropout streams; rank 0 keeps the single-process ones.

    Every rank builds the same initial weights from the same seed; after that each must draw
    different noise, or all ranks would generate the same fakes and drop the same units. torch's
    generator is reseeded from (seed, rank, step) and every Philox key's seed is offset by the rank.
    """
    if rank == 0:
        return
    offset = (rank * _RANK_STRIDE) & _SEED_MASK
    torch.manual_seed((seed * _RANK_STRIDE + offset + step) & _SEED_MASK)
    with torch.no_grad():
        for name in trainer.modules:
            for buffer_name, buffer in getattr(trainer, name).named_buffers():
                if buffer_name.endswith("philox_key"):
                    # Keys' seeds are below 2**62 and so is the offset: the sum cannot overflow int64.
                    buffer[0] = (buffer[0] + offset) & _SEED_MASK
        if getattr(trainer, "noise_key", None) is not None:  # the GAN's latent noise
            trainer.noise_key[0] = (trainer.noise_key[0] + offset) & _SEED_MASK
