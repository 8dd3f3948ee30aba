"""End to end: training samples/s of fastgen against the plain implementation (bench/baseline.py),
same models, same batch sizes (the paper code's: GAN 32, VAE 100), measured side by side in one run.
The baseline runs in its own plain Python process, as a user's script would; it is also measured
inside this process, with the settings fastgen applies to a CPU run, to show what those alone give.

On a GPU each round is a whole epoch; on the CPU a fixed slice of one (CPU_STEPS), to stay within
a few minutes. The first round (compilation, graph capture, allocator, thread pools) is a warm-up and not counted.
"""

import contextlib
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import baseline
from bench.plain_step import plain_trainer
from fastgen.config import TrainConfig
from fastgen.data import DeviceSplit
from fastgen.environment import cpu_has_fast_bf16
from fastgen.ops import cpu_backend
from fastgen.training.compiled_step import build_step, describe
from fastgen.training.run import resolve_kernels
from fastgen.training.trainers import TRAINERS

REPO = Path(__file__).resolve().parent.parent
PLAIN_COMPILED = "plain modules + torch.compile, same data path"
BATCH = {"gan": 32, "vae": 100}
CPU_STEPS = {"gan": 60, "vae": 40}
ROUNDS = 5


def _steps(model: str, device: torch.device) -> int:
    return 60_000 // BATCH[model] if device.type == "cuda" else CPU_STEPS[model]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("amp", ["fp32", "bf16", "fp32 plain modules"])
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_fastgen(benchmark, record, device, mnist, model, amp):
    """fastgen's default path; "fp32 plain modules": the same step, data and compilation (and CUDA graph) with
    torch's own modules in place of fastgen's layers (bench/plain_step.py), what torch.compile gives without them."""
    if amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        pytest.skip("this CPU has no fast bf16 (no AVX512-BF16 or AMX): --amp trains in float32 here")
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = TrainConfig(model=model, batch_size=BATCH[model]).resolved()
    # The path `python -m fastgen.train [--amp]` takes by default on this device: its kernels (native on the
    # CPU, Triton on CUDA), the step compiled, and graph-captured on CUDA.
    config.kernels = resolve_kernels(config.kernels, device, True, print)
    split = DeviceSplit.load("mnist", "train", device, -1.0 if model == "gan" else 0.0, mnist, download=False)
    amp_dtype = torch.bfloat16 if amp == "bf16" else None
    if amp == "fp32 plain modules":
        trainer = plain_trainer(model, config, device)
    else:
        trainer = TRAINERS[model](config, device, amp_dtype)
        trainer.tune_kernels(config.batch_size, amp_dtype or torch.float32)  # as fastgen.train does (a GPU only)
    step = build_step(trainer.step, device, True, device.type == "cuda", print)
    generator = torch.Generator(device=device).manual_seed(0)
    n = _steps(model, device)

    def run():
        batches = split.epoch_batches(config.batch_size, generator)
        for i in range(n):
            step(split.batch(batches[i]))
        _sync(device)

    benchmark.group = f"end-to-end {model} batch {config.batch_size}"
    with cpu_backend("native") if config.kernels == "native" else contextlib.nullcontext():
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(
        variant={"fp32": "fastgen", "bf16": "fastgen --amp", "fp32 plain modules": PLAIN_COMPILED}[amp],
        kernels="plain" if amp == "fp32 plain modules" else config.kernels,
        role="variant",
        model=model,
        batch_size=config.batch_size,
        steps=n,
        path=describe(step),
        samples_per_s=n * config.batch_size / benchmark.stats.stats.median,
    )


@pytest.fixture
def plain_process(mnist):
    """Start `bench/baseline.py` in a plain Python process: runs steps on request, as a user's script would."""
    processes = []

    def start(model: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline", model, str(mnist), str(BATCH[model])],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stdin.close()
        process.wait(timeout=60)


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_plain_baseline(benchmark, record, device, plain_process, model):
    """The yardstick, in its own plain process: fastgen's process settings (denormal flushing, glibc
    malloc tuning, applied by `fastgen.train` and by this suite's conftest) would speed it up too."""
    if device.type != "cpu":
        pytest.skip("the plain baseline is CPU-only code (DataLoader + CPU tensors), as the paper's was")
    process = plain_process(model)
    n = _steps(model, device)

    def run():
        process.stdin.write(f"{n}\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "done"

    benchmark.group = f"end-to-end {model} batch {BATCH[model]}"
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(
        variant="plain baseline (DataLoader + nn.Sequential), own process",
        role="reference",
        model=model,
        batch_size=BATCH[model],
        steps=n,
        samples_per_s=n * BATCH[model] / benchmark.stats.stats.median,
    )


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_plain_baseline_in_tuned_process(benchmark, record, device, mnist, model):
    """The same baseline inside this process, with fastgen's process settings: how much of the speed-up
    those settings alone give."""
    if device.type != "cpu":
        pytest.skip("the plain baseline is CPU-only code (DataLoader + CPU tensors), as the paper's was")
    torch.manual_seed(0)
    steps = (baseline.gan_steps if model == "gan" else baseline.vae_steps)(str(mnist), BATCH[model])
    n = _steps(model, device)

    def run():
        for _ in itertools.islice(steps, n):
            pass

    benchmark.group = f"end-to-end {model} batch {BATCH[model]}"
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(
        variant="plain baseline in fastgen's process settings",
        role="variant",
        model=model,
        batch_size=BATCH[model],
        steps=n,
        samples_per_s=n * BATCH[model] / benchmark.stats.stats.median,
    )
