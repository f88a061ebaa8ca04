"""Named random keys: every random draw of a run derives from its seed by a path of names.

``named(key, "mia/members")`` is ``fold_in(key, crc32("mia/members"))``: a draw's key says what it
is for, two draws never share a key by accident, and adding a draw never shifts another's.
"""

from __future__ import annotations

import zlib

import jax
import numpy as np


def seed_key(seed: int) -> jax.Array:
  """The root key of ``seed``."""
  return jax.random.key(int(seed))


def named(key: jax.Array, name: str) -> jax.Array:
  """The key of the draw called ``name`` under ``key``."""
  return jax.random.fold_in(key, zlib.crc32(name.encode()))


def numpy_rng(seed: int, name: str, *extra: int) -> np.random.Generator:
  """A numpy generator for host-side draws (splits), seeded by ``seed``, a name and integers."""
  return np.random.default_rng([int(seed), zlib.crc32(name.encode()), *map(int, extra)])
