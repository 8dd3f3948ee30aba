"""Training a run: `run` (set-up and resume), `loop` (the epoch loop), `trainers` (one step of each model),
`compiled_step` (torch.compile and CUDA graphs), `optim` (Adam on the device), `checkpoint` (exact
resume), `run_files` (what a run writes), `distributed` (torchrun) and `cpu_tuning` (process settings)."""

from fastgen.training.cpu_tuning import tune_for_cpu_training
from fastgen.training.run import train

__all__ = ["train", "tune_for_cpu_training"]
