"""Which implementation computes `linear_leaky_relu_dropout`'s forward where Triton runs: chosen by measurement for
each shape, dtype and GPU, and remembered on disk.

The candidates are the fused Triton kernel at each of its tile configs, and cuBLAS's matmul with the bias followed
by one Triton pass for LeakyReLU and dropout. Both draw the same Philox mask (a function of seed, step and element,
not of the implementation); their outputs differ only by the matmul's rounding.

A choice is measured once, eagerly, on real tensors on the GPU (a call's first time with that shape, or a trainer's
warm-up before it compiles its step), never while torch.compile traces (fake tensors) or a CUDA graph is captured:
there a case without a choice runs the autotuned fused kernel, as before this cache existed. Choices live in one
JSON file per GPU model and software versions under the user's cache folder; a file that is unreadable, of another
format, or written for another GPU or version is ignored and rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import NamedTuple

import torch

CUBLAS = "cublas"  # torch.addmm (cuBLAS) with the bias, then the Triton epilogue pass
FORMAT = 1  # the cache file's layout; a file of another format is ignored


class LinearCase(NamedTuple):
    """What the choice depends on: one call's shapes (per replica), dtype and variant. A tuple: an eager call builds
    one and looks it up, so it must cost little."""

    replicas: int  # 0 for a single call, else the number of stacked replicas
    M: int
    N: int
    K: int
    dtype: str  # Triton's name: fp32, fp16, bf16
    bias: bool
    dropout: bool
    input_precision: str  # "ieee" or "tf32"
    x_row_major: bool

    def key(self) -> str:
        flags = "".join(flag for flag, on in (("b", self.bias), ("d", self.dropout), ("r", self.x_row_major)) if on)
        return f"{self.replicas}x{self.M}x{self.N}x{self.K}-{self.dtype}-{self.input_precision}-{flags}"


def config_name(config) -> str:
    """A tile config's name in the cache: "m64n128k32w8s3"."""
    kw = config.kwargs
    return f"m{kw['BLOCK_M']}n{kw['BLOCK_N']}k{kw['BLOCK_K']}w{config.num_warps}s{config.num_stages}"


@functools.cache
def candidates(case: LinearCase) -> dict:
    """Name -> tile config of every candidate for this case (None for cuBLAS + epilogue); do not modify it."""
    from fastgen.ops.dispatch import TRITON_INTERPRET
    from fastgen.ops.triton import linear_leaky_relu_dropout as kernels

    configs = (
        kernels.INTERPRETER_CONFIGS
        if TRITON_INTERPRET
        else kernels.gpu_configs(case.dtype, HAS_DROPOUT=case.dropout, INPUT_PRECISION=case.input_precision)
    )
    return {**{config_name(c): c for c in configs}, CUBLAS: None}


def identity(device: torch.device) -> dict:
    """What a cache file is valid for: the GPU model and the software that built and runs the kernels."""
    import triton

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "Triton interpreter on the CPU"
    capability = ".".join(map(str, torch.cuda.get_device_capability(device))) if device.type == "cuda" else None
    return dict(
        format=FORMAT, gpu=gpu, capability=capability, torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda
    )


class ChoiceCache:
    """The choices for one identity: read from its file on first use, written back (atomically) on every change."""

    def __init__(self, ident: dict, folder=None):
        from fastgen.data import cache_dir

        self.identity = ident
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        self.path = (folder or cache_dir() / "tuning") / f"linear-{digest}.json"
        self.choices: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
            if data["identity"] != self.identity or not all(isinstance(v, str) for v in data["choices"].values()):
                return {}  # another GPU, version or format (a hash collision, or a copied file): start afresh
            return dict(data["choices"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # absent or unreadable: measured again and rewritten

    def get(self, key: str) -> str | None:
        if self.choices is None:
            self.choices = self._load()
        return self.choices.get(key)

    def put(self, key: str, name: str) -> None:
        from fastgen.files import atomic_write_text

        self.get(key)
        self.choices[key] = name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(dict(identity=self.identity, choices=self.choices), indent=1, sort_keys=True))


_caches: dict[torch.device, ChoiceCache] = {}
_known: dict[tuple[torch.device, LinearCase], str] = {}  # the choices an eager call looks up, without the file's keys


def cache_for(device: torch.device) -> ChoiceCache:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _caches:
        _caches[device] = ChoiceCache(identity(device))
    return _caches[device]


def choice(case: LinearCase, device: torch.device) -> str | None:
    """The remembered choice for this case on this device, or None (then the autotuned fused kernel runs)."""
    if not all(type(size) is int for size in case[:4]):
        return None  # symbolic sizes (a step traced for any batch size): the autotuned kernel
    known = _known.get((device, case))
    if known is None:
        known = cache_for(device).get(case.key())
        if known not in candidates(case):
            return None  # not measured, or a name from an older tile set: measure again
        _known[(device, case)] = known
    return known


def can_measure(*tensors: torch.Tensor) -> bool:
    """True on real CUDA tensors outside tracing and capture: where timing a candidate means something."""
    real = [t for t in tensors if t is not None]
    return all(t.device.type == "cuda" for t in real) and not_tracing(*real)


def not_tracing(*tensors: torch.Tensor) -> bool:
    """Outside torch.compile's tracing, fake tensors and CUDA-graph capture."""
    from torch._subclasses.fake_tensor import is_fake

    if torch.compiler.is_compiling() or any(is_fake(t) for t in tensors):
        return False
    return not (torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing())


def tune(case: LinearCase, device: torch.device, time_candidate: Callable[[str], float]) -> str:
    """The fastest candidate by `time_candidate(name)` (seconds; the op times a real launch), remembered."""
    cache = cache_for(device)
    known = choice(case, device)
    if known is not None:
        return known
    times = {}
    for name in candidates(case):
        times[name] = time_candidate(name)
    best = min(times, key=times.get)
    cache.put(case.key(), best)
    _known[(device, case)] = best
    return best
