#!/usr/bin/env bash
# Set-up (if needed), then the test suite (about 10 minutes on 2 CPU cores at most).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -q "$@"
