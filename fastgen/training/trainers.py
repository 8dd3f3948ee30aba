"""One optimisation step of each model, over device tensors only (no host sync inside a step), and
everything else that differs between the GAN and the VAE: what the data is scaled to, which metrics a
step returns, what is plotted, sampled and saved. The epoch loop knows trainers only through `Trainer`."""

from __future__ import annotations

import contextlib
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fastgen.data import DeviceSplit
from fastgen.evaluation import likelihood
from fastgen.models import VAE, Discriminator, Generator
from fastgen.models.layers import new_philox_key, next_key
from fastgen.models.stacked import stack
from fastgen.models.tuning import tune_fused_linears
from fastgen.ops.rng import normal
from fastgen.training.ema import EMA
from fastgen.training.optim import DeviceLossScaler, StepAdam

GRID_IMAGES = 64  # an 8x8 sample grid


class Trainer(Protocol):
    """What the set-up, the epoch loop and the checkpoint need from a model's trainer."""

    data_low: ClassVar[float]  # images are scaled to [data_low, 1]
    needs_test_split: ClassVar[bool]  # whether `__init__` wants the test split (for per-epoch test metrics)
    metric_names: ClassVar[tuple[str, ...]]  # what `step` returns, in order
    loss_curves: ClassVar[tuple[str, ...]]  # the metrics losses.png plots
    modules: ClassVar[tuple[str, ...]]  # attributes holding the nn.Modules saved in the weights file
    optimizers: dict[str, StepAdam]
    scalers: dict[str, DeviceLossScaler | None]
    reduce_grads: object  # None, or under torchrun the mean of the gradients over ranks
    ema: EMA | None  # the moving average of the sampling network's weights (None: --ema 0)
    seeds: list[int]  # one per replica
    replicas: int | None  # None: one run; S: a group of S seeds stacked along a leading dimension of every tensor

    # A group's `step` takes (S, B, ...) batches and returns (S, metrics); `epoch_metrics` and `sample_grids`
    # return one dict per replica.
    def step(self, batch: torch.Tensor) -> torch.Tensor: ...
    def train(self, mode: bool = True) -> None: ...
    def epoch_metrics(self) -> dict[str, float] | list[dict[str, float]]: ...
    def tune_kernels(self, batch_size: int, dtype: torch.dtype) -> dict[str, str]: ...
    def sample_grids(self) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]: ...


def replica_seeds(config) -> list[int]:
    """The seeds a run trains: `--seed`, and for a group of `--seeds S` the S seeds counted up from it."""
    return list(range(config.seed, config.seed + getattr(config, "seeds", 1)))


def build_replicas(seeds: list[int], build) -> list:
    """`build()` once per seed with torch's generator seeded by it (so replica s starts as the single run with
    seed s starts); a single seed builds one run's networks, several are stacked by the caller."""
    built = []
    for seed in seeds:
        torch.manual_seed(seed)
        built.append(build())
    return built


def _stacked_or_single(networks: list):
    return networks[0] if len(networks) == 1 else stack(networks)


def _per_replica(values: torch.Tensor, replicas: int | None, name: str):
    """A group's (S, ...) tensor as one dict {name: tensor} per replica; a single run's as one dict."""
    return {name: values} if replicas is None else [{name: v} for v in values.unbind(0)]


def _total(loss: torch.Tensor) -> torch.Tensor:
    """The loss to differentiate: a group's replicas' losses summed (each replica's gradient is its own loss's)."""
    return loss if loss.dim() == 0 else loss.sum()


def apply_update(loss: torch.Tensor, optimizer: StepAdam, scaler: DeviceLossScaler | None, reduce_grads=None) -> None:
    """Gradients of `loss` for the optimizer's inputs only (autograd skips everything else), averaged across
    ranks by `reduce_grads` under torchrun (in float32, as the masters), then one Adam update."""
    if scaler is None:
        grads = torch.autograd.grad(loss, optimizer.inputs)
        optimizer.step(grads if reduce_grads is None else reduce_grads([g.float() for g in grads]))
    else:
        optimizer.step(*scaler.grads(loss, optimizer.inputs, reduce_grads))


def weights(module: torch.nn.Module, optimizer: StepAdam) -> dict[str, torch.Tensor] | None:
    """The optimizer's working copies of `module`'s parameters by name (mixed precision), or None: its own."""
    if not optimizer.working:
        return None
    return dict(zip((name for name, _ in module.named_parameters()), optimizer.working, strict=True))


def call(module: torch.nn.Module, module_weights: dict[str, torch.Tensor] | None, *args):
    """`module(*args)`, with `module_weights` in place of its parameters when given (its buffers stay its own)."""
    return module(*args) if module_weights is None else functional_call(module, module_weights, args)


