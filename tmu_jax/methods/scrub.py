"""SCRUB (Kurmanji et al., NeurIPS 2023; METHODS §4): a student that moves away from the teacher
on D_f and stays close to it on D_r.

Teacher = M_o, student starts as a copy of M_o. Each of ``epochs`` epochs is, for the first
``msteps`` epochs, one *max* pass over D_f (minimise −KL(teacher ‖ student), i.e. maximise the
divergence) followed by one *min* pass over D_r (γ·CE + α·KL). KL at temperature T, multiplied by
T² as in SCRUB's ``DistillKL``. The teacher (eval mode) sees the very images the student sees,
augmented or not, inside the step. One SGD optimizer (and its momentum) carries across all
passes, as in the reference code; the passes alternate, so this is a host loop of ``fit`` calls.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tmu_jax import schema, train
from tmu_jax.methods.common import (Context, OptimizerSettings, Result, fit, fit_steps,
                                    retain_subset, start)
from tmu_jax.methods.registry import register


@dataclasses.dataclass(frozen=True)
class ScrubLoss:
  """Per-example γ·CE(y) + α·T²·KL(teacher_T ‖ student_T): f32[B]. The teacher is ``model``
  with variables ``aux['teacher']``, applied in eval mode to ``batch['input']``.

  The max pass uses gamma = 0, alpha = 1 and weight −1 (ascent on the KL alone).
  """
  model: nn.Module
  temperature: float = 4.0
  gamma: float = 0.99
  alpha: float = 0.001

  def __call__(self, logits, batch, aux):
    t = self.temperature
    teacher_logits, _ = self.model.apply(aux["teacher"], batch["input"], train=False)
    teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits) / t)
    log_student = jax.nn.log_softmax(logits / t)
    kl = jnp.sum(teacher * (jnp.log(jnp.clip(teacher, 1e-12)) - log_student), axis=-1) * t * t
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return self.gamma * ce + self.alpha * kl


@dataclasses.dataclass(frozen=True)
class Scrub(OptimizerSettings):
  """SCRUB's small-scale defaults."""
  lr: float = schema.field(5e-4, lo=0.0, lo_open=True)
  epochs: int = schema.field(3, lo=1, doc="each has a min pass over D_r")
  msteps: int = schema.field(2, lo=0, doc="epochs that start with a max (−KL) pass over D_f")
  temperature: float = schema.field(4.0, lo=0.0, lo_open=True)
  gamma: float = schema.field(0.99, lo=0.0)
  alpha: float = schema.field(0.001, lo=0.0)
  forget_batch_size: int = schema.field(32, lo=1)
  retain_fraction: float = schema.field(1.0, lo=0.0, hi=1.0, lo_open=True)


@register("scrub", Scrub, group="baseline")
def scrub(ctx: Context, s: Scrub) -> Result:
  """SCRUB from M_o: ``msteps`` max passes on D_f interleaved with ``epochs`` min passes on D_r."""
  k_sub, k_fit = jax.random.split(ctx.key)
  forget = ctx.problem.split.forget
  retain = retain_subset(ctx.problem, s.retain_fraction, k_sub)
  x_f, y_f = ctx.problem.take(forget)
  x_r, y_r = ctx.problem.take(retain)
  forget_stream = train.Stream(dict(image=x_f, label=y_f, weight=-jnp.ones(y_f.shape)),
                               min(s.forget_batch_size, len(forget)))
  retain_stream = train.Stream(dict(image=x_r, label=y_r), min(s.batch_size, len(retain)))
  total = s.epochs * math.ceil(len(retain) / retain_stream.batch_size) + min(
      s.msteps, s.epochs) * math.ceil(len(forget) / forget_stream.batch_size)
  opt = s.optimizer_for(total)
  state = start(ctx, opt)
  aux = dict(teacher=ctx.original.variables)
  max_spec = ctx.spec_for(opt, loss_fn=ScrubLoss(ctx.model, s.temperature, 0.0, 1.0),
                          augment=False)
  min_spec = ctx.spec_for(opt, loss_fn=ScrubLoss(ctx.model, s.temperature, s.gamma, s.alpha))
  steps = max_taken = 0
  for epoch in range(s.epochs):
    ekey = jax.random.fold_in(k_fit, epoch)
    if epoch < s.msteps:
      state, i = fit(ctx, state, forget_stream, spec=max_spec, epochs=1, aux=aux,
                     key=jax.random.fold_in(ekey, 0), name="scrub_max", verbose=ctx.verbose)
      steps += fit_steps(i)
      max_taken += fit_steps(i)
    state, i = fit(ctx, state, retain_stream, spec=min_spec, epochs=1, aux=aux,
                   key=jax.random.fold_in(ekey, 1), name="scrub_min", verbose=ctx.verbose)
    steps += fit_steps(i)
  return Result(state, steps=steps, report=dict(max_steps_taken=max_taken))
