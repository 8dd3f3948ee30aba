"""fastgen: the paper's MLP GAN and VAE on MNIST, fast on a GPU and correct on a CPU.

The public API. The path of one training batch, top-down:
    fastgen.data (the split on the device) -> fastgen.training.loop (the epoch loop)
    -> fastgen.training.trainers (one step of each model) -> fastgen.models (the networks)
    -> fastgen.ops (the fused ops: Triton kernels on CUDA, eager PyTorch on the CPU)
    -> fastgen.training.run_files (metrics.jsonl, samples, weights) and fastgen.training.checkpoint.
"""

from fastgen import ops
from fastgen.comparison import CompareConfig, compare
from fastgen.config import TrainConfig
from fastgen.errors import DataError, FastgenError
from fastgen.evaluation import evaluate
from fastgen.models import VAE, Discriminator, Generator, LinearLeakyReLUDropout, Reparameterize, load
from fastgen.training import train, tune_for_cpu_training
from fastgen.version import __version__

__all__ = [
    "VAE",
    "CompareConfig",
    "DataError",
    "Discriminator",
    "FastgenError",
    "Generator",
    "LinearLeakyReLUDropout",
    "Reparameterize",
    "TrainConfig",
    "__version__",
    "compare",
    "evaluate",
    "load",
    "ops",
    "train",
    "tune_for_cpu_training",
]
