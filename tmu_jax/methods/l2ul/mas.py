"""MAS weight importance for L2UL (METHODS §3): Ω = mean_x |∂‖f(x)‖₂/∂θ| over D_f, inverted
per tensor into the anchor weights Ω' of R = Σ Ω'·(θ − θ_o)²/2."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from tmu_jax import data as data_lib
from tmu_jax.batched import batched

PyTree = Any


def _safe_norm(v: jax.Array) -> jax.Array:
  """‖v‖₂ with a zero (not NaN) gradient at v = 0."""
  sq = jnp.sum(jnp.square(v))
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


@functools.partial(jax.jit, static_argnames=("model", "chunk"))
def mas_importance(model, variables: dict, x_forget: jax.Array, chunk: int = 16) -> PyTree:
  """MAS Ω = mean_x |∂‖f(x)‖₂/∂θ| over x_forget f32/uint8[k, H, W, C]: a pytree like params.

  Per-sample gradients under ``vmap`` in eval mode, ``chunk`` samples at a time (memory is
  k-independent). The norm is of the logits, not squared (METHODS §3).
  """
  x = data_lib.to_float(x_forget)

  def norm(params, xi):
    return _safe_norm(model.apply({**variables, "params": params}, xi[None], train=False)[0][0])

  per_sample = jax.vmap(jax.grad(norm), in_axes=(None, 0))

  def chunk_sum(xb, valid):
    g = per_sample(variables["params"], xb)
    return jax.tree.map(lambda gi: jnp.tensordot(valid.astype(gi.dtype), jnp.abs(gi), axes=1), g)

  total = batched(chunk_sum, x, chunk=chunk, reduce=True)
  return jax.tree.map(lambda t: t / x.shape[0], total)


def invert_importance(omega: PyTree) -> PyTree:
  """Ω' = 1 − (Ω − min)/(max − min) per tensor; a constant tensor gives all ones (never NaN)."""

  def one(o):
    lo, hi = jnp.min(o), jnp.max(o)
    span = hi - lo
    return 1.0 - jnp.where(span > 0, (o - lo) / jnp.where(span > 0, span, 1.0), 0.0)

  return jax.tree.map(one, omega)


def mas_penalty(params: PyTree, aux: dict) -> jax.Array:
  """λ·Σ Ω'·(θ − θ_o)²/2 over all parameters; ``aux`` holds omega (Ω'), anchor (θ_o), lam."""
  terms = jax.tree.map(lambda p, o, a: jnp.sum(o * jnp.square(p - a)), params, aux["omega"],
                       aux["anchor"])
  return aux["lam"] * 0.5 * sum(jax.tree.leaves(terms))
