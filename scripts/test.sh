#!/usr/bin/env bash
# The test suite, as `make test` runs it after lint and type checks.
# Extra arguments go to pytest: scripts/test.sh -k predict -x
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
scripts/services.sh
scripts/browser.sh
scripts/containers.sh
exec "${CHARNN_VENV:-.venv}/bin/python" -m pytest "$@"
