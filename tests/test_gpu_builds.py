"""Every fastgen Triton kernel compiled ahead of time for sm_80 and sm_90 on the CPU: no GPU, no driver.

One test per build (kernel, autotune config, constexpr variant, dtype, architecture), failing on a compile
error, on any register spill and on shared memory above the block limit. What is built is read off the
kernel modules by bench/aot_builds.py (the Triton functions of fastgen.ops.triton that no other one
calls, each described in its module's AOT_BUILDS), so a new kernel, config or launcher value is covered,
or named here as undescribed, without editing this file. The builds run in worker processes without
TRITON_INTERPRET, whatever this session set.

Default: the CI profile (every kernel, config, dtype, architecture and constexpr value; of bce_kl_loss's
block sizes the smallest and largest; contiguous x; arguments not known to be 16-aligned, the harder case
for registers). FASTGEN_AOT_FULL=1 builds what `python -m bench.static_report` does: every block size,
both layouts of x, arguments aligned or not. FASTGEN_BUILD_WORKERS sets the number of worker processes
(default: one per CPU).
"""

import importlib
import os
import time

import pytest

from bench import aot_builds

PROFILE = "full" if os.environ.get("FASTGEN_AOT_FULL") == "1" else "ci"
BUILDS = aot_builds.enumerate_builds(profile=PROFILE)


@pytest.fixture(scope="module")
def results():
    start = time.perf_counter()
    built = aot_builds.run_builds(BUILDS)
    print(
        f"\n{len(BUILDS)} ahead-of-time builds in {time.perf_counter() - start:.0f} s "
        f"on {aot_builds.default_workers()} worker processes"
    )
    return built


def test_every_kernel_is_described_and_matches_its_signature():
    assert aot_builds.description_problems() == []


def test_builds_cover_every_kernel_config_dtype_and_architecture():
    assert {(b.module, b.kernel) for b in BUILDS} == set(aot_builds.kernels())
    assert {b.arch for b in BUILDS} == {80, 90}
    for module, name in aot_builds.kernels():
        spec = importlib.import_module(module).AOT_BUILDS[name]
        mine = [b for b in BUILDS if b.kernel == name]
        assert {aot_builds.config_label(c) for c in aot_builds.all_configs(spec)} <= {b.config for b in mine}
        if any("{dtype}" in t for t in spec["args"].values()):
            assert {b.dtype for b in mine} == set(aot_builds.DTYPES), name


def test_ptxas_log_is_parsed():
    log = (
        "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
        "ptxas info    : Function properties for k\n"
        "    672 bytes stack frame, 1004 bytes spill stores, 1032 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 672 bytes cumulative stack size\n"
    )
    stats = aot_builds._parse_ptxas(log)
    assert stats == {"registers": 255, "spill_stores": 1004, "spill_loads": 1032, "stack": 672}
    build = BUILDS[0]
    assert aot_builds.problems(build, {"error": None, **stats, "shared": 0, "threads": 128})
    limit = aot_builds.ARCHS[build.arch].shared_limit
    clean = {"error": None, "registers": 40, "spill_stores": 0, "spill_loads": 0, "stack": 0, "threads": 128}
    assert not aot_builds.problems(build, {**clean, "shared": limit})
    assert aot_builds.problems(build, {**clean, "shared": limit + 1})


@pytest.mark.slow
@pytest.mark.parametrize("build", BUILDS, ids=[b.id for b in BUILDS])
def test_kernel_builds_without_spills_within_shared_memory(build, results):
    result = results[build.id]
    found = aot_builds.problems(build, result)
    assert not found, f"{build.id}: " + "; ".join(found)


def test_every_dot_tile_is_at_least_16_deep():
    """Triton 3.6 (the release beside torch 2.11) refuses a tl.dot with K under 16 on NVIDIA GPUs when it
    compiles, while 3.8 builds it: the ahead-of-time builds above cannot catch it, so the tiles are checked."""
    from fastgen.ops.triton.linear_leaky_relu_dropout import GPU_CONFIGS

    assert all(config.kwargs["BLOCK_K"] >= 16 for config in GPU_CONFIGS)
