"""Native CPU kernels (`kernels/`, built by the top-level CMakeLists.txt) as `fastgen_native::` ops.

They compute the CPU side of fastgen's three fused ops and draw the same Philox stream as the Triton
kernels (element index = flat index of the contiguous output, key = the int64 tensor `(seed, step)`).
This module defines the ops' schemas and fake kernels; the shared library supplies only their CPU
kernels (`TORCH_LIBRARY_IMPL`), so it may be loaded by any number of processes, any number of times.

Build and load: `load()` builds the library once per machine, torch version and source version into
`fastgen.data.cache_dir()/native/<torch version>-<source hash>/` (one line on stderr while it builds),
then loads it, at most once per process. A build directory records the torch version and source hash
it was built for (`build.json`) and is loaded only when both match the running ones. `FASTGEN_NATIVE=0`
turns the kernels off; without Linux, cmake or a C++ compiler they are off too. `available()` says
whether they are loaded and `reason` why not. Autograd stays with the `fastgen::` ops that call these.

Inputs may be float32, float16 or bfloat16 in any layout: the kernels compute in float32 on contiguous
copies (none for contiguous float32) and round the result once to the input's dtype.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import torch

NAMESPACE = "fastgen_native"
LIBRARY_FILE = "libfastgen_native.so"
RECORD_FILE = "build.json"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ISAS = ("avx512", "avx2", "scalar")  # the kernel tables, best first


def source_root(package: Path) -> Path:
    """The folder holding CMakeLists.txt and kernels/ for the fastgen package at `package`: the source
    checkout above it (editable installs), else the copy a wheel ships as fastgen/native_src/ (setup.py)."""
    for root in (package.parent, package / "native_src"):
        if (root / "CMakeLists.txt").is_file() and (root / "kernels" / "ops.cpp").is_file():
            return root
    return package.parent


REPO = source_root(Path(__file__).resolve().parents[1])
SOURCES = REPO / "kernels"
CMAKE_LISTS = REPO / "CMakeLists.txt"
BUILD_TIMEOUT_S = 900

# ---- schemas and fake kernels ------------------------------------------------------------------------

SCHEMAS = {
    # y = dropout(leaky_relu(pre + bias)), pre = x @ W.T computed by torch; the mask drawn from `key`. Stacked
    # replicas: pre (S, ..., N), bias (S, N) and key (S, 2), replica s drawing with its own key (the backward too).
    "leaky_relu_dropout": "(Tensor pre, Tensor? bias, Tensor key, float negative_slope, float p) -> Tensor",
    # The same, written into `pre` (float32 and contiguous: in place; otherwise computed, then copied in).
    "leaky_relu_dropout_": "(Tensor(a!) pre, Tensor? bias, Tensor key, float negative_slope, float p) -> ()",
    # dL/d(pre-activation) = grad_y * (y > 0 ? 1 : slope) * (keep ? 1 / (1 - p) : 0), the mask regenerated.
    "leaky_relu_dropout_grad_pre": "(Tensor grad_y, Tensor y, Tensor key, float negative_slope, float p) -> Tensor",
    # The draws on their own: the dropout keep-mask (uint8, 1 = keep) and the standard normal (float32).
    "keep_mask": "(Tensor key, SymInt[] shape, float p) -> Tensor",
    "normal": "(Tensor key, SymInt[] shape) -> Tensor",
    # z = mu + exp(0.5 logvar) eps, eps drawn from `key` (or given; then `key` is not read).
    "reparameterize": "(Tensor mu, Tensor logvar, Tensor? eps, Tensor key) -> Tensor",
    # dz/dlogvar * grad_z = 0.5 grad_z exp(0.5 logvar) eps, eps regenerated (or given).
    "reparameterize_grad_logvar": "(Tensor grad_z, Tensor logvar, Tensor? eps, Tensor key) -> Tensor",
    # Per row, float32 (B,): BCE-with-logits summed over the pixels + KL(N(mu, exp(logvar)) || N(0, I)).
    "bce_kl_loss": "(Tensor logits, Tensor target, Tensor mu, Tensor logvar) -> Tensor",
    # (grad_logits, grad_mu, grad_logvar) of that loss for dL/d(loss) per row.
    "bce_kl_loss_backward": "(Tensor grad_loss, Tensor logits, Tensor target, Tensor mu, Tensor logvar) "
    "-> (Tensor, Tensor, Tensor)",
    # The three fused ops whole, each with its backward in C++ (kernels/autograd.cpp): the eager fast path.
    "fused_linear_leaky_relu_dropout": "(Tensor x, Tensor weight, Tensor? bias, Tensor key, float negative_slope, float p) "
    "-> Tensor",
    "fused_reparameterize": "(Tensor mu, Tensor logvar, Tensor? eps, Tensor key) -> Tensor",
    "fused_bce_kl_loss": "(Tensor logits, Tensor target, Tensor mu, Tensor logvar) -> Tensor",
    # Adam on float32 parameters from float32 or bfloat16 gradients in one pass over all of them, each step
    # counted up first; in the same pass each parameter's bfloat16 copy rewritten from its updated value and its
    # moving average moved towards it (average = lerp(average, param, average_weight)), where given.
    "adam_": "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] steps, "
    "Tensor lr, float beta1, float beta2, float eps, Tensor(e!)[] copies, Tensor(f!)[] averages, Tensor? average_weight) -> ()",
}

_library = torch.library.Library(NAMESPACE, "DEF")
for _name, _schema in SCHEMAS.items():
    _library.define(_name + _schema)


def _fake(name):
    return torch.library.register_fake(f"{NAMESPACE}::{name}", lib=_library)


@_fake("leaky_relu_dropout")
def _(pre, bias, key, negative_slope, p):
    return pre.new_empty(pre.shape)


@_fake("leaky_relu_dropout_")
def _(pre, bias, key, negative_slope, p):
    return None


@_fake("leaky_relu_dropout_grad_pre")
def _(grad_y, y, key, negative_slope, p):
    return y.new_empty(y.shape)


@_fake("keep_mask")
def _(key, shape, p):
    return key.new_empty(shape, dtype=torch.uint8)


@_fake("normal")
def _(key, shape):
    return key.new_empty(shape, dtype=torch.float32)


@_fake("reparameterize")
@_fake("fused_reparameterize")  # the eager fast path's whole op: the same output
def _(mu, logvar, eps, key):
    return mu.new_empty(mu.shape)


@_fake("reparameterize_grad_logvar")
def _(grad_z, logvar, eps, key):
    return logvar.new_empty(logvar.shape)


@_fake("bce_kl_loss")
@_fake("fused_bce_kl_loss")
def _(logits, target, mu, logvar):
    return logits.new_empty(logits.shape[0], dtype=torch.float32)


@_fake("bce_kl_loss_backward")
def _(grad_loss, logits, target, mu, logvar):
    return logits.new_empty(logits.shape), mu.new_empty(mu.shape), logvar.new_empty(logvar.shape)


@_fake("adam_")
def _(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, copies, averages, average_weight):
    return None


@_fake("fused_linear_leaky_relu_dropout")
def _(x, weight, bias, key, negative_slope, p):
    return x.new_empty((x.shape[0], weight.shape[0]))


# ---- loading -------------------------------------------------------------------------------------------


class Unavailable(Exception):
    """Why the native kernels cannot be used here (one line)."""


reason: str = "not loaded yet: call fastgen.ops.native.load()"
_lock = threading.Lock()
_attempted = False
_loaded_path: Optional[Path] = None
_handle: Optional[ctypes.CDLL] = None


def load() -> bool:
    """Build (once per machine) and load (once per process) the native kernels; True when they are loaded.

    The first call decides for the whole process; later calls return its answer. Never raises: on
    failure `reason` says why, in one line."""
    global _attempted, _loaded_path, _handle, reason
    with _lock:
        if not _attempted:
            _attempted = True
            try:
                _loaded_path, _handle = _load()
                reason = ""
            except Unavailable as error:
                reason = str(error)
            wanted = os.environ.get("FASTGEN_NATIVE_ISA") if _handle is not None else None
            if wanted and wanted not in supported_isas():
                print(
                    f"fastgen: FASTGEN_NATIVE_ISA={wanted} does not run on this CPU (it runs "
                    f"{', '.join(supported_isas())}); using {isa()}",
                    file=sys.stderr,
                )
            elif wanted:
                set_isa(wanted)
        return _loaded_path is not None


def available() -> bool:
    """Whether the fastgen_native:: ops run here (loads them on first call; see `load`)."""
    return load()


def library_path() -> Optional[Path]:
    """The loaded shared library, or None."""
    return _loaded_path


def _load() -> tuple[Path, ctypes.CDLL]:
    if os.environ.get("FASTGEN_NATIVE", "1") == "0":
        raise Unavailable("turned off by FASTGEN_NATIVE=0")
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"native kernels are built on Linux only, not {sys.platform}")
    if not (SOURCES.is_dir() and CMAKE_LISTS.is_file()):
        raise Unavailable(f"no kernel sources at {SOURCES} (a source checkout has them)")
    directory = build_dir()
    if check_build(directory) is not None:  # absent, or built for another torch or other sources
        build(directory)
    return load_build(directory)


def source_hash() -> str:
    """SHA-256 of the kernel sources and CMakeLists.txt (names and contents) and of the build's options."""
    digest = hashlib.sha256()
    files = [CMAKE_LISTS] + sorted(p for p in SOURCES.iterdir() if p.suffix in (".cpp", ".h"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps(_build_options(), sort_keys=True).encode())
    return digest.hexdigest()


def _build_options() -> dict:
    return {"CMAKE_BUILD_TYPE": "Release"}


def cache_root() -> Path:
    """$FASTGEN_NATIVE_CACHE (builds shared between users or containers), else the per-user cache's native/."""
    if os.environ.get("FASTGEN_NATIVE_CACHE"):
        return Path(os.environ["FASTGEN_NATIVE_CACHE"])
    from fastgen.data import cache_dir

    return cache_dir() / "native"


def build_dir() -> Path:
    """Where the library for the running torch and the current sources lives (or will)."""
    return cache_root() / f"{torch.__version__}-{source_hash()[:16]}"


def expected_record() -> dict:
    return {"torch": torch.__version__, "torch_git": torch.version.git_version, "sources": source_hash()}


def check_build(directory: Path) -> Optional[str]:
    """None when `directory` holds a library built for the running torch and the current sources, else why not."""
    record_path, library = directory / RECORD_FILE, directory / LIBRARY_FILE
    if not (record_path.is_file() and library.is_file()):
        return f"no native build in {directory}"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as error:
        return f"unreadable {record_path}: {error}"
    for field, wanted in expected_record().items():
        if record.get(field) != wanted:
            return f"{directory} was built for {field} {record.get(field)!r}, not {wanted!r}"
    return None


def load_build(directory: Path) -> tuple[Path, ctypes.CDLL]:
    """Load the library in `directory` if its record matches the running torch and sources (else raise)."""
    problem = check_build(directory)
    if problem is not None:
        raise Unavailable(problem)
    library = directory / LIBRARY_FILE
    try:
        torch.ops.load_library(str(library))
        handle = ctypes.CDLL(str(library))
    except OSError as error:
        raise Unavailable(f"cannot load {library}: {error}") from error
    handle.fastgen_native_isa.restype = ctypes.c_char_p
    handle.fastgen_native_supported_isas.restype = ctypes.c_char_p
    handle.fastgen_native_set_isa.argtypes = [ctypes.c_char_p]
    handle.fastgen_native_set_isa.restype = ctypes.c_int
    missing = [n for n in SCHEMAS if not torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{n}", "CPU")]
    if missing:
        raise Unavailable(f"{library} registers no CPU kernel for {', '.join(missing)}")
    return library, handle


# ---- building ------------------------------------------------------------------------------------------


def _compiler() -> Optional[str]:
    wanted = os.environ.get("CXX")
    if wanted:
        return shutil.which(wanted)
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def cmake_arguments() -> list[str]:
    """The -D options that describe the running torch to CMakeLists.txt (find_package(Torch) needs CUDA)."""
    import logging

    quiet = logging.getLogger("torch.utils.cpp_extension")  # it warns about CUDA_HOME on import
    level, quiet.level = quiet.level, logging.ERROR
    try:
        from torch.utils.cpp_extension import include_paths
    finally:
        quiet.setLevel(level)
    options = dict(
        _build_options(),
        FASTGEN_TORCH_INCLUDE_DIRS=";".join(include_paths()),
        FASTGEN_TORCH_LIBRARY_DIR=str(Path(torch.__file__).resolve().parent / "lib"),
        FASTGEN_GLIBCXX_USE_CXX11_ABI=str(int(torch._C._GLIBCXX_USE_CXX11_ABI)),
    )
    return [f"-D{key}={value}" for key, value in options.items()]


def build(directory: Path) -> None:
    """Build the library into `directory`: in a private temporary folder, then one atomic rename, under a
    lock, so that processes building at once neither corrupt nor repeat each other's work."""
    cmake, compiler = shutil.which("cmake"), _compiler()
    if cmake is None:
        raise Unavailable("native kernels need cmake on PATH")
    if compiler is None:
        raise Unavailable("native kernels need a C++ compiler (c++, g++ or clang++ on PATH, or $CXX)")
    failed_log = directory.with_name(directory.name + ".failed.log")
    if failed_log.exists():
        raise Unavailable(f"the native build failed before (log: {failed_log}; delete it to retry)")
    import fcntl  # Linux only, as the build

    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with open(directory.with_name(directory.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a build under way elsewhere: wait for it, then use it
            if check_build(directory) is None:
                return
            with tempfile.TemporaryDirectory(prefix=".build-", dir=directory.parent) as scratch:
                staged = _run_cmake(cmake, compiler, Path(scratch), failed_log)
                if directory.exists():  # a stale build (other torch or sources): replace it
                    shutil.rmtree(directory)
                os.rename(staged, directory)
    except OSError as error:
        raise Unavailable(f"cannot build into {directory.parent}: {error}") from error


def _run_cmake(cmake: str, compiler: str, scratch: Path, failed_log: Path) -> Path:
    """Configure and build in `scratch`; return the folder holding the library and its record."""
    print(
        f"fastgen: building the native CPU kernels once for torch {torch.__version__} (under a minute) into {failed_log.parent}",
        file=sys.stderr,
        flush=True,
    )
    build_tree, staged, log = scratch / "build", scratch / "out", scratch / "build.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [
        [cmake, "-S", str(REPO), "-B", str(build_tree), *generator, f"-DCMAKE_CXX_COMPILER={compiler}", *cmake_arguments()],
        [cmake, "--build", str(build_tree), "--parallel", str(os.cpu_count() or 1)],
    ]
    with open(log, "w") as out:
        for step in steps:
            try:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S).returncode
            except subprocess.TimeoutExpired:
                done = f"timed out after {BUILD_TIMEOUT_S} s"
            if done != 0:
                shutil.copyfile(log, failed_log)
                raise Unavailable(f"the native build failed ({done}; log: {failed_log}; delete it to retry)")
    staged.mkdir()
    shutil.copy2(build_tree / LIBRARY_FILE, staged / LIBRARY_FILE)
    record = dict(expected_record(), compiler=compiler, cmake_arguments=cmake_arguments())
    (staged / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return staged


# ---- which kernel table runs ------------------------------------------------------------------------------


def isa() -> Optional[str]:
    """The kernel table the loaded library runs ("avx512", "avx2" or "scalar"), or None when not loaded."""
    return _handle.fastgen_native_isa().decode() if _handle is not None else None


def supported_isas() -> tuple[str, ...]:
    """The kernel tables this CPU can run, best first (empty when not loaded)."""
    return tuple(_handle.fastgen_native_supported_isas().decode().split(",")) if _handle is not None else ()


def set_isa(name: str) -> None:
    """Run the named kernel table from now on (tests, benchmarks; FASTGEN_NATIVE_ISA does it at load)."""
    if _handle is None:
        raise ValueError("the native kernels are not loaded")
    if _handle.fastgen_native_set_isa(name.encode()) != 1:
        raise ValueError(f"kernel table {name!r} does not run on this CPU; it runs {supported_isas()}")
