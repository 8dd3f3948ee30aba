"""Every fastgen Triton kernel built ahead of time for sm_80 and sm_90, no GPU needed.

`write_build_report` writes report.md / report.json (per kernel, config, constexpr variant, dtype and
architecture: registers, spills, shared memory, tensor-core instructions in the PTX); the command is
`python -m bench.static_report`, and tests/test_gpu_builds.py runs the same builds and fails on any problem.

What is built comes from the kernel modules themselves: every Triton function in
`fastgen.ops.triton` that no other Triton function calls is a kernel, and each kernel module
describes its kernels in `AOT_BUILDS` (argument types, the constexpr values its launcher passes,
the unit strides Triton specialises, the autotuner's GPU configs). The builds run in worker
processes without TRITON_INTERPRET (under the interpreter `triton.jit` makes no compilable function):
`python -m bench.aot_builds --worker ...`, started by `run_builds`.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import itertools
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL_PACKAGE = "fastgen.ops.triton"
DTYPES = ("fp32", "fp16", "bf16")


@dataclasses.dataclass(frozen=True)
class Arch:
    capability: int
    name: str
    shared_limit: int  # bytes of shared memory one block may use (opt-in dynamic maximum)
    registers_per_sm: int = 65536


ARCHS = {
    80: Arch(80, "sm_80", 163 * 1024),  # A100: 164 KB per SM, 163 KB per block
    90: Arch(90, "sm_90", 227 * 1024),  # H100/H200: 228 KB per SM, 227 KB per block
}

# Integer and pointer arguments: "unaligned" marks none divisible by 16 (odd sizes such as K = 100, views at an
# odd offset), "aligned" marks every one (as Triton does at launch for 16-byte aligned tensors and multiples of
# 16, e.g. K = 784, N = 1024). Loads vectorise and pipeline differently; unaligned operands are staged through
# registers, the harder case for spills, so the CI profile builds that one.
ALIGNMENTS = ("unaligned", "aligned")


@dataclasses.dataclass(frozen=True)
class Build:
    module: str
    kernel: str
    arch: int
    dtype: str | None  # the op's float type; None for kernels without one
    config: str  # the autotune config's label ("default" without an autotuner)
    variant: str  # the constexpr values the launcher chose, and the layout
    alignment: str
    constexprs: tuple  # ((name, value), ...): every compile-time constant, config's included
    options: tuple  # ((name, value), ...): num_warps, num_stages, ... ; empty for the launch defaults

    @property
    def id(self) -> str:
        return f"{self.kernel}[{self.config}]-{self.variant}-{self.alignment}-{self.dtype or 'any'}-{ARCHS[self.arch].name}"

    @property
    def num_warps(self) -> int:
        return dict(self.options).get("num_warps", 4)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Build:
        data = dict(data)
        data["constexprs"] = tuple(tuple(x) for x in data["constexprs"])
        data["options"] = tuple(tuple(x) for x in data["options"])
        return cls(**data)


# ---- what to build -------------------------------------------------------------------------------


def kernel_modules() -> list[str]:
    package = importlib.import_module(KERNEL_PACKAGE)
    return sorted(f"{KERNEL_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__))


def python_function(obj):
    """The Python function under a Triton wrapper (JIT or interpreted function, autotuner, heuristics)."""
    while not inspect.isfunction(obj):
        obj = obj.fn
    return obj


def triton_functions(module) -> dict[str, object]:
    """The Triton functions a module defines (not the ones it imports)."""
    from triton.runtime.jit import KernelInterface

    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, KernelInterface) and python_function(obj).__module__ == module.__name__
    }


def _names_used(fn) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else tree.body
    used = set()
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
    return used


def kernels() -> dict[tuple[str, str], object]:
    """(module, name) -> object for every kernel: a Triton function of the package no other one uses."""
    functions = {}
    for module_name in kernel_modules():
        for name, obj in triton_functions(importlib.import_module(module_name)).items():
            functions[(module_name, name)] = obj
    used = set()
    for obj in functions.values():
        used |= _names_used(python_function(obj))
    return {key: obj for key, obj in functions.items() if key[1] not in used}


def description_problems() -> list[str]:
    """Kernels without a description, descriptions of no kernel, and descriptions that disagree with a kernel."""
    found = []
    described = set()
    for module_name in kernel_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "AOT_BUILDS", {}):
            described.add((module_name, name))
    for key, obj in kernels().items():
        if key not in described:
            found.append(f"{key[0]}.{key[1]} has no AOT_BUILDS entry (argument types and launcher values)")
            continue
        spec = importlib.import_module(key[0]).AOT_BUILDS[key[1]]
        params = list(inspect.signature(python_function(obj)).parameters)
        if list(spec["args"]) != params:
            found.append(f"{key[0]}.{key[1]}: AOT_BUILDS args {list(spec['args'])} != parameters {params}")
            continue
        config_keys = set().union(*(c.kwargs for c in all_configs(spec)))
        for name, typ in spec["args"].items():
            sources = (name in spec.get("constexprs", {})) + (name in config_keys)
            if typ == "constexpr" and sources != 1:
                found.append(f"{key[0]}.{key[1]}: constexpr {name} needs values from exactly one of constexprs/configs")
            if typ != "constexpr" and sources:
                found.append(f"{key[0]}.{key[1]}: {name} has values but is typed {typ}, not constexpr")
        for layout, fixed in (spec.get("layouts") or {}).items():
            for name in fixed:
                if spec["args"].get(name) not in ("i32", "i64"):
                    found.append(f"{key[0]}.{key[1]}: layout {layout!r} fixes {name}, not an integer argument")
    for key in sorted(described - set(kernels())):
        found.append(f"{key[0]}.{key[1]} is described in AOT_BUILDS but is no kernel")
    return found


def _label(value) -> str:
    return {True: "1", False: "0"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def config_label(config) -> str:
    if config is None:
        return "default"
    short = "-".join("".join(part[0] for part in key.split("_")) + _label(v) for key, v in config.kwargs.items())
    regs = f"-r{config.maxnreg}" if config.maxnreg is not None else ""
    return f"{short}-w{config.num_warps}-s{config.num_stages}{regs}"


def config_options(config) -> tuple:
    if config is None:
        return ()
    options = [("num_warps", config.num_warps), ("num_stages", config.num_stages)]
    if config.num_ctas != 1:
        options.append(("num_ctas", config.num_ctas))
    if config.maxnreg is not None:
        options.append(("maxnreg", config.maxnreg))
    return tuple(options)


PROFILES = ("ci", "full")


def _profile_values(values, profile: str):
    """The CI profile builds the two ends of a long axis of sizes (register use grows with a block size)."""
    values = tuple(values)
    if profile == "ci" and len(values) > 4 and all(isinstance(v, int) for v in values):
        return (min(values), max(values))
    return values


def _variants(spec: dict, profile: str):
    """(dtype, {constexpr: value}) for every dtype and every combination of the launcher's constexpr values."""
    typed = any("{dtype}" in t for t in spec["args"].values())
    for dtype in DTYPES if typed else (None,):
        choices = spec.get("constexprs", {})
        axes = {k: _profile_values(v[dtype] if isinstance(v, dict) else v, profile) for k, v in choices.items()}
        for values in itertools.product(*axes.values()):
            chosen = dict(zip(axes, values))
            label = ",".join(f"{k}={_label(v)}" for k, v in chosen.items() if len(axes[k]) > 1)
            yield dtype, chosen, label


