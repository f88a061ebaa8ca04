#!/usr/bin/env bash
# The GPU benchmarks in one run of about 8 minutes on one H200 (or any CUDA machine with JAX).
#
#     bash bench/gpu.sh            # from the checkout's root; output on stdout and, when $OUT
#                                  # is set, in $OUT/gpu.txt too
#
# Parts, each under its own `timeout` and inside an overall budget (BUDGET_S, default 460 s;
# a part is cut to what is left of it and skipped when under 20 s are left), so that one part
# failing or hanging does not stop the rest:
#   1. the devices JAX sees (and nvidia-smi);
#   2. bench/ensemble.py, MLP, M = 4 16 64 128 (20 steps of batch 128, every sequential fit
#      timed, 2 interleaved repeats);
#   3. bench/ensemble.py, small CNN, the same;
#   4. bench/ensemble.py --check-only: members = sequential fits on the GPU (its own part, so
#      that a failed check costs no timing);
#   5. bench/train_step.py (JAX fit / jitted step vs PyTorch, CNN and ResNet-18) — needs torch;
#   6. bench/adv_set.py (L2UL adversarial set, JAX vs PyTorch) — needs torch.
# Expected: about 8 minutes, most of it compiling (each M is a new program); a part cut by its
# timeout still prints its per-M lines (only the final table is lost).
# bench/l2ul_loop.py is left out: it reads the old engine from git history and trains on the
# real Fashion-MNIST, neither of which a copied working tree on an offline machine has.
#
# Python packages: JAX, flax, optax, chex, orbax and torch must be importable by $PYTHON
# (default python3). None of these benches imports ml_collections or tensorflow_datasets, but
# wheels found in .whl/ or shared/wheels/ (for an offline machine whose Python lacks them, made
# elsewhere with e.g. `python3 -m pip download --no-deps --only-binary=:all: --python-version
# 3.12 --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0`, every missing dependency
# named too, one version of each) are installed first, offline, into /tmp/site.
set -u

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-460}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset JAX_PLATFORMS  # scripts/test.sh sets cpu; here the GPU must be visible
# bench/train_step.py and adv_set.py hold JAX and PyTorch in one process: allocate on demand
# rather than JAX's default 75% of the card.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# install_wheels: the carried .whl/ or shared/wheels/ wheels, offline, into /tmp/site.
source bench/carried_wheels.sh

# part NAME SECONDS COMMAND...: runs COMMAND under `timeout`, at most SECONDS and at most what is
# left of the budget; reports its exit code and time, and never stops the script.
part() {
  local name=$1 limit=$2 left rc start
  shift 2
  left=$((BUDGET_S - SECONDS))
  if ((left < 20)); then
    echo "== $name: skipped (${left} s of the ${BUDGET_S} s budget left)"
    return 0
  fi
  ((limit > left)) && limit=$left
  echo "== $name (timeout ${limit} s): $*"
  start=$SECONDS
  timeout -k 10 "$limit" "$@"
  rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "!! $name: timed out after $((SECONDS - start)) s"
  elif ((rc != 0)); then
    echo "!! $name: exit code $rc after $((SECONDS - start)) s"
  else
    echo "== $name: done in $((SECONDS - start)) s"
  fi
  return 0
}

main() {
  echo "== bench/gpu.sh at $(date -u +%FT%TZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  install_wheels
  part nvidia-smi 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  part devices 60 "$PY" -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "backend", jax.default_backend()); print(jax.devices())'
  part ensemble-mlp 140 "$PY" bench/ensemble.py --models mlp --members 4 16 64 128 \
      --seq-members 0
  part ensemble-cnn 170 "$PY" bench/ensemble.py --models cnn --members 4 16 64 128 \
      --seq-members 0
  # Members = sequential fits on this backend (prints max |dparams|; TF32 or another matmul
  # algorithm under vmap may differ more than on the CPU, hence the looser tolerance).
  part ensemble-check 40 "$PY" bench/ensemble.py --models mlp cnn --check-only --tol 1e-3
  part train-step 80 "$PY" bench/train_step.py --nets cnn,resnet18 --conv auto --steps 20
  part adv-set 40 "$PY" bench/adv_set.py --repeats 3
  echo "== bench/gpu.sh: ${SECONDS} s in all"
}

if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  main 2>&1 | tee "$OUT/gpu.txt"
else
  main 2>&1
fi
