# Sourced, from the repository root, by the scripts that run on a lent GPU machine (gpu_benchmark_run.sh,
# gpu_seeds_run.sh): installs the wheels carried in .whl/ (scripts/gpu_benchmark_prepare.sh; the machine's image has
# PyTorch but not MONAI, Ignite or MLflow, and reaches no network) and writes what the machine is to $OUT/machine.txt.
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.txt" 2>&1 || { tail -20 "$OUT/pip.txt"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    nproc
    python3 -c "import sys, torch, monai, ignite, mlflow; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0), 'MONAI', monai.__version__, 'ignite', ignite.__version__, 'mlflow', mlflow.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
