#!/usr/bin/env bash
# One call of the `device` tool (a lent GPU machine: no network, 10-minute commands, at most 8 files
# back from $OUT): runs one stage of bench/run_all.sh into bench/results/<gpu>/ there, then packs that
# folder (weights and checkpoints left out) into $OUT/results.tar.gz, beside the stage's log.
#
# Here, once, before the first call (../shared does not travel with the working tree; this does):
#   mkdir -p .carry/MNIST/raw && for f in ../shared/data/MNIST/raw/*-ubyte; do
#       gzip -c "$f" > ".carry/MNIST/raw/$(basename "$f").gz"; done
#   grep -qx '/.carry/' .git/info/exclude || echo /.carry/ >> .git/info/exclude
# Then one call a stage, in this order, each with carry [".carry"]:
#   bash bench/on_device.sh tests | bench | runs | compare
# and after each call, here:  tar -xzf <files_at>/results.tar.gz -C bench/results/
# A stage cut off at the limit can be run again: `compare` continues where it stopped.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?usage: bash bench/on_device.sh tests|bench|runs|compare|targets}"
: "${OUT:?OUT is set by the device tool}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The machine's python3 holds PyTorch; the scripts say python.
if ! command -v python >/dev/null; then
    mkdir -p /tmp/fastgen-bin && ln -sf "$(command -v python3)" /tmp/fastgen-bin/python
    export PATH="/tmp/fastgen-bin:$PATH"
fi
# The tests look for the plain IDX files: unpack the carried copies once.
export FASTGEN_TEST_DATA="$PWD/.carry"
for gz in .carry/MNIST/raw/*.gz; do
    [ -e "${gz%.gz}" ] || gunzip -kf "$gz"
done
folder=$(python -c "from bench.telemetry import results_folder; print(results_folder())")
bash bench/run_all.sh "bench/results/$folder" "$stage" 2>&1 | tee "$OUT/$stage.log"
tar -czf "$OUT/results.tar.gz" --exclude='*.safetensors' -C bench/results "$folder"
ls -la "$OUT"