class _VAELoss(torch.nn.Module):
    """The VAE's loss as a module's forward, so that `call` can run it on the working copies."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor):
        return self.vae.loss(x)


def autocast_factory(device: torch.device, amp_dtype: torch.dtype | None):
    """A zero-argument context factory: autocast to `amp_dtype`, or a no-op for None."""
    if amp_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=amp_dtype)


def _optimizer(params, config, device: torch.device, amp_dtype) -> tuple[StepAdam, DeviceLossScaler | None]:
    """Adam for `params` (keeping working copies in `amp_dtype` under mixed precision; on the CPU the native
    update unless --kernels eager asks for plain PyTorch), and a loss scaler for fp16 (whose `found_inf` needs
    the fused update)."""
    fp16 = amp_dtype == torch.float16
    native = config.kernels != "eager"
    adam = StepAdam(params, config.lr, config.betas, device, True if fp16 else None, working_dtype=amp_dtype, native=native)
    return adam, DeviceLossScaler(device) if fp16 else None


def _grid_noise(latent_dim: int, seeds: list[int], device: torch.device) -> torch.Tensor:
    """The fixed latent draws of every sample grid of a run, from their own generator (seed + 1); (S, 64, latent)
    for a group."""
    draws = [torch.randn(GRID_IMAGES, latent_dim, generator=torch.Generator().manual_seed(seed + 1)) for seed in seeds]
    return (draws[0] if len(seeds) == 1 else torch.stack(draws)).to(device)


class GANTrainer:
    """Non-saturating GAN: a D update on real + fake, then a G update through the updated D."""

    data_low = -1.0  # the generator's tanh range
    needs_test_split = False
    metric_names = ("d_loss", "g_loss", "d_real", "d_fake")
    loss_curves = ("d_loss", "g_loss")
    modules = ("generator", "discriminator")

    def __init__(self, config, device: torch.device, amp_dtype: torch.dtype | None = None, test_split: DeviceSplit | None = None):
        self.seeds = replica_seeds(config)
        self.replicas = len(self.seeds) if len(self.seeds) > 1 else None

        def build():
            # The latent noise's (seed, step) key is drawn after the networks, as the layers' dropout keys are.
            return Generator(config.kernels).to(device), Discriminator(config.kernels).to(device), new_philox_key().to(device)

        generators, discriminators, keys = zip(*build_replicas(self.seeds, build))
        self.generator, self.discriminator = _stacked_or_single(generators), _stacked_or_single(discriminators)
        self.noise_key = keys[0] if self.replicas is None else torch.stack(keys)
        self.g_params = list(self.generator.parameters())
        self.d_params = list(self.discriminator.parameters())
        self.opt_g, self.scaler_g = _optimizer(self.g_params, config, device, amp_dtype)
        self.opt_d, self.scaler_d = _optimizer(self.d_params, config, device, amp_dtype)
        self.optimizers = {"generator": self.opt_g, "discriminator": self.opt_d}
        self.g_weights, self.d_weights = weights(self.generator, self.opt_g), weights(self.discriminator, self.opt_d)
        self.scalers = {"generator": self.scaler_g, "discriminator": self.scaler_d}
        self.autocast = autocast_factory(device, amp_dtype)
        self.device = device
        self.reduce_grads = None
        self.grid_noise = _grid_noise(Generator.latent_dim, self.seeds, device)
        self.ema = EMA({"generator": self.generator}, config.ema) if config.ema else None  # D's average has no use
        if self.ema is not None:
            self.opt_g.keep_average(self.ema)  # updated with G's step, in the same pass where Adam's kernel can

    def latent_noise(self, batch_size: int) -> torch.Tensor:
        """This step's z ~ N(0, I), (B, 100) or (S, B, 100): Philox draws keyed by (seed, step) like the dropout
        masks, so each replica of a group draws its single run's noise."""
        lead = (batch_size,) if self.replicas is None else (self.replicas, batch_size)
        return normal(next_key(self.noise_key), (*lead, Generator.latent_dim), self.g_params[0].dtype)

    def step(self, real: torch.Tensor) -> torch.Tensor:
        """real: (B, 784) in [-1, 1] ((S, B, 784) for a group). Returns (d_loss, g_loss, mean D(x), mean D(G(z)))
        on the device ((S, 4) for a group)."""
        B = real.shape[-2]
        with self.autocast():
            fake = call(self.generator, self.g_weights, self.latent_noise(B)).reshape(real.shape)
            # Real and fake in one discriminator pass: one set of larger matmuls instead of two.
            logits = call(self.discriminator, self.d_weights, torch.cat([real, fake.detach().to(real.dtype)], dim=-2)).float()
            real_logits, fake_logits = logits[..., :B], logits[..., B:]
            # BCE-with-logits against 1 / 0 is softplus(-l) / softplus(l).
            d_loss = F.softplus(-real_logits).mean(-1) + F.softplus(fake_logits).mean(-1)
        apply_update(_total(d_loss), self.opt_d, self.scaler_d, self.reduce_grads)

        with self.autocast():
            # D with detached weights: gradients flow to G through D's activations only. (A custom op's
            # backward sees which inputs need gradients as they were at forward time, so with D's own
            # parameters it would compute D's weight gradients here and throw them away.)
            d_weights = self.d_weights or dict(self.discriminator.named_parameters())
            d_frozen = {name: p.detach() for name, p in d_weights.items()}
            g_loss = F.softplus(-call(self.discriminator, d_frozen, fake).float()).mean(-1)
        apply_update(_total(g_loss), self.opt_g, self.scaler_g, self.reduce_grads)
        return torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                torch.sigmoid(real_logits.detach()).mean(-1),
                torch.sigmoid(fake_logits.detach()).mean(-1),
            ],
            dim=-1,
        )

    def train(self, mode: bool = True) -> None:
        self.generator.train(mode)
        self.discriminator.train(mode)

    def tune_kernels(self, batch_size: int, dtype: torch.dtype) -> dict[str, str]:
        """The fused linears' implementations measured at the step's shapes (a GPU only): G sees B rows, D the real
        and fake batches together (2B) and the fake one alone (B)."""
        g = tune_fused_linears(self.generator, (batch_size,), dtype)
        return {**g, **tune_fused_linears(self.discriminator, (2 * batch_size, batch_size), dtype)}

    def epoch_metrics(self) -> dict[str, float] | list[dict[str, float]]:
        return {} if self.replicas is None else [{} for _ in self.seeds]

    @torch.no_grad()
    def sample_grids(self) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """The generator's images (in [0, 1]) for the run's fixed latent draws."""
        self.generator.eval()
        images = (self.generator(self.grid_noise).float() + 1) / 2
        self.generator.train()
        return _per_replica(images, self.replicas, "epoch")


