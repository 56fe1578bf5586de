#!/usr/bin/env bash
# Pin the container image's runtime dependencies into requirements.lock: charnn installed
# into a scratch virtual environment beside the CPU build of torch, then frozen.
# torch stays out of the lock: the Dockerfile installs it first, from the index of the
# build it wants (CPU or CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${CHARNN_TORCH_VERSION:-2.13.0}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
pip=("$scratch/venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "torch==$TORCH_VERSION" --extra-index-url https://download.pytorch.org/whl/cpu
"${pip[@]}" install .
{
  echo "# The runtime dependencies of the container image, pinned (torch has its own layer and index)."
  echo "# Regenerate after changing pyproject.toml's dependencies: scripts/lock.sh"
  "$scratch/venv/bin/python" -m pip freeze --all --exclude charnn --exclude pip | grep -v '^torch=='
  # What the oldest Python 3.11 releases need beyond this interpreter (Debian bookworm has
  # 3.11.2): pip freeze writes no environment markers, so they are named here.
  echo 'async-timeout==5.0.1 ; python_full_version < "3.11.3"  # redis'
} > requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) packages"
