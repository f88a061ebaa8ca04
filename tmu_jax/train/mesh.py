"""Device meshes: a ``data`` axis for batch-sharded data parallelism."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D ``("data",)`` mesh over the first ``num_devices`` local devices (all by default).

  Built with ``Mesh`` (Auto axis types): ENVIRONMENT.md found ``jax.make_mesh``'s Explicit
  default clashing with single-device arrays.
  """
  devices = jax.devices()[: num_devices or len(jax.devices())]
  return Mesh(np.array(devices), ("data",))
