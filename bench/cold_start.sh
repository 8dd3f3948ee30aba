#!/usr/bin/env bash
# Wall time of a first run on a cold compiler cache: `python -m fastgen.train --model vae --epochs 10`
# with fastgen's CPU default (native kernels, compiled step), with the previous default (plain PyTorch
# ops, compiled: --kernels eager) and without compilation (--no-compile), each with empty Inductor and
# Triton caches. The native kernels' own build is not counted (built once per machine, beforehand).
# Usage: bash bench/cold_start.sh [DATA_DIR] [EPOCHS]  -> one line per variant on stdout.
set -euo pipefail
data="${1:-${FASTGEN_TEST_DATA:-../shared/data}}"
epochs="${2:-10}"
python -c "import fastgen.ops.native as n; assert n.load(), n.reason"
for variant in "default" "--kernels eager" "--no-compile"; do
    scratch="$(mktemp -d)"
    flags=()
    [ "$variant" != "default" ] && read -r -a flags <<< "$variant"
    start=$(date +%s.%N)
    TORCHINDUCTOR_CACHE_DIR="$scratch/inductor" TRITON_CACHE_DIR="$scratch/triton" \
        python -m fastgen.train --model vae --epochs "$epochs" --data-dir "$data" --no-download --quiet \
        --out "$scratch/run" "${flags[@]}" > /dev/null
    end=$(date +%s.%N)
    kernels=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['kernels_used'])" "$scratch/run/config.json")
    printf '%-16s kernels %-6s wall %6.1f s  (%s epochs)\n' "$variant" "$kernels" "$(python -c "print($end - $start)")" "$epochs"
    rm -rf "$scratch"
done
