#!/usr/bin/env bash
# Every measurement fastgen reports, in one command, on whatever device this machine has:
#   bash bench/run_all.sh [OUT_DIR] [STAGE]     (default: bench/results/<device-name>, all stages)
# STAGE is one of all, tests, bench, runs, compare, targets, so that a machine with a per-command time
# limit can run it in pieces into the same OUT_DIR. Writes: tests.txt (the full test suite, GPU tests
# included where there is a GPU), bench.json + bench.txt (pytest-benchmark), results.md (ratio table),
# runs/ (timed training runs), targets.md, and on a GPU compare/report.md (the GAN-vs-VAE comparison
# at epochs 10, 50, 200).
set -uo pipefail
cd "$(dirname "$0")/.."
export FASTGEN_TEST_DATA="${FASTGEN_TEST_DATA:-$(cd .. && pwd)/shared/data}"
device=$(python -c "from bench.telemetry import results_folder; print(results_folder())")
out="${1:-bench/results/$device}"
stage="${2:-all}"
case "$stage" in all|tests|bench|runs|compare|targets) ;; *) echo "unknown stage: $stage" >&2; exit 2;; esac
want() { [ "$stage" = all ] || [ "$stage" = "$1" ]; }
mkdir -p "$out/runs"
echo "device: $device -> $out ($stage)"
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date.txt"

if want tests; then
    python -m pytest tests -q -p no:cacheprovider > "$out/tests.txt" 2>&1
    echo "tests: $(tail -n 1 "$out/tests.txt")"
fi

if want bench; then
    python -m pytest bench --benchmark-only -q -p no:cacheprovider --benchmark-json="$out/bench.json" > "$out/bench.txt" 2>&1
    echo "bench: $(tail -n 1 "$out/bench.txt")"
    python bench/report.py "$out/bench.json" > "$out/results.md"
fi

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