def enumerate_builds(archs=tuple(ARCHS), profile: str = "full") -> list[Build]:
    """Every build: kernel x autotune config x constexpr variant x layout x alignment x dtype x architecture.

    "full" builds all of it. "ci" keeps every kernel, config, dtype, architecture and constexpr value except
    the middle of long size axes (bce_kl_loss's block sizes: 1 and 1024 of 1, 2, 4, ... 1024), and builds
    the first layout (contiguous inputs, as fastgen's models pass them) with unaligned arguments only.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    builds = []
    for module_name, name in sorted(kernels()):
        spec = getattr(importlib.import_module(module_name), "AOT_BUILDS", {}).get(name)
        if spec is None:  # description_problems() names it
            continue
        layouts = list((spec.get("layouts") or {"": {}}).items())
        layouts = layouts[:1] if profile == "ci" else layouts
        alignments = ALIGNMENTS[:1] if profile == "ci" else ALIGNMENTS
        for arch, (dtype, chosen, label), (layout, fixed), alignment in itertools.product(
            archs, list(_variants(spec, profile)), layouts, alignments
        ):
            variant = ",".join(x for x in (label, layout.replace(" ", "-")) if x) or "only"
            for config in configs_for(spec, dtype, chosen):
                constexprs = {**chosen, **fixed, **(config.kwargs if config else {})}
                builds.append(
                    Build(
                        module_name,
                        name,
                        arch,
                        dtype,
                        config_label(config),
                        variant,
                        alignment,
                        tuple(constexprs.items()),
                        config_options(config),
                    )
                )
    return builds


def all_configs(spec: dict) -> list:
    """Every autotune config of a kernel, over all its variants (none without an autotuner)."""
    found = []
    for dtype, chosen, _ in _variants(spec, "full"):
        for config in configs_for(spec, dtype, chosen):
            if config is not None and config not in found:
                found.append(config)
    return found


def configs_for(spec: dict, dtype: str | None, constexprs: dict) -> list:
    """The autotune configs of one variant: a list, or a function of (dtype, **constexprs) that gives it."""
    configs = spec.get("configs")
    if callable(configs):
        return list(configs(dtype, **constexprs))
    return list(configs) if configs else [None]


# ---- building (in a worker process, without the interpreter) --------------------------------------


def _parse_ptxas(log: str) -> dict:
    def total(pattern):
        return sum(int(x) for x in re.findall(pattern, log))

    regs = re.findall(r"Used (\d+) registers", log)
    return {
        "registers": max(map(int, regs)) if regs else None,
        "spill_stores": total(r"(\d+) bytes spill stores"),
        "spill_loads": total(r"(\d+) bytes spill loads"),
        "stack": total(r"(\d+) bytes stack frame"),
    }


def _tensor_cores(ptx: str) -> str:
    if re.search(r"\bwgmma\.mma_async", ptx):
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "none"


_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "i64": "int64", "u8": "uint8"}


def _check_autotuner(obj, spec: dict, build: Build) -> str | None:
    """What the autotuner tries for this build's variant must be exactly the configs built for it: its config
    list, less what its `early_config_prune` drops for these arguments."""
    import torch
    from triton.runtime.autotuner import Autotuner

    if not isinstance(obj, Autotuner):
        return "AOT_BUILDS lists configs but the kernel has no autotuner" if spec.get("configs") else None
    if not spec.get("configs"):
        return "the kernel has an autotuner but AOT_BUILDS lists no configs"
    constants = dict(build.constexprs)
    variant = {k: constants[k] for k in spec.get("constexprs", {})}
    tried = list(obj.configs)
    if obj.early_config_prune:
        named = {}
        for name, typ in spec["args"].items():
            typ = typ.format(dtype=build.dtype)
            if typ.startswith("*"):
                named[name] = torch.empty(0, dtype=getattr(torch, _TORCH_DTYPES[typ[1:]]))
            elif typ != "constexpr":
                named[name] = 1.0 if typ.startswith("fp") else 1
        tried = obj.early_config_prune(tried, named, **variant)
    described = configs_for(spec, build.dtype, variant)
    if sorted(map(str, tried)) != sorted(map(str, described)):
        return (
            f"the autotuner tries {[config_label(c) for c in tried]} for this variant, "
            f"AOT_BUILDS describes {[config_label(c) for c in described]}"
        )
    return None


def compile_build(build: Build) -> dict:
    """Compile one build; registers, spills and stack from ptxas's own log, shared memory from the metadata."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    result = {"id": build.id, "error": None}
    start = time.perf_counter()
    try:
        module = importlib.import_module(build.module)
        obj = getattr(module, build.kernel)
        spec = module.AOT_BUILDS[build.kernel]
        problem = _check_autotuner(obj, spec, build)
        if problem:
            raise RuntimeError(problem)
        jit = obj
        while not isinstance(jit, JITFunction):
            jit = jit.fn
        constants = dict(build.constexprs)
        signature, constexprs, attrs = {}, {}, {}
        for i, (name, typ) in enumerate(spec["args"].items()):
            if name in constants:
                signature[name] = "constexpr"
                constexprs[(i,)] = constants[name]
                continue
            signature[name] = typ.format(dtype=build.dtype)
            if build.alignment == "aligned" and (typ.startswith("*") or typ in ("i32", "i64")):
                attrs[(i,)] = [["tt.divisibility", 16]]
        knobs.nvidia.dump_ptxas_log = True  # make_cubin prints the log of its `ptxas -v` run
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(fn=jit, signature=signature, constexprs=constexprs, attrs=attrs),
                target=GPUTarget("cuda", build.arch, 32),
                options=dict(build.options),
            )
        stats = _parse_ptxas(log.getvalue())
        if stats["registers"] is None:  # no log (a Triton without the switch): run ptxas -v on the PTX ourselves
            stats = _parse_ptxas(_ptxas_log(compiled.asm["ptx"], build.arch))
        result.update(stats)
        result["shared"] = compiled.metadata.shared
        result["tensor_cores"] = _tensor_cores(compiled.asm["ptx"])
        result["threads"] = compiled.metadata.num_warps * 32
    except Exception as exc:  # a compile error is a result: the test reports it against its build
        lines = traceback.format_exception_only(type(exc), exc)
        result["error"] = "".join(lines).strip()[-2000:]
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _ptxas_log(ptx: str, arch: int) -> str:
    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "k.ptx"
        source.write_text(ptx)
        suffix = "a" if arch == 90 else ""
        done = subprocess.run(
            [
                str(ptxas),
                "-v",
                "--regAllocOptLevel=2",
                f"--gpu-name=sm_{arch}{suffix}",
                str(source),
                "-o",
                str(Path(tmp) / "k.o"),
            ],
            capture_output=True,
            text=True,
        )
    return done.stderr


