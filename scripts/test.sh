#!/usr/bin/env bash
# Set-up (if needed), then the test suite (about 10 minutes on 2 CPU cores at most).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
export JAX_PLATFORMS=cpu
# Two workers (pytest-xdist), each test file on one worker in order (module fixtures keep
# their order); TEST_WORKERS=0 runs in this process.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
