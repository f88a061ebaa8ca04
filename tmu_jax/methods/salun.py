"""SalUn (Fan et al., ICLR 2024; METHODS §4): random labeling restricted to salient weights.

Saliency = |∂(−CE(D_f))/∂θ|, the gradient of the mean forget loss over the *whole* D_f at M_o.
The mask keeps the top ``mask_fraction`` of weights under one **global** threshold over all
parameters (as SalUn's code, which concatenates every gradient before thresholding), so a tensor
may keep anything from none to all of its weights. Then random labeling (D_f relabelled ≠ y each
epoch, mixed with D_r, like ``random_label``) where only masked weights move:
``StepSpec(masked_update=True)`` multiplies every update (weight decay included) by the mask.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, engine
from tmu_jax.methods import Context, register, retain_subset, start_from
from tmu_jax.methods.baselines import relabel_stream

PyTree = engine.PyTree


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _forget_grad(apply_fn, variables, x, y, chunk: int) -> PyTree:
  """∂ mean_i CE(f(x_i), y_i) / ∂θ over all of x uint8/f32[N, ...], ``chunk`` rows at a time."""
  n = x.shape[0]
  pad = -n % chunk
  xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((-1, chunk) + x.shape[1:])
  ys = jnp.pad(y, (0, pad)).reshape(-1, chunk)
  ms = (jnp.arange(n + pad) < n).astype(jnp.float32).reshape(-1, chunk)

  def loss(params, xb, yb, mb):
    logits, _ = apply_fn({**variables, "params": params}, data_lib.to_float(xb), train=False)
    return jnp.sum(mb * engine.cross_entropy(logits, dict(label=yb))) / n

  def body(acc, batch):
    g = jax.grad(loss)(variables["params"], *batch)
    return jax.tree.map(jnp.add, acc, g), None

  total, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, variables["params"]), (xs, ys, ms))
  return total


def saliency_mask(grads: PyTree, fraction: float) -> PyTree:
  """1.0 where |g| is among the top ``fraction`` of all entries (global threshold), else 0.0."""
  flat = jnp.concatenate([jnp.abs(g).ravel() for g in jax.tree.leaves(grads)])
  keep = int(round(fraction * flat.size))
  if keep <= 0:
    return jax.tree.map(jnp.zeros_like, grads)
  threshold = jnp.sort(flat)[flat.size - keep]
  return jax.tree.map(lambda g: (jnp.abs(g) >= threshold).astype(jnp.float32), grads)


@register("salun")
def salun(ctx: Context, cfg):
  """SalUn: saliency mask from D_f's gradient at M_o, then masked random labeling."""
  forget = ctx.problem.split.forget
  x_f, y_f = ctx.problem.take(forget)
  # −CE and CE have the same |gradient|: the sign does not change the mask.
  grads = _forget_grad(ctx.original.apply_fn, ctx.original.variables, x_f, y_f,
                       min(256, len(forget)))
  mask = saliency_mask(grads, cfg.mask_fraction)
  retain = retain_subset(ctx, cfg.retain_fraction, jax.random.fold_in(ctx.key, 1))
  stream = relabel_stream(ctx, retain, forget, np.zeros(0, np.int64), cfg.batch_size)
  steps = cfg.epochs * math.ceil(stream.size / cfg.batch_size)
  state = start_from(ctx.original, cfg, steps)
  state, info = engine.fit(state, stream, epochs=cfg.epochs, key=ctx.key,
                           spec=ctx.spec(masked_update=True), aux=dict(update_mask=mask),
                           name="salun", verbose=ctx.verbose)
  kept = sum(float(jnp.sum(m)) for m in jax.tree.leaves(mask))
  total = sum(m.size for m in jax.tree.leaves(mask))
  info["report"] = dict(mask_kept=100.0 * kept / total)
  return state, info
