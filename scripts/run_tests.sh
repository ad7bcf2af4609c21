#!/usr/bin/env bash
# The test command of the README and of CI: system packages the tests need, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# the viewer's browser test (tests/viewer/test_viewer_browser.py) drives Debian's chromium through Playwright
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
        || echo "run_tests.sh: could not install chromium; the browser test will fail under CI=true" >&2
fi
# the C++ CPU kernels of egeunet_monai.accel, built once before tests start (and kill) training processes that would use them
"$VENV/bin/python" -c "from egeunet_monai.accel import kernels; kernels.load()"
# pytest exits 5 when nothing was collected: that is a failure here, never a pass. --durations: the 20 slowest, to
# keep an eye on CI's time.
exec "$VENV/bin/python" -m pytest tests --durations=20 "$@"
