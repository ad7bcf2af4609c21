#!/usr/bin/env bash
# Run on a lent GPU machine, from the repository root, after scripts/gpu_benchmark_prepare.sh on this machine:
#   run(command="bash scripts/gpu_benchmark_run.sh", carry=[".whl", ".device_data"], timeout_s=540)
# Installs the carried wheels (the image has PyTorch but not MONAI, Ignite or MLflow), prints what the machine is,
# then runs scripts/benchmark_gpu.py on the carried ISIC images. Everything lands in $OUT (the device tool's folder
# that comes back), the table rewritten after each group so that a run cut short still returns what it measured.
# Extra arguments go to benchmark_gpu.py (e.g. --skip bundle-trainer, --compile-train).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_benchmark_out}
. scripts/device_env.sh
timeout "${BENCH_TIMEOUT_S:-470}" python3 scripts/benchmark_gpu.py --train-dir .device_data/isic2017_train_256 \
    --out "$OUT/benchmark_gpu.md" --json "$OUT/benchmark_gpu.json" "$@" > "$OUT/log.txt" 2>&1
rc=$?
tail -c 6000 "$OUT/log.txt"
exit $rc
