"""SCRUB (Kurmanji et al., NeurIPS 2023; METHODS §4): a student that moves away from the teacher
on D_f and stays close to it on D_r.

Teacher = M_o, student starts as a copy of M_o. Each of ``epochs`` epochs is, for the first
``msteps`` epochs, one *max* pass over D_f (minimise −KL(teacher ‖ student), i.e. maximise the
divergence) followed by one *min* pass over D_r (γ·CE + α·KL). KL at temperature T, multiplied by
T² as in SCRUB's ``DistillKL``. One SGD optimizer (and its momentum) carries across all passes,
as in the reference code. Works for any scenario (subclass, instance, class).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from tmu_jax import engine
from tmu_jax.methods import Context, register, retain_subset, start_from
from tmu_jax.methods.baselines import soft_targets


@dataclasses.dataclass(frozen=True)
class ScrubLoss:
  """Per-example γ·CE(y) + α·T²·KL(teacher_T ‖ student_T) against ``batch['soft']``: f32[B].

  The max pass uses gamma = 0, alpha = 1 and weight −1 (ascent on the KL alone).
  """
  temperature: float = 4.0
  gamma: float = 0.99
  alpha: float = 0.001

  def __call__(self, logits, batch, aux=None):
    del aux
    t = self.temperature
    teacher = batch["soft"]
    log_student = jax.nn.log_softmax(logits / t)
    kl = jnp.sum(teacher * (jnp.log(jnp.clip(teacher, 1e-12)) - log_student), axis=-1) * t * t
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return self.gamma * ce + self.alpha * kl


@register("scrub")
def scrub(ctx: Context, cfg):
  """SCRUB from M_o: ``msteps`` max passes on D_f interleaved with ``epochs`` min passes on D_r."""
  k_sub, k_fit = jax.random.split(ctx.key)
  forget = ctx.problem.split.forget
  retain = retain_subset(ctx, cfg.retain_fraction, k_sub)
  x_f, y_f = ctx.problem.take(forget)
  x_r, y_r = ctx.problem.take(retain)
  t = cfg.temperature
  forget_stream = engine.Stream(
      dict(image=x_f, label=y_f, soft=soft_targets(ctx.original, x_f, t),
           weight=-jnp.ones(y_f.shape)), min(cfg.forget_batch_size, len(forget)))
  retain_stream = engine.Stream(
      dict(image=x_r, label=y_r, soft=soft_targets(ctx.original, x_r, t)),
      min(cfg.batch_size, len(retain)))
  total = cfg.epochs * math.ceil(len(retain) / retain_stream.batch_size) + min(
      cfg.msteps, cfg.epochs) * math.ceil(len(forget) / forget_stream.batch_size)
  state = start_from(ctx.original, cfg, total)
  max_spec = ctx.spec(loss_fn=ScrubLoss(t, 0.0, 1.0), augment=False)
  min_spec = ctx.spec(loss_fn=ScrubLoss(t, cfg.gamma, cfg.alpha))
  info = dict(steps=0, max_steps_taken=0)
  for epoch in range(cfg.epochs):
    ekey = jax.random.fold_in(k_fit, epoch)
    if epoch < cfg.msteps:
      state, i = engine.fit(state, forget_stream, epochs=1, key=jax.random.fold_in(ekey, 0),
                            spec=max_spec, name="scrub_max", verbose=ctx.verbose)
      info["steps"] += i["steps"]
      info["max_steps_taken"] += i["steps"]
    state, i = engine.fit(state, retain_stream, epochs=1, key=jax.random.fold_in(ekey, 1),
                          spec=min_spec, name="scrub_min", verbose=ctx.verbose)
    info["steps"] += i["steps"]
  return state, info
