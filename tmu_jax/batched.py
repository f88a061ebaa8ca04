"""One helper for every per-example computation done in fixed-size chunks.

``batched(fn, *arrays, chunk=C)`` pads the arrays' leading axis to a multiple of C, runs
``fn(*chunk_arrays, valid)`` on each chunk under ``lax.map`` (one compiled body, memory bounded by
C), and strips the padding. ``valid`` is a bool[C] mask of real rows, for functions that reduce.
With ``reduce=True`` the chunks' outputs are summed instead (``lax.scan`` accumulation), e.g. a
gradient summed over a forget set; ``fn`` must then weight its output by ``valid`` itself.

Padding repeats row 0, so padded rows are valid inputs for any model (and ignored). Works inside
or outside ``jit``; the per-example functions it serves (eval-mode predictions, attacks, MAS
gradients) have no cross-example interaction, so chunking never changes a real row's result.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


def _pad_chunks(a: jax.Array, chunk: int, pad: int) -> jax.Array:
  if pad:
    a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
  return a.reshape((-1, chunk) + a.shape[1:])


def batched(fn: Callable[..., PyTree], *arrays: jax.Array, chunk: int,
            reduce: bool = False) -> PyTree:
  """``fn`` over ``arrays`` (common leading axis N) in chunks of ``chunk`` rows.

  Returns the per-row outputs concatenated (leading axis N), or with ``reduce`` their sum.
  """
  n = arrays[0].shape[0]
  if n == 0:
    raise ValueError("batched: the arrays are empty")
  if any(a.shape[0] != n for a in arrays):
    raise ValueError(f"batched: leading axes differ: {[a.shape[0] for a in arrays]}")
  chunk = max(1, min(int(chunk), n))
  pad = -n % chunk
  chunks = tuple(_pad_chunks(a, chunk, pad) for a in arrays)
  valid = _pad_chunks(jnp.arange(n) < n, chunk, 0) if not pad else (
      jnp.arange(n + pad) < n).reshape(-1, chunk)
  if reduce:
    first = jax.eval_shape(lambda *a: fn(*a), *(c[0] for c in chunks), valid[0])
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    total, _ = jax.lax.scan(lambda acc, xs: (jax.tree.map(jnp.add, acc, fn(*xs)), None), zero,
                            chunks + (valid,))
    return total
  out = jax.lax.map(lambda xs: fn(*xs), chunks + (valid,))
  return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:n], out)
