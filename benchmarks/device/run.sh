#!/usr/bin/env bash
# The prepared device run (see run.py): installs what the machine lacks
# from the offline bundle (`make device-bundle` writes device-bundle/),
# then runs every part under its own time limit.
#   benchmarks/device/run.sh [--dry-run] [run.py flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
BUNDLE=${BUNDLE:-device-bundle}
if [ -d "$BUNDLE" ] && ! "$PYTHON" -c "import keras, absl, safetensors" \
    2>/dev/null; then
  # Offline, from the bundle only; what the machine already has (its own
  # torch or jax build) satisfies the requirements and stays untouched.
  "$PYTHON" -m pip install --quiet --no-index --find-links "$BUNDLE" \
    keras-aim keras absl-py safetensors
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PYTHON" benchmarks/device/run.py "$@"
