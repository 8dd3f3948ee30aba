#!/usr/bin/env bash
# Run one stage of bench/run_all.sh on a remote GPU machine that has no network, and pack its results
# into one file to copy back.
#
# usage: bash bench/remote_stage.sh STAGE [RESULTS_ARCHIVE]
#   STAGE            tests | tests-gpu | bench-kernels | bench-steps | runs | compare | targets (see
#                    bench/run_all.sh); each is meant to fit a 10-minute command, and `compare`
#                    continues where an interrupted one stopped
#   RESULTS_ARCHIVE  where to write the packed results (default: $FASTGEN_REMOTE_OUT/results.tar.gz,
#                    else ./remote-results.tar.gz); the stage's log is written beside it
# environment:
#   FASTGEN_REMOTE_DATA  a folder holding MNIST/raw/*-ubyte or *-ubyte.gz copied over with the checkout
#                        (default: .carry); gzipped files are unpacked in place once
#   FASTGEN_REMOTE_OUT   the folder whose contents are copied back (optional)
#
# Before copying the checkout over, once (MNIST gzipped is 12 MB):
#   mkdir -p .carry/MNIST/raw && for f in ../shared/data/MNIST/raw/*-ubyte; do
#       gzip -c "$f" > ".carry/MNIST/raw/$(basename "$f").gz"; done
# After each stage, here:  tar -xzf RESULTS_ARCHIVE -C bench/results/
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: bash bench/remote_stage.sh STAGE [RESULTS_ARCHIVE] (stages: see bench/run_all.sh)}"
archive="${2:-${FASTGEN_REMOTE_OUT:+$FASTGEN_REMOTE_OUT/results.tar.gz}}"
archive="${archive:-$PWD/remote-results.tar.gz}"
data="${FASTGEN_REMOTE_DATA:-.carry}"
mkdir -p "$(dirname "$archive")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Some GPU images have python3 only; the scripts say python.
if ! command -v python >/dev/null; then
    mkdir -p /tmp/fastgen-bin && ln -sf "$(command -v python3)" /tmp/fastgen-bin/python
    export PATH="/tmp/fastgen-bin:$PATH"
fi
export FASTGEN_TEST_DATA="$(cd "$data" && pwd)"
for gz in "$data"/MNIST/raw/*.gz; do
    [ -e "$gz" ] && { [ -e "${gz%.gz}" ] || gunzip -kf "$gz"; }
done
folder=$(python -c "from bench.telemetry import results_folder; print(results_folder())")
bash bench/run_all.sh "bench/results/$folder" "$stage" 2>&1 | tee "$(dirname "$archive")/$stage.log"
tar -czf "$archive" --exclude='*.safetensors' -C bench/results "$folder"
ls -la "$(dirname "$archive")"
