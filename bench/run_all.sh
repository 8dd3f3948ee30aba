#!/usr/bin/env bash
# Every measurement fastgen reports, in one command, on whatever device this machine has:
#   bash bench/run_all.sh [OUT_DIR] [STAGE]     (default: bench/results/<device-name>, all stages)
# STAGE is one of all, tests, tests-gpu, bench (= bench-kernels + bench-steps), bench-kernels,
# bench-steps, runs, compare, targets, so that a machine with a per-command time limit (10 minutes)
# can run it in pieces into the same OUT_DIR. Writes: tests.txt (the suite but the `gpu`-marked tests),
# tests-gpu.txt (those, where there is a GPU), bench-kernels.json/.txt and bench-steps.json/.txt
# (pytest-benchmark), results.md (ratio table), runs/ (timed training runs), targets.md, and on a GPU
# compare/report.md (the GAN-vs-VAE comparison at epochs 10, 50, 200).
set -uo pipefail
cd "$(dirname "$0")/.."
export FASTGEN_TEST_DATA="${FASTGEN_TEST_DATA:-$(cd .. && pwd)/shared/data}"
device=$(python -c "from bench.telemetry import results_folder; print(results_folder())")
out="${1:-bench/results/$device}"
stage="${2:-all}"
case "$stage" in all|tests|tests-gpu|bench|bench-kernels|bench-steps|runs|compare|targets) ;;
    *) echo "unknown stage: $stage" >&2; exit 2;; esac
want() {  # want STAGE: whether this call runs STAGE
    case "$stage" in
        all) return 0 ;;
        bench) [[ "$1" == bench-* ]] ;;
        *) [ "$stage" = "$1" ] ;;
    esac
}
mkdir -p "$out/runs"
echo "device: $device -> $out ($stage)"
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date.txt"

if want tests; then
    python -m pytest tests -m "not gpu" -q -p no:cacheprovider > "$out/tests.txt" 2>&1
    echo "tests: $(tail -n 1 "$out/tests.txt")"
fi
if want tests-gpu; then
    python -m pytest tests -m gpu -q -p no:cacheprovider > "$out/tests-gpu.txt" 2>&1
    echo "tests-gpu: $(tail -n 1 "$out/tests-gpu.txt")"
fi

bench() {  # bench NAME PYTEST_ARGS...: one pytest-benchmark run into NAME.json, then the ratio table of all
    local name=$1; shift
    python -m pytest "$@" --benchmark-only -q -p no:cacheprovider --benchmark-json="$out/$name.json" > "$out/$name.txt" 2>&1
    echo "$name: $(tail -n 1 "$out/$name.txt")"
    # the ratio table of every stage's results so far (a stage whose benchmarks all skip writes no file)
    if compgen -G "$out/bench-*.json" > /dev/null; then python bench/report.py "$out"/bench-*.json > "$out/results.md"; fi
}
if want bench-kernels; then bench bench-kernels bench/test_kernels.py; fi
if want bench-steps; then bench bench-steps bench --ignore=bench/test_kernels.py; fi

# Timed training runs, compilation included in wall time.
data=(--data-dir "$FASTGEN_TEST_DATA" --no-download --quiet --overwrite)
on_gpu() { python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; }
if want runs; then
    if on_gpu; then
        python -m fastgen.train --model gan --epochs 1 --batch-size 64 --out "$out/runs/gan-1-epoch-b64" "${data[@]}"
        python -m fastgen.train --model gan --epochs 10 --batch-size 64 --out "$out/runs/gan-10-epochs-b64" "${data[@]}"
        python -m fastgen.train --model vae --epochs 200 --out "$out/runs/vae-200-epochs" "${data[@]}"
        python -m fastgen.train --model gan --epochs 2 --batch-size 64 --amp --out "$out/runs/gan-2-epochs-b64-amp" "${data[@]}"
    else
        python -m fastgen.train --model vae --epochs 10 --out "$out/runs/vae-10-epochs" "${data[@]}"
        python -m fastgen.train --model gan --epochs 1 --out "$out/runs/gan-1-epoch" "${data[@]}"
    fi
fi
if want compare && on_gpu; then
    # The paper's comparison at epochs 10, 50, 200 (minutes on a GPU); rerun to continue if it is cut off.
    python -m fastgen.compare --out "$out/compare" --data-dir "$FASTGEN_TEST_DATA" --no-download --quiet
fi
python bench/check_targets.py "$out" | tee "$out/targets.md"
