"""Device meshes: a ``models`` axis (ensemble members over devices) and a ``data`` axis
(batch-sharded data parallelism)."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("models", "data")


def make_mesh(num_devices: int | None = None, models: int = 1) -> Mesh:
  """A ``("models", "data")`` mesh over the first ``num_devices`` local devices (all by
  default): ``models`` devices along the member axis, the rest along the batch axis.

  Built with ``Mesh`` (Auto axis types): ENVIRONMENT.md found ``jax.make_mesh``'s Explicit
  default clashing with single-device arrays. With ``models = 1`` it is plain data parallelism.
  """
  devices = jax.devices()[: num_devices or len(jax.devices())]
  if models < 1 or len(devices) % models:
    raise ValueError(f"make_mesh: models={models} must divide the {len(devices)} devices")
  return Mesh(np.array(devices).reshape(models, len(devices) // models), AXES)


def models_axis_for(num_members: int, num_devices: int) -> int:
  """The size of the ``models`` axis for an ensemble of ``num_members`` on ``num_devices``:
  the largest divisor of the device count that also divides the member count (every device
  holds the same number of members; the rest of the devices go to the ``data`` axis)."""
  return math.gcd(max(1, num_members), max(1, num_devices))


def models_size(mesh: Mesh | None) -> int:
  """How many devices ``mesh`` puts along its ``models`` axis (1 without one)."""
  if mesh is None or "models" not in mesh.axis_names:
    return 1
  return int(mesh.shape["models"])
