#!/usr/bin/env bash
# Run on a lent GPU machine, from the repository root, after scripts/gpu_benchmark_prepare.sh on this machine:
#   run(command="bash scripts/gpu_seeds_run.sh zo 3 4 5 6 7 8 9 10", carry=[".whl", ".device_data"], timeout_s=560)
# Trains one recipe on ISIC 2017 only (.device_data/isic2017_train_256: the external test's training side,
# docs/recipes.md) with each seed given, PARALLEL (default 4) processes at a time on the one GPU, through
# scripts/train_seeds.py. Recipes: zo (release 0.3.0's: colour, zoom 0.8-1.5, EMA 0.001, large lesions x3, 50 epochs)
# and zol (zo with Dice weight 0.25). Each finished seed's model.pt, split and log tail land in $OUT/seeds/ as it
# ends, so a run cut short by the time limit still brings back every finished seed. Then, on this machine, test each
# on all 150 PH2 photographs:
#   python scripts/evaluation_report.py --data ../shared/data/ph2 --weights <files_at>/seeds/<run>/model.pt --out ...
# GPU training speed is unmeasured (docs/benchmarks.md): a first call with two seeds and SEEDS_TIMEOUT_S=240 says
# how many fit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_seeds_out}
. scripts/device_env.sh
recipe=${1:?usage: gpu_seeds_run.sh zo|zol SEED...}
shift
zo=(--intensity_prob 0.5 --zoom_prob 0.5 --zoom_range "[0.8,1.5]" --ema_momentum 0.001 --large_lesion_repeats 3)
case $recipe in
    zo) extra=("${zo[@]}") ;;
    zol) extra=("${zo[@]}" --loss_def#lambda_dice 0.25) ;;
    *) echo "unknown recipe '$recipe': zo or zol" >&2; exit 2 ;;
esac
timeout "${SEEDS_TIMEOUT_S:-500}" python3 scripts/train_seeds.py --dataset_dir .device_data/isic2017_train_256 \
    --out "$OUT/seeds" --work /tmp/seeds --name "isic50$recipe" --parallel "${PARALLEL:-4}" --seeds "$@" \
    -- --max_epochs 50 --lr_cosine_period 50 "${extra[@]}" 2>&1 | tee "$OUT/log.txt" | tail -40
cat "$OUT/seeds/seeds.tsv" 2>/dev/null
