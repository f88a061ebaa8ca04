#!/usr/bin/env bash
# Issue 11's ε on the full recipe (configs/fashion_mnist.py:epsilon_full: all 60 000 images,
# 50 epochs, N = 32, 64 gold models, classes 6, 4, 2, every row) in one call on a GPU machine.
# On the 2-core CPU a class with five rows took 52 min alone (docs/results/
# fashion_mnist_epsilon.md), so the three classes with every row are a GPU job.
#
# Here, once: the device machine reaches no registry and has neither ml_collections nor
# Fashion-MNIST, so both travel with the working tree (.whl/ and .data/ are git-ignored):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0
#     mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# Then one device call (about 35 MB travel: the tree, the data, the wheel):
#     run(command="bash scripts/gpu_epsilon.sh", carry=[".whl", ".data"], timeout_s=600)
#
# Output: the log on stdout (and $OUT/epsilon_full.txt), and $OUT/epsilon_full.results.json.gz,
# the results.json as it stands at the end. The launcher rewrites it after every class, so a run
# cut by BUDGET_S (default 540 s) still returns the classes it finished; read it with
#     python scripts/epsilon_table.py epsilon_full.results.json.gz
# Extra arguments go to launch.py (e.g. "--config.experiment.forget_classes=(6,)").
set -u

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-540}
DATA=${DATA:-.data/fashion-mnist}
WORKDIR=${WORKDIR:-/tmp/epsilon_full}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset JAX_PLATFORMS  # scripts/test.sh sets cpu; here the GPU must be visible
source bench/carried_wheels.sh

main() {
  echo "== scripts/gpu_epsilon.sh at $(date -u +%FT%TZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  install_wheels
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$PY" -c 'import jax; print("jax", jax.__version__, jax.default_backend(), jax.devices())'
  echo "== launch.py :epsilon_full (timeout ${BUDGET_S} s), data from $DATA, workdir $WORKDIR"
  timeout -k 10 "$BUDGET_S" "$PY" launch.py --config=configs/fashion_mnist.py:epsilon_full \
      --workdir="$WORKDIR" --config.data.dir="$DATA" "$@"
  local rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "!! cut after ${BUDGET_S} s: the classes finished so far are in results.json"
  else
    echo "== launch.py exit code $rc"
  fi
  echo "== scripts/gpu_epsilon.sh: ${SECONDS} s in all"
  return "$rc"
}

if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  main "$@" 2>&1 | tee "$OUT/epsilon_full.txt"
  rc=${PIPESTATUS[0]}
  [[ -f "$WORKDIR/results.json" ]] && gzip -c "$WORKDIR/results.json" \
      > "$OUT/epsilon_full.results.json.gz"
  exit "$rc"
else
  main "$@"
fi
