#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine: the Fashion-MNIST package and a venv
# holding tmu_jax (editable) and its dependencies.
# Sourced by scripts/run_default.sh and scripts/test.sh; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  echo "[setup] installing Debian package dataset-fashion-mnist" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  $PY -m venv .venv
fi
# The package itself, editable, with its dependencies and pytest (pyproject.toml): any
# .venv/bin/python can `import tmu_jax`, and .venv/bin/tmu-jax is the launcher.
STAMP=.venv/.requirements-installed
if [ ! -f "$STAMP" ] || [ ! -x .venv/bin/tmu-jax ] || [ pyproject.toml -nt "$STAMP" ] \
    || [ requirements.txt -nt "$STAMP" ] || [ requirements-dev.txt -nt "$STAMP" ]; then
  echo "[setup] installing tmu_jax (editable) and its requirements (about 1 GB, 30 s)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$STAMP"
fi
