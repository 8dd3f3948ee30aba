"""Test set-up: a synthetic MNIST the tests write themselves, real MNIST for the tests of quality, and the
Triton interpreter.

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

from fastgen.ops import HAS_TRITON, TRITON_INTERPRET, cpu_backend, native  # noqa: E402
from tests.helpers import require_real_mnist, write_synthetic_mnist  # noqa: E402

# The backend fixture deliberately holds for all examples of a test.
settings.register_profile(
    "fastgen", deadline=None, print_blob=True, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("fastgen")


@pytest.fixture(scope="session")
def mnist(tmp_path_factory) -> Path:
    """A small synthetic MNIST (seven-segment digits, see tests.helpers) in torchvision's layout, written
    once per session: the data of every test of the pipeline (training, resume, files, command lines)."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("synthetic-mnist"))


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """Real MNIST, for the tests of quality only (skipped without it): see tests.helpers.find_real_mnist."""
    return require_real_mnist()


@pytest.fixture(scope="session")
def evaluator_cache(tmp_path_factory) -> Path:
    """An XDG cache folder holding fastgen's default evaluator (the one the commands use) trained on a
    smaller synthetic MNIST, in seconds: for the tests that need *an* evaluator. Its scores say nothing
    about real digits; the cache key is the recipe, so the commands use it whatever --data-dir they read."""
    from fastgen.evaluation.classifier import load_evaluator

    data = write_synthetic_mnist(tmp_path_factory.mktemp("evaluator-data"), train=1024, test=256, seed=10)
    root = tmp_path_factory.mktemp("xdg-cache")
    load_evaluator("mnist", data_dir=data, download=False, folder=root / "fastgen" / "evaluators", progress=False)
    return root


@pytest.fixture(scope="session")
def evaluator(evaluator_cache):
    """The evaluator of `evaluator_cache`."""
    from fastgen.evaluation.classifier import load_evaluator

    return load_evaluator("mnist", download=False, folder=evaluator_cache / "fastgen" / "evaluators")


@pytest.fixture(scope="session")
def real_evaluator(tmp_path_factory, real_mnist):
    """fastgen's default evaluator trained on real MNIST, once per session (about a minute)."""
    from fastgen.evaluation.classifier import load_evaluator

    return load_evaluator("mnist", data_dir=real_mnist, download=False, folder=tmp_path_factory.mktemp("evaluators"))


QUICK_SET = "not slow"  # pyproject.toml's addopts: what a bare `pytest` runs


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="the whole suite: the quick set and the tests marked slow")


def pytest_configure(config):
    if config.getoption("--full") and config.option.markexpr == QUICK_SET:
        config.option.markexpr = ""


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` (select them all with `-m gpu`) skip where there is no CUDA device. A bare `pytest`
    (the quick set) must keep at least one test of every test file: a file marked slow in whole is an error."""
    if (
        config.option.markexpr == QUICK_SET
        and not config.option.keyword
        and config.args_source == pytest.Config.ArgsSource.TESTPATHS
    ):
        quick = {item.path for item in items if "slow" not in item.keywords}
        left_out = sorted({item.path.name for item in items} - {p.name for p in quick})
        if left_out:
            raise pytest.UsageError(f"the quick test set has no test of {', '.join(left_out)}: unmark one of each")
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _native_kernels_built_once():
    """Build (first time on this machine) and load the native kernels before any test: `fastgen.train`'s
    default uses them on the CPU, and a test that points XDG_CACHE_HOME elsewhere must not rebuild them."""
    native.load()


@pytest.fixture(autouse=True)
def _eager_cpu_by_default():
    """Tests run the CPU fallback unless they ask for the interpreted kernels through `backend`."""
    with cpu_backend("eager"):
        yield


BACKENDS = ["eager"] + (["triton"] if HAS_TRITON and TRITON_INTERPRET else [])
# For `@pytest.mark.parametrize("backend", BACKENDS_TRITON_SLOW, indirect=True)`: a test whose interpreted-Triton
# run takes long keeps its eager run in the quick set.
BACKENDS_TRITON_SLOW = [pytest.param(b, marks=pytest.mark.slow) if b == "triton" else b for b in BACKENDS]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Runs an op test once on the eager CPU fallback and once on the Triton kernels (interpreted)."""
    with cpu_backend(request.param):
        yield request.param


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")
