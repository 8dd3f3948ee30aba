"""Benchmark set-up: device, data, and a ratio table printed at the end of `pytest bench --benchmark-only`."""
import os
from pathlib import Path

import pytest
import torch

from bench.report import table
from bench.telemetry import run_info
from fastgen.training.cpu_tuning import tune_for_cpu_training

REPO = Path(__file__).resolve().parent.parent
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu":
    tune_for_cpu_training()  # as `fastgen.train` does, and before any benchmark starts OpenMP's threads


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


@pytest.fixture(scope="session")
def mnist() -> Path:
    path = Path(os.environ.get("FASTGEN_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("real MNIST not found: set FASTGEN_TEST_DATA to a folder holding MNIST/raw/")
    return path


@pytest.fixture
def record(benchmark, device):
    """Attach the run's device and versions (and NVML telemetry on GPUs) plus the given fields."""

    def attach(**fields):
        benchmark.extra_info.update(run_info(device))
        benchmark.extra_info.update(fields)

    return attach


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if not session or not session.benchmarks:
        return
    rows = [b.as_dict(include_data=False) for b in session.benchmarks if b.stats is not None]
    terminalreporter.write_sep("-", "fastgen ratios (speed-up = reference median / variant median)")
    terminalreporter.write_line(table(rows))
