"""Pieces shared by the model families."""

from typing import Sequence

import jax.numpy as jnp


def normalize(x: jnp.ndarray, mean: Sequence[float], std: Sequence[float]) -> jnp.ndarray:
  """Per-channel (x - mean) / std for ``x: f32[B, H, W, C]`` in [0, 1]."""
  mean = jnp.asarray(mean, x.dtype)
  std = jnp.asarray(std, x.dtype)
  return (x - mean) / std
