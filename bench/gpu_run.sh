#!/usr/bin/env bash
# What only a GPU can show about fastgen's speed, in one command of at most 6 minutes on a GPU machine without
# network (the paper's comparison has its own command, bench/gpu_compare.sh):
#   bash bench/gpu_run.sh OUT
# Writes into OUT (then copied to bench/results/<gpu>/), each stage with the GPU to itself, under its own cap (360 s
# of caps in all):
#   environment.txt     the GPU, driver, torch, Triton, CUDA
#   bench-kernels.*     pytest bench/test_kernels.py --benchmark-only: the ops against the eager composite (memory)
#   bench-steps.*       the steps eager / compiled / graphed against the plain-module step under the same compile
#                       and CUDA graph (bench/test_steps.py); end to end, epochs against the plain baseline
#   op-rivals.*         python -m bench.op_rivals: each op and layer against the plain modules, interleaved rounds
#   kernel-profile.*    python -m bench.kernel_profile: the graphed steps' kernels (GAN, VAE; fp32, bf16)
#   amp-step.*          python -m bench.amp_step: --amp's bf16 working copies against autocast over fp32 weights
#   linear-choices.json the fused linear's implementations measured on this GPU (fastgen/ops/linear_tuning.py)
#   tests-gpu.txt       the `gpu`-marked tests
#   targets.md          python bench/check_targets.py OUT: one pass or FAIL line per target
# Then: python -m bench.report --docs regenerates the performance docs from bench/results/.
#
# Before copying the checkout over (MNIST gzipped is 12 MB; the evaluator is the one the CPU runs use):
#   mkdir -p .carry/MNIST/raw .carry/cache/fastgen && cp -r ~/.cache/fastgen/evaluators .carry/cache/fastgen/
#   for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > ".carry/MNIST/raw/$(basename "$f").gz"; done
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash bench/gpu_run.sh OUT}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XDG_CACHE_HOME="$PWD/.carry/cache"
export FASTGEN_TEST_DATA="$PWD/.carry"
if ! command -v python >/dev/null; then  # some GPU images have python3 only
    mkdir -p /tmp/fastgen-bin && ln -sf "$(command -v python3)" /tmp/fastgen-bin/python
    export PATH="/tmp/fastgen-bin:$PATH"
fi
for gz in .carry/MNIST/raw/*.gz; do [ -e "$gz" ] && { [ -e "${gz%.gz}" ] || gunzip -kf "$gz"; }; done
began=$SECONDS
stage() {  # stage NAME CAP_SECONDS COMMAND...: run it under its cap, say how it ended and how long it took
    local name=$1 cap=$2 start=$SECONDS
    shift 2
    timeout "$cap" "$@" > "$out/$name.txt" 2>&1
    echo "$name: rc $? in $((SECONDS - start)) s: $(tail -n 1 "$out/$name.txt")"
}
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
    python -c "import torch, triton, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    python -c "from fastgen.ops import native; print('native kernels loaded:', native.load())"
    lscpu | grep -E 'Model name|^CPU\(s\)'
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

# pytest-benchmark writes its JSON when the session ends: one session per file group, so that a stage cut off at its
# cap loses only its own results.
bench=(python -m pytest --benchmark-only -q -p no:cacheprovider)
stage bench-kernels 35 "${bench[@]}" bench/test_kernels.py --benchmark-json="$out/bench-kernels.json"
stage bench-steps 140 "${bench[@]}" bench/test_steps.py bench/test_end_to_end.py --benchmark-json="$out/bench-steps.json"
stage op-rivals 35 python -m bench.op_rivals --out "$out"
stage kernel-profile 40 python -m bench.kernel_profile --steps 5 --out "$out"
stage amp-step 35 python -m bench.amp_step --rounds 3 --out "$out"
cp "$XDG_CACHE_HOME"/fastgen/tuning/linear-*.json "$out/linear-choices.json" 2>/dev/null
parallel=(); python -c "import xdist" 2>/dev/null && parallel=(-n 4)
stage tests-gpu 75 python -m pytest tests -m gpu -q -p no:cacheprovider "${parallel[@]}" -r fEs
python bench/check_targets.py "$out" > "$out/targets.md"
grep -c FAIL "$out/targets.md" | xargs echo "targets FAIL:"
echo "gpu_run: $((SECONDS - began)) s"
exit 0
