"""One plain object holding a run's settings, validated before anything heavy happens."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from fastgen.errors import FastgenError

MODELS = ("gan", "vae")
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("bf16", "fp16")
KERNELS = ("auto", "triton", "native", "eager")  # auto: native on the CPU when built, Triton on CUDA, else plain ops
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # name -> torchvision class / folder

# Writing the weights and checkpoint took 250-340 ms (GAN, 47 MB) and 80-120 ms (VAE, 16 MB) on a 2-core
# CPU (README): more than a GPU epoch. 30 s bounds the work a crash can lose; a stop always writes.
SAVE_INTERVAL_S = 30.0

# The moving average of the weights kept by default (--ema): see fastgen/training/ema.py for why it has no warm-up.
EMA_DECAY = 0.999

# Paper-code batch sizes; the GAN's Adam settings are the DCGAN ones (lr 2e-4, beta1 0.5), which
# keep this MLP GAN's discriminator from saturating; the VAE uses Adam's defaults at lr 1e-3.
DEFAULTS = {
    "gan": {"batch_size": 32, "lr": 2e-4, "betas": (0.5, 0.999)},
    "vae": {"batch_size": 100, "lr": 1e-3, "betas": (0.9, 0.999)},
}


@dataclass
class TrainConfig:
    model: Optional[str] = None  # required unless resuming
    epochs: Optional[int] = None  # None: 50
    batch_size: Optional[int] = None  # None: the model's default (GAN 32, VAE 100)
    lr: Optional[float] = None  # None: the model's default (GAN 2e-4, VAE 1e-3)
    betas: Optional[tuple] = None
    seed: int = 0
    seeds: int = 1  # S > 1: a group of S seeds (seed, seed + 1, ...) trained as one, each in OUT/seed_<seed>/
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    download: bool = True
    out: Optional[str] = None  # None: runs/<model>-<timestamp>
    overwrite: bool = False
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bf16"  # CUDA: "bf16", or "fp16" with dynamic loss scaling on the device
    compile: Optional[bool] = None  # None: on, on every device (the compiled CPU step measured ~1.2x eager)
    cuda_graphs: Optional[bool] = None  # None: on for CUDA
    kernels: str = "auto"
    max_steps: Optional[int] = None
    train_images: Optional[int] = None  # None: the whole training split; N: its first N images (quick runs)
    sample_every: int = 10
    quiet: bool = False
    checkpoint_every: Optional[int] = None  # steps between mid-epoch checkpoints
    save_interval: Optional[float] = None  # seconds between weights/checkpoint writes at epoch ends; None: 30
    resume: Optional[str] = None  # a run folder to continue
    ema: Optional[float] = None  # decay of the weights' moving average; None: EMA_DECAY; 0: keep none

    def resolved(self) -> TrainConfig:
        """A validated copy with the model's defaults filled in. Raises FastgenError naming the bad value."""
        if self.model is None:
            raise FastgenError("--model is required (gan or vae), unless --resume names a run")
        if self.model not in MODELS:
            raise FastgenError(f"--model must be one of {MODELS}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise FastgenError(f"--dataset must be one of {tuple(DATASETS)}, got {self.dataset!r}")
        if self.device not in DEVICES:
            raise FastgenError(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise FastgenError(f"--amp-dtype must be one of {AMP_DTYPES}, got {self.amp_dtype!r}")
        if self.kernels not in KERNELS:
            raise FastgenError(f"--kernels must be one of {KERNELS}, got {self.kernels!r}")
        defaults = DEFAULTS[self.model]
        values = asdict(self)
        for key in ("batch_size", "lr", "betas"):
            if values[key] is None:
                values[key] = defaults[key]
        if values["epochs"] is None:
            values["epochs"] = 50
        if values["ema"] is None:
            values["ema"] = EMA_DECAY
        if values["save_interval"] is None:
            values["save_interval"] = SAVE_INTERVAL_S
        values["betas"] = tuple(values["betas"])
        config = TrainConfig(**values)
        _check_int("--epochs", config.epochs, minimum=1)
        _check_int("--batch-size", config.batch_size, minimum=1)
        _check_int("--sample-every", config.sample_every, minimum=1)
        _check_int("--seed", config.seed, minimum=0)
        _check_int("--seeds", config.seeds, minimum=1)
        if config.seeds > 1 and config.amp and config.amp_dtype == "fp16":
            raise FastgenError("--seeds with --amp-dtype fp16: one loss scale would skip every replica's step together; use bf16")
        if config.max_steps is not None:
            _check_int("--max-steps", config.max_steps, minimum=1)
        if config.train_images is not None:
            _check_int("--train-images", config.train_images, minimum=config.batch_size)
        if (
            isinstance(config.save_interval, bool)
            or not isinstance(config.save_interval, (int, float))
            or not config.save_interval >= 0
        ):
            raise FastgenError(f"--save-interval must be a number of seconds >= 0, got {config.save_interval!r}")
        if isinstance(config.ema, bool) or not isinstance(config.ema, (int, float)) or not 0 <= config.ema < 1:
            raise FastgenError(f"--ema must be a decay in [0, 1) (0: no moving average), got {config.ema!r}")
        if config.checkpoint_every is not None:
            _check_int("--checkpoint-every", config.checkpoint_every, minimum=1)
        if not (isinstance(config.lr, (int, float)) and 0 < config.lr < 1):
            raise FastgenError(f"--lr must be in (0, 1), got {config.lr}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def _check_int(flag: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FastgenError(f"{flag} must be an integer >= {minimum}, got {value!r}")
