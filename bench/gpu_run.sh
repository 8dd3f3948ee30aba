#!/usr/bin/env bash
# What only a GPU can show, sized for a GPU machine without network that is held for minutes:
#   bash bench/gpu_run.sh start ARCHIVE_DIR [SECONDS]   (default 540: fits a 10-minute command)
#   bash bench/gpu_run.sh collect ARCHIVE_DIR SECONDS
# start: the environment, the benchmarks (with the GPU to themselves), then the GAN-vs-VAE comparison
#   (the default 5 seeds, each model's as one group; epoch 10, then 50, then 200, each with its report; the
#   full comparison in one command is bench/gpu_compare.sh) in the background beside the
#   `gpu`-marked tests; returns SECONDS after it began, or when the comparison ends.
# collect: wait up to SECONDS for that comparison (it outlives `start` while the machine stays up).
# Both pack what exists so far into ARCHIVE_DIR/results.tar.gz (weights left out) every half minute, so
# a command cut off at its limit still returns its results. Here: tar -xzf results.tar.gz -C bench/results/
#
# Before copying the checkout over (MNIST gzipped is 12 MB; the evaluator is the one the CPU comparison
# used, so the scores are comparable):
#   mkdir -p .carry/MNIST/raw .carry/cache/fastgen && cp -r ~/.cache/fastgen/evaluators .carry/cache/fastgen/
#   for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > ".carry/MNIST/raw/$(basename "$f").gz"; done
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:?usage: bash bench/gpu_run.sh start|collect ARCHIVE_DIR [SECONDS]}"
archive_dir="${2:?usage: bash bench/gpu_run.sh start|collect ARCHIVE_DIR [SECONDS]}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XDG_CACHE_HOME="$PWD/.carry/cache"
export FASTGEN_TEST_DATA="$PWD/.carry"
if ! command -v python >/dev/null; then  # some GPU images have python3 only
    mkdir -p /tmp/fastgen-bin && ln -sf "$(command -v python3)" /tmp/fastgen-bin/python
    export PATH="/tmp/fastgen-bin:$PATH"
fi
work=runs/gpu  # ignored by git, so it survives the checkout being copied over again
mkdir -p "$work" "$archive_dir"
pack() { tar -czf "$archive_dir/results.tar.gz" --exclude='*.safetensors' --exclude='*.png~' -C "$work" . 2>/dev/null; }
compare_running() { [ -f "$work/compare.pid" ] && kill -0 "$(cat "$work/compare.pid")" 2>/dev/null; }

if [ "$mode" = collect ]; then
    deadline=$((SECONDS + ${3:?collect needs SECONDS}))
    while compare_running && [ $SECONDS -lt $deadline ]; do pack; sleep 20; done
    pack; tail -n 5 "$work/compare.log"; exit 0
fi

for gz in .carry/MNIST/raw/*.gz; do [ -e "${gz%.gz}" ] || gunzip -kf "$gz"; done
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
    python -c "import torch, triton, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
    python -c "from fastgen.ops import native; print('native kernels loaded:', native.load())"
    lscpu | grep -E 'Model name|^CPU\(s\)'
} > "$work/environment.txt" 2>&1
cat "$work/environment.txt"

# Benchmarks first: nothing else on the GPU.
timeout 170 python -m pytest bench --benchmark-only -q -p no:cacheprovider \
    --benchmark-json="$work/bench.json" > "$work/bench.txt" 2>&1
echo "bench: rc $? $(tail -n 1 "$work/bench.txt")"
pack

# --amp's bf16 working copies against autocast over the float32 weights: the graphed step's kernels and time.
timeout 150 python -m bench.amp_step --out "$work" > "$work/amp-step.txt" 2>&1
echo "amp-step: rc $? $(grep -c '^| [gv]a' "$work/amp-step.txt") rows"
pack

# The comparison, one checkpoint epoch at a time so that each finished stage leaves a complete report.
data=(--data-dir "$PWD/.carry" --no-download)
setsid nohup bash -c "
    for epochs in '10' '10 50' '10 50 200'; do
        python -m fastgen.compare --epochs \$epochs --out $work/compare ${data[*]} || exit 1
        cp $work/compare/report.md $work/compare/report-\${epochs// /-}.md
        cp $work/compare/results.json $work/compare/results-\${epochs// /-}.json
    done
    echo compare finished" > "$work/compare.log" 2>&1 < /dev/null &
echo $! > "$work/compare.pid"

parallel=(); python -c "import xdist" 2>/dev/null && parallel=(-n 4)
timeout 200 python -m pytest tests -m gpu -q -p no:cacheprovider "${parallel[@]}" -r fEs > "$work/tests-gpu.txt" 2>&1
echo "tests-gpu: rc $? $(tail -n 1 "$work/tests-gpu.txt")"
pack
while compare_running && [ $SECONDS -lt "${3:-540}" ]; do pack; sleep 20; done
pack
tail -n 5 "$work/compare.log"
grep -E "passed|failed|error" "$work/tests-gpu.txt" | tail -n 3
exit 0