def _worker(jobs_file: str, claims: str, out_file: str) -> int:
    """Take builds one at a time (a claim file per build, created exclusively) until none is left."""
    os.environ.pop("TRITON_INTERPRET", None)
    jobs = [Build.from_json(b) for b in json.loads(Path(jobs_file).read_text())]
    with open(out_file, "a") as out:
        for index, build in enumerate(jobs):
            try:
                os.close(os.open(os.path.join(claims, str(index)), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            out.write(json.dumps(compile_build(build)) + "\n")
            out.flush()
    return 0


def default_workers() -> int:
    return int(os.environ.get("FASTGEN_BUILD_WORKERS", 0)) or max(1, len(os.sched_getaffinity(0)))


def run_builds(builds: list[Build], workers: int | None = None) -> dict[str, dict]:
    """Compile every build in `workers` processes (default: one per CPU); build id -> result."""
    workers = max(1, min(workers or default_workers(), len(builds)))
    # The costliest first, so that the last builds left to share out are small.
    order = sorted(builds, key=lambda b: (dict(b.options).get("num_stages", 0) == 0, -b.num_warps))
    with tempfile.TemporaryDirectory(prefix="fastgen-aot-") as tmp:
        root = Path(tmp)
        (root / "jobs.json").write_text(json.dumps([b.to_json() for b in order]))
        (root / "claims").mkdir()
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["TRITON_CACHE_DIR"] = str(root / "cache")  # an empty cache: ptxas runs (and logs) for every build
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH")) if x)
        procs = []
        for i in range(workers):
            stderr = open(root / f"stderr-{i}.txt", "w")
            procs.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "bench.aot_builds",
                            "--worker",
                            str(root / "jobs.json"),
                            str(root / "claims"),
                            str(root / f"results-{i}.jsonl"),
                        ],
                        cwd=REPO,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    ),
                    stderr,
                )
            )
        failures = []
        for i, (proc, stderr) in enumerate(procs):
            if proc.wait() != 0:
                failures.append(f"worker {i} exited {proc.returncode}: {(root / f'stderr-{i}.txt').read_text()[-3000:]}")
            stderr.close()
        results = {}
        for path in root.glob("results-*.jsonl"):
            for line in path.read_text().splitlines():
                result = json.loads(line)
                results[result["id"]] = result
    for build in builds:
        if build.id not in results:
            results[build.id] = {"id": build.id, "error": "not built: " + ("; ".join(failures) or "no result")}
    return results


