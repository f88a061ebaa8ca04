#!/usr/bin/env bash
# Set-up (if needed), then the main job on the embedded default (real Fashion-MNIST).
# Extra arguments go to launch.py, e.g. --workdir=DIR or --config.train.epochs=5.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec .venv/bin/python launch.py --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist "$@"
