#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what scripts/gpu_benchmark_run.sh needs on a lent GPU machine, which reaches no
# network and does not see ../shared:
#   .whl/          wheels (CPython 3.12, manylinux x86-64) of the packages its image lacks: MONAI, Ignite, MLflow
#                  (skinny) and what they need at import, the bundle's other dependencies
#   .device_data/  a copy of ../shared/data/isic2017_train_256 (26 MB; the images never enter git)
# Both are listed in .git/info/exclude. Then, with the session's device tool:
#   run(command="bash scripts/gpu_benchmark_run.sh", carry=[".whl", ".device_data"], timeout_s=540)
# The wheel list is the closure of egeunet-monai's requirements minus what that image already holds
# (/work/.library/device/KINDS.md, 2026-11-17); the versions are the ones our own environment runs.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
    alembic==1.20.1 annotated-types==0.8.0 cachetools==7.3.3 cffi==2.1.1 cryptography==50.0.2 databricks-sdk==0.162.0
    fastapi==0.165.0 fire==0.7.1 gitdb==4.0.12 gitpython==3.2.1 google-auth==2.63.0 importlib-metadata==9.1.0
    importlib-resources==7.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 mako==1.4.3
    mlflow-skinny==3.17.2 monai==1.6.1 nibabel==5.4.2 opentelemetry-api==1.45.2 opentelemetry-proto==1.45.2
    opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 pyasn1==0.6.5 pyasn1-modules==0.4.2
    pycparser==3.12 pydantic==2.14.4 pydantic-core==2.50.5 python-dotenv==1.2.4 pytorch-ignite==0.5.5
    referencing==0.37.0 rpds-py==2026.9.1 smmap==5.0.3 sqlalchemy==2.1.9 sqlparse==0.6.1 starlette==1.10.0
    termcolor==3.3.0 typing-inspection==0.4.5 uvicorn==0.54.0
)
for ignored in /.whl/ /.device_data/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 \
    -d .whl "${WHEELS[@]}"
rm -rf .device_data && mkdir -p .device_data
cp -r ../shared/data/isic2017_train_256 .device_data/
du -sh .whl .device_data
