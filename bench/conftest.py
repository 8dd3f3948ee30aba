"""Benchmark set-up: device, data, and a ratio table printed at the end of `pytest bench --benchmark-only`."""

from pathlib import Path

import pytest
import torch

from bench.report import table
from bench.telemetry import run_info
from fastgen.training.cpu_tuning import tune_for_cpu_training
from tests.helpers import require_real_mnist

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu":
    tune_for_cpu_training()  # as `fastgen.train` does, and before any benchmark starts OpenMP's threads


@pytest.fixture(scope="session")
def device() -> torch.device:
    return DEVICE


@pytest.fixture(scope="session")
def mnist() -> Path:
    """Real MNIST, found as the tests of quality find it (tests.helpers.find_real_mnist), else skipped."""
    return require_real_mnist()


@pytest.fixture
def record(benchmark, device):
    """Attach the run's device and versions (and NVML telemetry on GPUs) plus the given fields."""

    def attach(**fields):
        benchmark.extra_info.update(run_info(device))
        benchmark.extra_info.update(fields)

    return attach


def _has_timings(benchmark) -> bool:
    """False for a benchmark that failed before its first round (pytest-benchmark versions differ in
    whether the session holds the fixture's metadata or its statistics)."""
    stats = getattr(benchmark, "stats", None)
    stats = getattr(stats, "stats", stats)
    return stats is not None and bool(stats.data)


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if not session or not session.benchmarks:
        return
    rows = [b.as_dict(include_data=False) for b in session.benchmarks if _has_timings(b)]
    terminalreporter.write_sep("-", "fastgen ratios (speed-up = reference median / variant median)")
    terminalreporter.write_line(table(rows))
