"""TMU's three sample features (paper §2.2–2.3): NF, AF, CF, and their standardisation.

The same functions serve the twin problem (x ∈ D_t, model M_t) and the original one
(x ∈ D_f, model M_o), so both land on one scale.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import attacks, data as data_lib, engine


@functools.partial(jax.jit, static_argnames=("k", "query_chunk", "ref_chunk"))
def nearest_distance(query: jax.Array, reference: jax.Array, k: int = 5, query_chunk: int = 512,
                     ref_chunk: int = 4096) -> jax.Array:
  """Mean of the ``k`` smallest Euclidean distances from each query row to the reference rows.

  ``query: f32[n, D]``, ``reference: f32[m, D]`` → ``f32[n]``. Memory is bounded by
  ``query_chunk × ref_chunk``: a running top-k (``lax.top_k``) is carried over reference chunks
  by ``lax.scan``, and query chunks go through ``lax.map``; never an n×m matrix at once.
  With fewer than ``k`` references, the mean is over all of them.
  """
  n, d = query.shape
  m = reference.shape[0]
  k_eff = min(k, m)
  q_pad = -n % query_chunk
  r_pad = -m % ref_chunk
  queries = jnp.pad(query, ((0, q_pad), (0, 0))).reshape(-1, query_chunk, d)
  refs = jnp.pad(reference, ((0, r_pad), (0, 0))).reshape(-1, ref_chunk, d)
  ref_valid = (jnp.arange(m + r_pad) < m).reshape(-1, ref_chunk)
  ref_sq = jnp.sum(refs * refs, axis=-1)

  def one_query_chunk(q):
    q_sq = jnp.sum(q * q, axis=-1)

    def scan_ref(best, chunk):
      r, r_sq, valid = chunk
      d2 = q_sq[:, None] + r_sq[None, :] - 2.0 * q @ r.T
      d2 = jnp.where(valid[None, :], jnp.maximum(d2, 0.0), jnp.inf)
      both = jnp.concatenate([best, d2], axis=1)
      neg_top, _ = jax.lax.top_k(-both, k_eff)
      return -neg_top, None

    init = jnp.full((q.shape[0], k_eff), jnp.inf, q.dtype)
    best, _ = jax.lax.scan(scan_ref, init, (refs, ref_sq, ref_valid))
    return jnp.mean(jnp.sqrt(best), axis=-1)

  return jax.lax.map(one_query_chunk, queries).reshape(-1)[:n]


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def nf_feature(state: engine.TrainState, x: jax.Array, x_remaining_c: jax.Array, *, k: int = 5,
               batch_size: int = 1024, ref_chunk: int = 4096) -> jax.Array:
  """NF (§2.2): mean of the k smallest distances between L2-normalised penultimate features
  of ``x`` and of the remaining samples of class c. f32[n]."""
  _, phi_x = engine.predict(state.apply_fn, state.variables, x, batch_size)
  _, phi_r = engine.predict(state.apply_fn, state.variables, x_remaining_c, batch_size)
  return nearest_distance(l2_normalize(phi_x), l2_normalize(phi_r), k=k, ref_chunk=ref_chunk)


def af_feature(state: engine.TrainState, x: jax.Array, y: jax.Array, key: jax.Array, *,
               eps: float, steps: int, batch_size: int = 1024) -> jax.Array:
  """AF (§2.2): CE between clean and L∞-PGD adversarial predictions, −Σ p(x) log p(x_adv).

  All samples are attacked in one jitted program per chunk of ``batch_size`` (the last chunk
  padded, so one compilation serves all).
  """
  n = x.shape[0]
  bs = min(batch_size, n)
  out = []
  for i, lo in enumerate(range(0, n, bs)):
    xb, yb = x[lo:lo + bs], y[lo:lo + bs]
    pad = bs - xb.shape[0]
    if pad:
      xb = jnp.concatenate([xb, jnp.repeat(xb[:1], pad, axis=0)])
      yb = jnp.concatenate([yb, jnp.repeat(yb[:1], pad, axis=0)])
    out.append(_af_batch(state.variables, data_lib.to_float(xb), yb, jax.random.fold_in(key, i),
                         _Apply(state.apply_fn), eps, steps)[: bs - pad])
  return jnp.concatenate(out)


class _Apply(NamedTuple):
  fn: object

  def __hash__(self):
    return hash(self.fn)


@functools.partial(jax.jit, static_argnames=("apply", "eps", "steps"))
def _af_batch(variables, x, y, key, apply, eps, steps):
  logits_fn = lambda z: apply.fn(variables, z, train=False)[0]
  return attacks.adversarial_feature(logits_fn, x, y, key, eps=eps, steps=steps)


def per_sample_loss(state: engine.TrainState, x: jax.Array, y: jax.Array,
                    batch_size: int = 1024) -> jax.Array:
  """Cross-entropy of ``state`` on each (x, y): f32[n] (CF of §2.2 with the curriculum model)."""
  logits, _ = engine.predict(state.apply_fn, state.variables, x, batch_size)
  return engine.cross_entropy(logits, dict(label=y))


class Standardizer(NamedTuple):
  """Per-feature mean/std of the twin set (§2.3), applied to both problems."""
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, features: np.ndarray) -> "Standardizer":
    f = np.asarray(features, np.float64)
    return cls(f.mean(0), np.maximum(f.std(0), 1e-8))

  def __call__(self, features) -> np.ndarray:
    return ((np.asarray(features, np.float64) - self.mean) / self.std).astype(np.float32)
