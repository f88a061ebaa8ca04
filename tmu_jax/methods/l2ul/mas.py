"""MAS weight importance for L2UL (METHODS §3): Ω = mean_x |∂‖f(x)‖₂/∂θ| over D_f, inverted
per tensor into the anchor weights Ω' of R = Σ Ω'·(θ − θ_o)²/2; and the optional
representation-level anchor on adversarial images (an issue-11 lever, off by default)."""

from __future__ import annotations

import dataclasses
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


NORMS = ("tensor", "layer", "global")


def _invert(o: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
  span = hi - lo
  return 1.0 - jnp.where(span > 0, (o - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def invert_importance(omega: PyTree, norm: str = "tensor") -> PyTree:
  """Ω' = 1 − (Ω − min)/(max − min); a constant group gives all ones (never NaN).

  ``norm`` is the group the min and max run over (issue 11's "MAS granularity" lever):
  ``tensor`` (METHODS §3 as we read it: each kernel and bias alone), ``layer`` (a module's
  tensors together, e.g. a Dense kernel with its bias) or ``global`` (every parameter at once,
  so layers with small gradients are anchored harder than the rest).
  """
  if norm == "tensor":
    return jax.tree.map(lambda o: _invert(o, jnp.min(o), jnp.max(o)), omega)
  if norm == "global":
    leaves = jax.tree.leaves(omega)
    lo = jnp.min(jnp.stack([jnp.min(o) for o in leaves]))
    hi = jnp.max(jnp.stack([jnp.max(o) for o in leaves]))
    return jax.tree.map(lambda o: _invert(o, lo, hi), omega)
  if norm == "layer":
    flat = jax.tree_util.tree_flatten_with_path(omega)[0]
    groups: dict = {}
    for path, o in flat:
      groups.setdefault(tuple(path[:-1]), []).append(o)
    bounds = {g: (jnp.min(jnp.stack([jnp.min(o) for o in os_])),
                  jnp.max(jnp.stack([jnp.max(o) for o in os_]))) for g, os_ in groups.items()}
    return jax.tree_util.tree_map_with_path(lambda path, o: _invert(o, *bounds[tuple(path[:-1])]),
                                            omega)
  raise ValueError(f"mas_norm {norm!r}: expected one of {NORMS}")


def mas_penalty(params: PyTree, aux: dict) -> jax.Array:
  """λ·Σ Ω'·(θ − θ_o)²/2 over all parameters; ``aux`` holds omega (Ω'), anchor (θ_o), lam."""
  terms = jax.tree.map(lambda p, o, a: jnp.sum(o * jnp.square(p - a)), params, aux["omega"],
                       aux["anchor"])
  return aux["lam"] * 0.5 * sum(jax.tree.leaves(terms))


def representation_penalty(model, params: PyTree, aux: dict) -> jax.Array:
  """rep_lam · mean_x ‖h_θ(x) − h_o(x)‖² over the anchor images ``aux["rep_x"]`` (a fixed
  sample of the adversarial set), h the model's feature output and h_o M_o's, precomputed in
  ``aux["rep_h"]``: issue 11's representation-level anchor, beside the weight-level MAS one."""
  variables = {"params": params}
  if aux.get("batch_stats"):
    variables["batch_stats"] = aux["batch_stats"]
  h = model.apply(variables, aux["rep_x"], train=False)[1]
  return aux["rep_lam"] * jnp.mean(jnp.sum(jnp.square(h - aux["rep_h"]), -1))


@dataclasses.dataclass(frozen=True)
class Penalty:
  """The L2UL step's penalty: the MAS anchor and/or the representation anchor (hashable: it is
  part of the step's static key)."""
  model: Any
  mas: bool = True
  rep: bool = False

  def __call__(self, params: PyTree, aux: dict) -> jax.Array:
    total = jnp.float32(0.0)
    if self.mas:
      total = total + mas_penalty(params, aux)
    if self.rep:
      total = total + representation_penalty(self.model, params, aux)
    return total
