#!/usr/bin/env bash
# The test command of the README and of CI: system packages the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# pytest exits 5 when nothing was collected: that is a failure here, never a pass.
exec "$VENV/bin/python" -m pytest tests "$@"
