#!/usr/bin/env bash
# Set up .venv with charnn and its dependencies. Idempotent: a second run only checks.
#
#   scripts/install.sh          runtime dependencies
#   scripts/install.sh dev      plus the test tools (pytest, ruff, mypy)
#
# torch is installed before the package so that pip never resolves "torch" on its own,
# which on PyPI means a multi-GB CUDA build. By default the CPU build is taken:
# first from wheels already on this machine (pip's find-links), then from PyTorch's
# CPU index. For a GPU machine, point CHARNN_TORCH_INDEX at the CUDA index you want:
#   CHARNN_TORCH_INDEX=https://download.pytorch.org/whl/cu128 scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${CHARNN_VENV:-.venv}"
TORCH_VERSION="${CHARNN_TORCH_VERSION:-2.13.0}"
TORCH_INDEX="${CHARNN_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
EXTRAS="${1:-}"
# Test tools whose pins clash with charnn's own (openapi-python-client wants an older typer)
# live in a virtual environment of their own.
TOOLS="${CHARNN_TOOLS_VENV:-.venv-tools}"
OPENAPI_CLIENT_VERSION=0.29.1

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "==> installing torch==$TORCH_VERSION"
  # A wheel already on this machine wins (no download); its own dependencies come
  # from the package index as usual. Otherwise PyTorch's index for the chosen build.
  if "${pip[@]}" install --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
    "${pip[@]}" install "torch==$TORCH_VERSION"
  else
    "${pip[@]}" install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX" \
      --extra-index-url https://pypi.org/simple
  fi
fi

target="."
[ "$EXTRAS" = "dev" ] && target=".[dev]"
stamp="$VENV/.charnn-installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing charnn ($target)"
  "${pip[@]}" install -e "$target"
  touch "$stamp"
fi

if [ "$EXTRAS" = "dev" ] && [ ! -x "$TOOLS/bin/openapi-python-client" ]; then
  echo "==> installing openapi-python-client into $TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip --disable-pip-version-check -q install \
    "openapi-python-client==$OPENAPI_CLIENT_VERSION"
fi
