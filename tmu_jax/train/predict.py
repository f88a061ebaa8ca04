"""Eval-mode inference: logits and penultimate features in fixed-size chunks."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from tmu_jax import data as data_lib
from tmu_jax.batched import batched


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def predict(model: nn.Module, variables: dict, images: jax.Array, batch_size: int = 1024
            ) -> tuple[jax.Array, jax.Array]:
  """(logits f32[N, K], features f32[N, D]) of ``model`` in eval mode on uint8/f32 images."""
  run = lambda x, valid: model.apply(variables, data_lib.to_float(x), train=False)
  return batched(run, images, chunk=batch_size)


def logits(model: nn.Module, variables: dict, images: jax.Array, batch_size: int = 1024
           ) -> jax.Array:
  """Eval-mode logits f32[N, K]."""
  return predict(model, variables, images, batch_size)[0]


def accuracy(model: nn.Module, variables: dict, images: jax.Array, labels: jax.Array,
             batch_size: int = 1024) -> float:
  """Accuracy in percent of ``model`` on (images, labels)."""
  out = logits(model, variables, images, batch_size)
  return float(100.0 * jnp.mean(jnp.argmax(out, -1) == labels))