class VAETrainer:
    """Adam on the mean over images of (BCE summed over pixels + KL)."""

    data_low = 0.0  # Bernoulli targets
    needs_test_split = True
    metric_names = ("loss", "bce", "kl")
    loss_curves = ("loss", "test_loss")
    modules = ("vae",)

    def __init__(self, config, device: torch.device, amp_dtype: torch.dtype | None = None, test_split: DeviceSplit | None = None):
        self.seeds = replica_seeds(config)
        self.replicas = len(self.seeds) if len(self.seeds) > 1 else None
        self.vae = _stacked_or_single(build_replicas(self.seeds, lambda: VAE(config.kernels).to(device)))
        self.params = list(self.vae.parameters())
        self.opt, self.scaler = _optimizer(self.params, config, device, amp_dtype)
        self.optimizers = {"vae": self.opt}
        self.vae_loss = _VAELoss(self.vae)
        self.loss_weights = weights(self.vae_loss, self.opt)
        self.scalers = {"vae": self.scaler}
        self.autocast = autocast_factory(device, amp_dtype)
        self.device = device
        self.reduce_grads = None
        self.test_split = test_split
        self.grid_noise = _grid_noise(VAE.latent_dim, self.seeds, device)
        self.ema = EMA({"vae": self.vae}, config.ema) if config.ema else None
        if self.ema is not None:
            self.opt.keep_average(self.ema)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 784) in [0, 1] ((S, B, 784) for a group). Returns (loss, bce, kl) per image on the device ((S, 3)
        for a group)."""
        with self.autocast():
            loss, bce, kl = call(self.vae_loss, self.loss_weights, x)
        apply_update(_total(loss), self.opt, self.scaler, self.reduce_grads)
        return torch.stack([loss.detach(), bce, kl], dim=-1)

    def train(self, mode: bool = True) -> None:
        self.vae.train(mode)

    def tune_kernels(self, batch_size: int, dtype: torch.dtype) -> dict[str, str]:
        """The fused linears' implementations measured at the step's shapes (a GPU only)."""
        return tune_fused_linears(self.vae, (batch_size,), dtype)

    def epoch_metrics(self) -> dict[str, float] | list[dict[str, float]]:
        """The mean test loss per image, eps drawn from a fixed key so epochs compare like for like."""
        if self.test_split is None:
            return {} if self.replicas is None else [{} for _ in self.seeds]
        seeds = self.seeds[0] if self.replicas is None else self.seeds
        losses = likelihood.loss_per_image(self.vae, self.test_split.images, seeds, autocast=self.autocast)
        return {"test_loss": losses} if self.replicas is None else [{"test_loss": loss} for loss in losses]

    @torch.no_grad()
    def sample_grids(self) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Decoded fixed latents, and (if the test split is here) rows alternating 8 test images and
        their reconstructions."""
        self.vae.eval()
        grids = [torch.sigmoid(self.vae.decode(self.grid_noise).float())]
        if self.test_split is not None:
            real = self.test_split.scale(self.test_split.images[:32]).reshape(32, -1)
            if self.replicas is not None:
                real = real.expand(self.replicas, *real.shape)
            recon = self.vae.reconstruct(real).reshape(real.shape)
            pairs = torch.stack([real.reshape(*real.shape[:-2], 4, 8, 784), recon.reshape(*real.shape[:-2], 4, 8, 784)], dim=-3)
            grids.append(pairs.reshape(*real.shape[:-2], 64, 784))
        self.vae.train()
        names = ("epoch", "recon")[: len(grids)]
        shaped = [g.reshape(*g.shape[:-2], 64, 1, 28, 28) for g in grids]
        if self.replicas is None:
            return dict(zip(names, shaped))
        return [dict(zip(names, (g[s] for g in shaped))) for s in range(self.replicas)]


TRAINERS: dict[str, type] = {"gan": GANTrainer, "vae": VAETrainer}