def problems(build: Build, result: dict) -> list[str]:
    """Why a build is not fit to run: a compile error, any register spill, shared memory over the block limit."""
    if result.get("error"):
        return [f"compile error: {result['error']}"]
    if not result.get("registers"):
        return ["no register count: ptxas's log was not read"]
    found = []
    if result["spill_stores"] or result["spill_loads"]:
        found.append(
            f"spills {result['spill_stores']} B stores / {result['spill_loads']} B loads a thread "
            f"({result['registers']} registers, {result['stack']} B stack)"
        )
    arch = ARCHS[build.arch]
    if result["shared"] > arch.shared_limit:
        found.append(f"{result['shared']} B shared memory > {arch.shared_limit} B, the {arch.name} block limit")
    if result["registers"] * result["threads"] > arch.registers_per_sm:
        found.append(f"{result['registers']} registers x {result['threads']} threads > {arch.registers_per_sm}")
    return found


# ---- the report ------------------------------------------------------------------------------------


def _versions() -> dict:
    import torch
    import triton
    from triton.backends.nvidia.compiler import get_ptxas_version

    try:
        found = re.search(r"release ([\d.]+), (V[\d.]+)", get_ptxas_version())
        ptxas = f"ptxas {found.group(2)}" if found else "ptxas (version not read)"
    except Exception as exc:  # the version is informative only
        ptxas = f"ptxas (version not read: {type(exc).__name__})"
    return {"triton": triton.__version__, "torch": torch.__version__, "ptxas": ptxas}


