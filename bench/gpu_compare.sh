#!/usr/bin/env bash
# The paper's full comparison on a GPU machine without network, in one command sized for 9 minutes:
#   bash bench/gpu_compare.sh ARCHIVE_DIR [COMPARE ARGS...]    (default: --epochs 10 50 200 --seeds 5)
# 1. python -m bench.seed_group: a 5-replica group's graphed step against one replica's, GAN and VAE, fp32
#    (target: <= 1.5x), into runs/gpu-compare/seed-group.{md,json}.
# 2. python -m fastgen.compare --epochs 10 50 200 --seeds 5 (fp32, the default path): each model's 5 seeds
#    trained as one group; the report, results (with each stage's time) and figures in runs/gpu-compare/compare/.
# Everything but weights is packed into ARCHIVE_DIR/results.tar.gz every half minute, so a command cut off at
# its limit still returns what it finished. Then: copy compare/{report.md,results.json,stages.json,figures}
# to docs/comparison/ and seed-group.* to bench/results/<gpu>/.
# On the CPU, `bash bench/gpu_compare.sh /tmp/out --quick` runs the same pipeline at --quick size.
#
# Before copying the checkout over, the data and the evaluator travel in .carry/ (see bench/gpu_run.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
archive_dir="${1:?usage: bash bench/gpu_compare.sh ARCHIVE_DIR [COMPARE ARGS...]}"
shift
compare_args=("$@")
[ ${#compare_args[@]} -gt 0 ] || compare_args=(--epochs 10 50 200 --seeds 5)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .carry ]; then
    export XDG_CACHE_HOME="$PWD/.carry/cache" FASTGEN_TEST_DATA="$PWD/.carry"
    for gz in .carry/MNIST/raw/*.gz; do [ -e "$gz" ] && { [ -e "${gz%.gz}" ] || gunzip -kf "$gz"; }; done
fi
data_dir="${FASTGEN_TEST_DATA:-$(cd .. && pwd)/shared/data}"
if ! command -v python >/dev/null; then  # some GPU images have python3 only
    mkdir -p /tmp/fastgen-bin && ln -sf "$(command -v python3)" /tmp/fastgen-bin/python
    export PATH="/tmp/fastgen-bin:$PATH"
fi
work=runs/gpu-compare  # ignored by git, so a rerun continues the comparison where it stopped
mkdir -p "$work" "$archive_dir"
pack() { tar -czf "$archive_dir/results.tar.gz" --exclude='*.safetensors' -C "$work" . 2>/dev/null; }
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || lscpu | grep 'Model name'
    python -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$work/environment.txt" 2>&1
cat "$work/environment.txt"

quick=0; for a in "${compare_args[@]}"; do [ "$a" = --quick ] && quick=1; done
if [ $quick = 0 ]; then
    timeout 150 python -m bench.seed_group --repeats 3 --out "$work" > "$work/seed-group.log" 2>&1
    echo "seed-group: rc $?"; tail -n 4 "$work/seed-group.md" 2>/dev/null
    pack
fi

python -m fastgen.compare "${compare_args[@]}" --out "$work/compare" --data-dir "$data_dir" --no-download \
    > "$work/compare.log" 2>&1 &
compare=$!
while kill -0 $compare 2>/dev/null; do pack; sleep 30; done
wait $compare; rc=$?
pack
echo "compare: rc $rc"; tail -n 3 "$work/compare.log"
cat "$work/compare/stages.json" 2>/dev/null
exit $rc
