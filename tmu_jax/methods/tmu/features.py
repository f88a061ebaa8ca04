"""TMU's three sample features (paper §2.2–2.3): NF, AF, CF, and their standardisation; and KF,
an extension (the label share of a sample's nearest training images).

The same functions serve the twin problem (x ∈ D_t, model M_t) and the original one
(x ∈ D_f, model M_o), so both land on one scale.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import attacks, data as data_lib, train
from tmu_jax.batched import batched


def _nearest(query: jax.Array, reference: jax.Array, k: int, query_chunk: int, ref_chunk: int,
             payload: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
  """(squared Euclidean distances, ``payload`` values) of the ``k`` nearest reference rows of
  each query row, nearest first: f32[n, k], payload.dtype[n, k] (k = min(k, m)); without a
  ``payload`` only the distances are carried (and None is returned for the values).

  Memory is bounded by ``query_chunk × ref_chunk``: a running top-k (``lax.top_k``) is carried
  over reference chunks by ``lax.scan``, and query chunks go through
  :func:`~tmu_jax.batched.batched`; never an n×m matrix at once.
  """
  d = query.shape[1]
  m = reference.shape[0]
  k_eff = min(k, m)
  r_pad = -m % ref_chunk
  refs = jnp.pad(reference, ((0, r_pad), (0, 0))).reshape(-1, ref_chunk, d)
  ref_valid = (jnp.arange(m + r_pad) < m).reshape(-1, ref_chunk)
  ref_sq = jnp.sum(refs * refs, axis=-1)
  values = None if payload is None else jnp.pad(payload, (0, r_pad)).reshape(-1, ref_chunk)

  def one_query_chunk(q, valid):
    del valid
    q_sq = jnp.sum(q * q, axis=-1)

    def scan_ref(best, chunk):
      r, r_sq, valid, v = chunk
      d2 = q_sq[:, None] + r_sq[None, :] - 2.0 * q @ r.T
      d2 = jnp.where(valid[None, :], jnp.maximum(d2, 0.0), jnp.inf)
      neg_top, at = jax.lax.top_k(-jnp.concatenate([best[0], d2], axis=1), k_eff)
      if v is None:  # distances only (NF)
        return (-neg_top,), None
      both_v = jnp.concatenate([best[1], jnp.broadcast_to(v, d2.shape)], axis=1)
      return (-neg_top, jnp.take_along_axis(both_v, at, axis=1)), None

    init = (jnp.full((q.shape[0], k_eff), jnp.inf, q.dtype),)
    if values is not None:
      init += (jnp.zeros((q.shape[0], k_eff), payload.dtype),)
    best, _ = jax.lax.scan(scan_ref, init, (refs, ref_sq, ref_valid, values))
    return best

  best = batched(one_query_chunk, query, chunk=query_chunk)
  return best[0], (best[1] if values is not None else None)


@functools.partial(jax.jit, static_argnames=("k", "query_chunk", "ref_chunk"))
def nearest_distance(query: jax.Array, reference: jax.Array, k: int = 5, query_chunk: int = 512,
                     ref_chunk: int = 4096) -> jax.Array:
  """Mean of the ``k`` smallest Euclidean distances from each query row to the reference rows.

  ``query: f32[n, D]``, ``reference: f32[m, D]`` → ``f32[n]``, in bounded memory
  (:func:`_nearest`). With fewer than ``k`` references, the mean is over all of them.
  """
  d2, _ = _nearest(query, reference, k, query_chunk, ref_chunk)
  return jnp.mean(jnp.sqrt(d2), axis=-1)


@functools.partial(jax.jit, static_argnames=("k", "query_chunk", "ref_chunk"))
def neighbour_label_share(query: jax.Array, reference: jax.Array, labels: jax.Array, cls,
                          k: int = 10, query_chunk: int = 512, ref_chunk: int = 4096
                          ) -> jax.Array:
  """Share of the ``k`` nearest reference rows (Euclidean) whose label is ``cls``: f32[n]."""
  _, near = _nearest(query, reference, k, query_chunk, ref_chunk, labels.astype(jnp.int32))
  return jnp.mean((near == cls).astype(jnp.float32), axis=-1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


@functools.partial(jax.jit, static_argnames=("model", "k", "batch_size", "ref_chunk"))
def nf_feature(model: nn.Module, variables: dict, x: jax.Array, x_remaining_c: jax.Array, *,
               k: int = 5, batch_size: int = 1024, ref_chunk: int = 4096) -> jax.Array:
  """NF (§2.2): mean of the k smallest distances between L2-normalised penultimate features
  of ``x`` and of the remaining samples of class c. f32[n]."""
  _, phi_x = train.predict(model, variables, x, batch_size)
  _, phi_r = train.predict(model, variables, x_remaining_c, batch_size)
  return nearest_distance(l2_normalize(phi_x), l2_normalize(phi_r), k=k, ref_chunk=ref_chunk)


def kf_feature(x: jax.Array, x_reference: jax.Array, y_reference: jax.Array, cls: int, *,
               k: int = 10, ref_chunk: int = 4096) -> jax.Array:
  """KF (an extension of §2.2, not the paper's): the share of the ``k`` reference images
  nearest to each ``x`` in pixel space (cosine: Euclidean between L2-normalised pixel vectors)
  that carry label ``cls``. Model-free, so the twin side (references: the twin gold's training
  set D_r ∪ D_f) and D_f (references: D_r, gold's training set) see one and the same function.
  f32[n]."""
  flat = lambda z: l2_normalize(data_lib.to_float(z).reshape(z.shape[0], -1))
  return neighbour_label_share(flat(x), flat(x_reference), y_reference, cls, k=k,
                               ref_chunk=ref_chunk)


@functools.partial(jax.jit, static_argnames=("model", "eps", "steps", "batch_size"))
def af_feature(model: nn.Module, variables: dict, x: jax.Array, y: jax.Array, key: jax.Array, *,
               eps: float, steps: int, batch_size: int = 1024) -> jax.Array:
  """AF (§2.2): CE between clean and L∞-PGD adversarial predictions, −Σ p(x) log p(x_adv). f32[n].

  Example i's random start comes from ``fold_in(key, i)``, so AF does not depend on the batch
  size or on which other samples are attacked alongside.
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(x.shape[0]))
  logits_fn = lambda z: model.apply(variables, z, train=False)[0]
  run = lambda xb, yb, kb, valid: attacks.adversarial_feature(
      logits_fn, data_lib.to_float(xb), yb, kb, eps=eps, steps=steps)
  return batched(run, x, y, keys, chunk=batch_size)


def per_sample_loss(model: nn.Module, variables: dict, x: jax.Array, y: jax.Array,
                    batch_size: int = 1024) -> jax.Array:
  """Cross-entropy of the model on each (x, y): f32[n] (CF of §2.2 with the curriculum model)."""
  return train.cross_entropy(train.logits(model, variables, x, batch_size), dict(label=y))


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


def standardize(twin: np.ndarray, forget: np.ndarray, how: str = "twin"
                ) -> tuple[np.ndarray, np.ndarray]:
  """(twin, forget) features standardised for the label classifier.

  ``twin``: both with the twin set's statistics (§2.3). ``own``: the twin set with its own and
  D_f with D_f's own (a per-problem normalisation, issue 11's "AF asymmetry"): a feature that is
  shifted or rescaled on D_f against the twin side then leaves D_f's scores unchanged.
  """
  scale = Standardizer.fit(twin)
  if how == "twin":
    return scale(twin), scale(forget)
  if how == "own":
    return scale(twin), Standardizer.fit(forget)(forget)
  raise ValueError(f"unknown standardisation {how!r}; valid: twin, own")