RESULT_COLUMNS = ("registers", "spill_stores", "spill_loads", "stack", "shared", "tensor_cores", "threads", "seconds", "error")
COLUMNS = ("kernel", "config", "variant", "alignment", "dtype", "arch", *RESULT_COLUMNS, "problems")


def build_rows(builds: list[Build], results: dict) -> list[dict]:
    rows = []
    for build in builds:
        result = results[build.id]
        rows.append(
            {
                "id": build.id,
                "kernel": build.kernel,
                "config": build.config,
                "variant": build.variant,
                "alignment": build.alignment,
                "dtype": build.dtype,
                "arch": ARCHS[build.arch].name,
                **{k: result.get(k) for k in RESULT_COLUMNS},
                "problems": problems(build, result),
            }
        )
    return rows


def report_json(rows: list[dict], meta: dict) -> str:
    """One build a line, as a list of values in the order of `columns` (the ids are those of the test)."""
    lines = [
        "{",
        *(f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in meta.items()),
        f'  "columns": {json.dumps(list(COLUMNS))},',
        '  "builds": [',
    ]
    lines += [f"    {json.dumps([r[c] for c in COLUMNS])}," for r in rows]
    if rows:
        lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines + ["  ]", "}"]) + "\n"


def _cell(rows: list[dict]) -> str:
    """One architecture's builds of a (kernel, config, variant, dtype): the worst over the alignments."""
    if any(r["error"] for r in rows):
        return "**compile error**"
    regs = max(r["registers"] or 0 for r in rows)
    spill = max(r["spill_stores"] + r["spill_loads"] for r in rows)
    shared = max(r["shared"] for r in rows)
    cores = "/".join(sorted({r["tensor_cores"] for r in rows}))
    flag = "" if not any(r["problems"] for r in rows) else " **!**"
    spill_text = f"**{spill} B spilled**" if spill else "0"
    return f"{regs} | {spill_text} | {shared / 1024:.0f} | {cores}{flag}"


