"""Test set-up: real MNIST from ../shared/data (or $FASTGEN_TEST_DATA), and the Triton interpreter.

Without a GPU, TRITON_INTERPRET=1 is set here, before fastgen is imported, so the Triton kernels
themselves run on CPU tensors in the op tests (`backend` fixture); everything else runs the
eager CPU fallback.
"""
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

from fastgen.ops import HAS_TRITON, TRITON_INTERPRET, cpu_backend  # noqa: E402

# The backend fixture deliberately holds for all examples of a test.
settings.register_profile("fastgen", deadline=None, print_blob=True, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("fastgen")

REPO = Path(__file__).resolve().parent.parent


def mnist_dir() -> Path | None:
    candidate = Path(os.environ.get("FASTGEN_TEST_DATA", REPO.parent / "shared" / "data"))
    return candidate if (candidate / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file() else None


@pytest.fixture
def mnist() -> Path:
    found = mnist_dir()
    if found is None:
        pytest.skip("real MNIST not found: set FASTGEN_TEST_DATA to a folder holding MNIST/raw/")
    return found


@pytest.fixture(scope="session")
def evaluator_cache(tmp_path_factory) -> Path:
    """An XDG cache folder holding the real MNIST evaluator, trained once per test session (about a minute)."""
    found = mnist_dir()
    if found is None:
        pytest.skip("real MNIST not found: set FASTGEN_TEST_DATA to a folder holding MNIST/raw/")
    from fastgen.evaluation.classifier import load_evaluator

    root = tmp_path_factory.mktemp("xdg-cache")
    load_evaluator("mnist", data_dir=found, download=False, folder=root / "fastgen" / "evaluators")
    return root


@pytest.fixture(scope="session")
def evaluator(evaluator_cache):
    from fastgen.evaluation.classifier import load_evaluator

    return load_evaluator("mnist", data_dir=mnist_dir(), download=False, folder=evaluator_cache / "fastgen" / "evaluators")


@pytest.fixture(autouse=True)
def _eager_cpu_by_default():
    """Tests run the CPU fallback unless they ask for the interpreted kernels through `backend`."""
    with cpu_backend("eager"):
        yield


BACKENDS = ["eager"] + (["triton"] if HAS_TRITON and TRITON_INTERPRET else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs an op test once on the eager CPU fallback and once on the Triton kernels (interpreted)."""
    with cpu_backend(request.param):
        yield request.param


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")
