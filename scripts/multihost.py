"""The ``tmu-jax`` launcher on several hosts: ``jax.distributed.initialize()``, then the launcher.

``tmu_jax.cli`` itself never calls ``jax.distributed.initialize``, so a plain ``launch.py`` on
N hosts runs N independent single-host processes. This wrapper initialises JAX's distributed
runtime first (before any JAX computation), then runs the unchanged launcher on the remaining
command line. Run it on every host, one process per host (docs/scale.md, "Several hosts"):

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i \\
        .venv/bin/python scripts/multihost.py --config=configs/cifar10.py --workdir=DIR

- ``JAX_COORDINATOR_ADDRESS``: host:port of process 0, the same on every host (JAX reads it
  itself);
- ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (0 … N−1, a different one per host): read here
  and passed to ``initialize`` (JAX does not read these two itself).

With none of the three set, ``jax.distributed.initialize()`` detects them from the cluster
environment where JAX supports it (Slurm, Open MPI, Cloud TPU). For a test on one machine
with CPU processes, also set ``JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo`` (cross-process
collectives on CPU) and ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` per process.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # tmu_jax from this checkout, as launch.py would find it


def initialize() -> None:
  """``jax.distributed.initialize`` from the environment (see the module docstring)."""
  import jax  # pylint: disable=import-outside-toplevel

  kwargs = {}
  for name, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
    value = os.environ.get(name)
    if value is not None:
      try:
        kwargs[arg] = int(value)
      except ValueError:
        sys.exit(f"error: {name}={value!r} is not an integer")
  jax.distributed.initialize(**kwargs)
  print(f"[multihost] process {jax.process_index()} of {jax.process_count()}: "
        f"{len(jax.local_devices())} local, {len(jax.devices())} global devices",
        file=sys.stderr, flush=True)


def main() -> None:
  initialize()
  from tmu_jax import cli  # pylint: disable=import-outside-toplevel
  cli.main()


if __name__ == "__main__":
  main()