def report_markdown(rows: list[dict], versions: dict, seconds: float, workers: int) -> str:
    kernels_seen = list(dict.fromkeys(r["kernel"] for r in rows))
    bad = [r for r in rows if r["problems"]]
    lines = [
        "# fastgen's Triton kernels built ahead of time",
        "",
        f"`python -m bench.static_report`: every kernel compiled for sm_80 (A100) and sm_90 (H100, H200) on a machine "
        f"without a GPU, with Triton's own compiler and the ptxas in its wheel (triton {versions['triton']}, "
        f"torch {versions['torch']}, {versions['ptxas']}). {len(rows)} builds in {seconds:.0f} s on {workers} "
        f"worker processes; **{len(bad)} with a problem** (compile error, register spill, shared memory above "
        f"the block limit: {ARCHS[80].shared_limit // 1024} KB on sm_80, {ARCHS[90].shared_limit // 1024} KB on sm_90).",
        "",
        "Registers and spills are ptxas's own count (`ptxas -v`); shared memory is Triton's allocation for the block; "
        "tensor cores: `wgmma` or `mma` where the PTX holds such instructions, `none` otherwise (fp32 with "
        "INPUT_PRECISION=ieee multiplies on the FMA units, as torch does for fp32 without TF32).",
        "",
        "## Per kernel",
        "",
        "| kernel | builds | problems | registers (max) | spilled bytes (max) | shared KB (max) | tensor cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for kernel in kernels_seen:
        mine = [r for r in rows if r["kernel"] == kernel]
        ok = [r for r in mine if not r["error"]]
        cores = ", ".join(sorted({r["tensor_cores"] for r in ok}))
        lines.append(
            f"| {kernel} | {len(mine)} | {sum(bool(r['problems']) for r in mine)} | "
            f"{max((r['registers'] or 0) for r in ok) if ok else '-'} | "
            f"{max((r['spill_stores'] + r['spill_loads']) for r in ok) if ok else '-'} | "
            f"{max(r['shared'] for r in ok) / 1024 if ok else 0:.0f} | {cores} |"
        )
    if bad:
        lines += ["", "## Problems", ""] + [f"- `{r['id']}`: {'; '.join(r['problems'])}" for r in bad]
    lines += [
        "",
        "## Every build",
        "",
        "One row per kernel, autotune config, constexpr variant (and layout) and dtype; per architecture: "
        "registers a thread, spilled bytes (stores + loads), shared memory in KB, tensor-core instructions. "
        "Where arguments were built both 16-aligned and not, the cell shows the worse; report.json has each build. "
        "Configs: BM/BN/BK = BLOCK_M/N/K, GM = GROUP_M, w = warps, s = pipeline stages.",
    ]
    for kernel in kernels_seen:
        mine = [r for r in rows if r["kernel"] == kernel]
        lines += [
            "",
            f"### {kernel}",
            "",
            "| config | variant | dtype | sm_80 regs | spill | KB | TC | sm_90 regs | spill | KB | TC |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        groups = {}
        for r in mine:
            groups.setdefault((r["config"], r["variant"], r["dtype"]), {}).setdefault(r["arch"], []).append(r)
        for (config, variant, dtype), by_arch in groups.items():
            cells = " | ".join(_cell(by_arch[a.name]) if a.name in by_arch else "- | - | - | -" for a in ARCHS.values())
            lines.append(f"| {config} | {variant} | {dtype or '-'} | {cells} |")
    return "\n".join(lines) + "\n"


def write_build_report(out_dir: Path, profile: str = "full", workers: int | None = None) -> dict:
    """Build everything, write report.json and report.md; how many builds, how many with a problem, how long."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    builds = enumerate_builds(profile=profile)
    start = time.perf_counter()
    results = run_builds(builds, workers)
    seconds = time.perf_counter() - start
    versions = _versions()
    rows = build_rows(builds, results)
    (out_dir / "report.json").write_text(
        report_json(
            rows,
            {
                "profile": profile,
                "seconds": round(seconds, 1),
                "workers": workers,
                **versions,
                "shared_limits": {a.name: a.shared_limit for a in ARCHS.values()},
            },
        )
    )
    (out_dir / "report.md").write_text(report_markdown(rows, versions, seconds, workers))
    return {"builds": len(rows), "problems": sum(bool(r["problems"]) for r in rows), "seconds": seconds}


if __name__ == "__main__":  # one of run_builds's worker processes
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 5:
        sys.exit("usage: python -m bench.aot_builds --worker JOBS_FILE CLAIMS_DIR OUT_FILE (started by run_builds)")
    sys.exit(_worker(*sys.argv[2:]))
