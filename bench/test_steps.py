"""One training step of each model: eager, torch.compile'd, and CUDA-graphed, and on the CPU both of the
first two on the native CPU kernels; float32 and bf16 autocast. "eager" / "compiled" build the layers with
kernels="auto": Triton on CUDA, plain PyTorch ops on the CPU (`--kernels eager`, and the CPU default
before the native kernels); "native ..." is what `fastgen.train` runs on the CPU by default now.
"plain modules ..." is the same step with torch's own modules in place of fastgen's layers (bench/plain_step.py):
the rival fastgen's kernels must beat under the same compilation and CUDA graph.

Each round is 20 steps on device-resident batches; compilation, autotuning and graph capture happen
in the warm-up round and are not measured.
"""

import contextlib

import pytest
import torch

from bench.plain_step import plain_trainer
from fastgen.config import TrainConfig
from fastgen.environment import cpu_has_fast_bf16
from fastgen.ops import cpu_backend, native
from fastgen.training.compiled_step import build_step, describe
from fastgen.training.trainers import TRAINERS

STEPS = 20


def batch_size(model: str, device: torch.device) -> int:
    """The paper's batch sizes (GAN 32, VAE 100); the GAN at 64 on CUDA, where its GPU targets are set."""
    return 64 if model == "gan" and device.type == "cuda" else {"gan": 32, "vae": 100}[model]


# variant: (torch.compile, CUDA graphs, kernels); kernels "plain": bench/plain_step.py's networks
VARIANTS = {
    "eager": (False, False, "auto"),
    "compiled": (True, False, "auto"),
    "graphed": (True, True, "auto"),
    "native eager": (False, False, "native"),
    "native compiled": (True, False, "native"),
    "plain modules eager": (False, False, "plain"),
    "plain modules compiled": (True, False, "plain"),
    "plain modules graphed": (True, True, "plain"),
}


def make_trainer(model: str, variant: str, batch: int, device: torch.device, amp_dtype, seeds: int = 1):
    """The variant's trainer: fastgen's networks on the variant's kernels (a group of `seeds` > 1), or plain modules."""
    kernels = VARIANTS[variant][2]
    if kernels == "plain":
        return plain_trainer(model, TrainConfig(model=model, batch_size=batch).resolved(), device, amp_dtype)
    config = TrainConfig(model=model, batch_size=batch, kernels=kernels, seeds=seeds).resolved()
    trainer = TRAINERS[model](config, device, amp_dtype)
    trainer.tune_kernels(batch, amp_dtype or torch.float32)  # as training does before it compiles (a GPU only)
    return trainer


@pytest.mark.parametrize("amp", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_step(benchmark, record, device, model, variant, amp):
    compile, graphs, kernels = VARIANTS[variant]
    batch = batch_size(model, device)
    if graphs and device.type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    if kernels == "native" and (device.type != "cpu" or not native.load()):
        pytest.skip(f"the native kernels are CPU kernels: {native.reason or 'not on ' + device.type}")
    if amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        pytest.skip("this CPU has no fast bf16 (no AVX512-BF16 or AMX): fastgen trains in float32 here")
    torch._dynamo.reset()
    torch.manual_seed(0)
    trainer = make_trainer(model, variant, batch, device, torch.bfloat16 if amp == "bf16" else None)
    notices = []
    step = build_step(trainer.step, device, compile, graphs, notices.append)
    low = -1.0 if model == "gan" else 0.0
    batches = torch.rand(STEPS, batch, 784, device=device) * (1 - low) + low

    def run():
        for i in range(STEPS):
            step(batches[i])
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"step {model} batch {batch} {amp}"
    with cpu_backend("native") if kernels == "native" else contextlib.nullcontext():
        benchmark.pedantic(run, rounds=5 if device.type == "cpu" else 20, warmup_rounds=1, iterations=1)
    assert not notices, notices  # a silent fallback would mislabel the numbers
    record(
        variant=variant,
        role="reference" if variant == "eager" else "variant",
        model=model,
        batch_size=batch,
        amp=amp,
        steps=STEPS,
        path=describe(step),
        samples_per_s=STEPS * batch / benchmark.stats.stats.median,
    )
