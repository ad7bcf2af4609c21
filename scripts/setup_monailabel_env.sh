#!/usr/bin/env bash
# Create the separate Python environment in which a MONAI Label server runs the EGE-UNet bundle.
#
#   scripts/setup_monailabel_env.sh            # -> <repo>/.venv-monailabel
#   MONAILABEL_VENV=/some/dir scripts/setup_monailabel_env.sh
#
# Why a separate venv: monailabel 0.8.5 wants its own torch/torchvision pair (torch 2.14.1 +
# torchvision 0.29.1, a CUDA build that lies on this machine's disk and also runs on CPU) plus a
# pile of DICOM/web dependencies (pydicom<3, pynetdicom<3, dicomweb-client<0.60: newer majors break
# monailabel 0.8.5's imports). The project's main venv stays free of them.
#
# ONNX Runtime and onnx (onnxruntime==1.32.0 and onnx==1.23.2, the project's versions, installed with the torch
# and numpy pins so that they pull in neither another torch nor numpy 2, which onnx's newest ml_dtypes would): the
# app's infer task and scorer run the network with egeunet_monai.inference.load_runtime, whose default is ONNX
# Runtime on the model PyTorch's exporter writes (it needs onnx); without them they fall back to TorchScript.
#
# How the network code reaches the server: this repo is installed into the venv (`pip install -e
# <repo>`), so `egeunet_monai` is importable by the bundle's configs
# (`"_target_": "egeunet_monai.networks.nets.EGEUNet"`). The bundle therefore does NOT ship a copy of
# the code in its scripts/ folder; a user who moves the bundle elsewhere installs the package
# (`pip install egeunet-monai` or `pip install -e <repo>`) in the MONAI Label environment.
#
# Idempotent: if the venv already imports monailabel, onnx, onnxruntime and this repo's egeunet_monai, it exits at once.
# A full install takes ~8 GB of disk and ~4 minutes.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MONAILABEL_VENV:-$REPO_ROOT/.venv-monailabel}"
PYTHON="${PYTHON:-python3}"

log() { echo "[setup_monailabel_env] $*"; }

check_env() {
    # 0: monailabel + onnx(runtime) + egeunet_monai from this repo; 3: monailabel ok, onnx(runtime) missing;
    # 2: monailabel and onnx(runtime) ok, egeunet_monai missing/elsewhere; 1: broken
    [ -x "$VENV/bin/python" ] || return 1
    # from / and without PYTHONPATH, so that a checkout in the working directory cannot mask the installed one
    (cd / && env -u PYTHONPATH "$VENV/bin/python" - "$REPO_ROOT") <<'PY' || return $?
import sys
from pathlib import Path
try:
    import monailabel  # noqa: F401
    import torch  # noqa: F401
except Exception as exc:  # pragma: no cover - diagnostic only
    print(f"monailabel not importable: {exc}")
    sys.exit(1)
try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
except Exception as exc:
    print(f"onnx or onnxruntime not importable: {exc}")
    sys.exit(3)
try:
    import egeunet_monai
except Exception as exc:
    print(f"egeunet_monai not importable: {exc}")
    sys.exit(2)
repo = Path(sys.argv[1]).resolve()
where = Path(egeunet_monai.__file__).resolve()
if repo not in where.parents:
    print(f"egeunet_monai comes from {where}, not from {repo}")
    sys.exit(2)
PY
}

ONNXRUNTIME=(onnxruntime==1.32.0 onnx==1.23.2 numpy==1.26.4 torch==2.14.1 torchvision==0.29.1)

set +e
check_env
status=$?
set -e
if [ "$status" -eq 3 ]; then
    log "monailabel present in $VENV; adding ${ONNXRUNTIME[*]:0:2}"
    "$VENV/bin/python" -m pip install --progress-bar off "${ONNXRUNTIME[@]}"
    set +e
    check_env
    status=$?
    set -e
fi
if [ "$status" -eq 0 ]; then
    log "ready: $VENV (monailabel and egeunet_monai import)"
    exit 0
fi
if [ "$status" -eq 2 ]; then
    log "monailabel present in $VENV; (re)installing egeunet_monai from $REPO_ROOT"
    "$VENV/bin/python" -m pip install --no-deps -e "$REPO_ROOT"
    check_env
    log "ready: $VENV"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --progress-bar off)

log "[1/3] torch 2.14.1 + torchvision 0.29.1 (from local disk; several GB)"
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1

log "[2/3] monailabel 0.8.5 and its DICOM stack"
"${PIP[@]}" monailabel==0.8.5 'pydicom<3' 'pynetdicom<3' 'dicomweb-client<0.60' torch==2.14.1 torchvision==0.29.1

log "[3/3] ONNX Runtime, and this repo (egeunet_monai) in editable mode: $REPO_ROOT"
"${PIP[@]}" "${ONNXRUNTIME[@]}"
"${PIP[@]}" -e "$REPO_ROOT" torch==2.14.1 torchvision==0.29.1

check_env
"$VENV/bin/python" -c "import monailabel, monai, torch; print('monailabel', monailabel.__version__, '| monai', monai.__version__, '| torch', torch.__version__)"
log "ready: $VENV in $(( $(date +%s) - start )) s; activate with: source $VENV/bin/activate"
