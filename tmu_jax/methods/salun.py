"""SalUn (Fan et al., ICLR 2024; METHODS §4): random labeling restricted to salient weights.

Saliency = |∂(−CE(D_f))/∂θ|, the gradient of the mean forget loss over the *whole* D_f at M_o.
The mask keeps the top ``mask_fraction`` of weights under one **global** threshold over all
parameters (as SalUn's code, which concatenates every gradient before thresholding), so a tensor
may keep anything from none to all of its weights. Then random labeling (D_f relabelled ≠ y each
epoch, mixed with D_r, like ``random_label``) where only masked weights move: the optimizer
ends with :func:`tmu_jax.train.optim.scale_by_mask`, which multiplies every update (weight decay
and momentum included) by the mask, so masked-out weights stay bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, rng, schema, train
from tmu_jax.batched import batched
from tmu_jax.methods.common import (Context, OptimizerSettings, Result, fit, fit_result,
                                    relabel_stream, retain_subset, start)
from tmu_jax.methods.registry import register

PyTree = train.state.PyTree


@functools.partial(jax.jit, static_argnames=("model", "chunk"))
def forget_gradient(model: nn.Module, variables: dict, x: jax.Array, y: jax.Array,
                    chunk: int = 256) -> PyTree:
  """∂ mean_i CE(f(x_i), y_i) / ∂θ over all of x uint8/f32[N, ...] (eval mode), a params tree."""
  n = x.shape[0]

  def chunk_grad(xb, yb, valid):
    def loss(params):
      logits, _ = model.apply({**variables, "params": params}, data_lib.to_float(xb),
                              train=False)
      return jnp.sum(valid * train.cross_entropy(logits, dict(label=yb))) / n
    return jax.grad(loss)(variables["params"])

  return batched(chunk_grad, x, y, chunk=chunk, reduce=True)


def saliency_mask(grads: PyTree, fraction: float) -> PyTree:
  """1.0 where |g| is among the top ``fraction`` of all entries (global threshold), else 0.0."""
  flat = jnp.concatenate([jnp.abs(g).ravel() for g in jax.tree.leaves(grads)])
  keep = int(round(fraction * flat.size))
  if keep <= 0:
    return jax.tree.map(jnp.zeros_like, grads)
  threshold = jnp.sort(flat)[flat.size - keep]
  return jax.tree.map(lambda g: (jnp.abs(g) >= threshold).astype(jnp.float32), grads)


@dataclasses.dataclass(frozen=True)
class Salun(OptimizerSettings):
  """Like random_label, with a saliency mask."""
  mask_fraction: float = schema.field(0.5, lo=0.0, hi=1.0, lo_open=True,
                                      doc="share of weights kept (global threshold)")
  epochs: int = schema.field(5, lo=1)
  retain_fraction: float = schema.field(1.0, lo=0.0, hi=1.0, lo_open=True)


@register("salun", Salun, group="baseline")
def salun(ctx: Context, s: Salun) -> Result:
  """SalUn: saliency mask from D_f's gradient at M_o, then masked random labeling."""
  forget = ctx.problem.split.forget
  x_f, y_f = ctx.problem.take(forget)
  # −CE and CE have the same |gradient|: the sign does not change the mask.
  grads = forget_gradient(ctx.model, ctx.original.variables, x_f, y_f, min(256, len(forget)))
  mask = saliency_mask(grads, s.mask_fraction)
  kept = 100.0 * sum(float(jnp.sum(m)) for m in jax.tree.leaves(mask)) / sum(
      m.size for m in jax.tree.leaves(mask))  # before fit: the state holding the mask is donated
  retain = retain_subset(ctx.problem, s.retain_fraction, rng.named(ctx.key, "retain_subset"))
  stream = relabel_stream(ctx.problem, retain, forget, np.zeros(0, np.int64), s.batch_size)
  opt = s.optimizer_for(s.epochs * train.steps_per_epoch((stream,)), masked=True)
  state = start(ctx, opt, prepare=lambda st: st.replace(
      opt_state=train.optim.with_mask(st.opt_state, mask)))
  out = fit_result(fit(ctx, state, stream, spec=ctx.spec_for(opt), epochs=s.epochs,
                       key=ctx.key, name="salun", verbose=ctx.verbose))
  out.report["mask_kept"] = kept
  return out
