"""Baselines of METHODS §4: finetune, neg_grad, neg_grad_plus, random_label, bad_teacher.

``retrain`` is the gold model itself and is produced by the experiment, not here.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, rng, schema, train
from tmu_jax.batched import batched
from tmu_jax.methods.common import (Context, OptimizerSettings, Result, fit, fit_result,
                                    relabel_stream, retain_subset, start)
from tmu_jax.methods.registry import register

FRACTION = dict(lo=0.0, hi=1.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class Finetune(OptimizerSettings):
  """CE on D_r only."""
  lr: float = schema.field(0.02, lo=0.0, lo_open=True, doc="slightly larger than training")
  epochs: int = schema.field(5, lo=1)
  retain_fraction: float = schema.field(1.0, **FRACTION)


@register("finetune", Finetune, group="baseline")
def finetune(ctx: Context, s: Finetune) -> Result:
  """CE on D_r only (catastrophic forgetting of D_f), ``epochs`` at lr ``lr``."""
  retain = retain_subset(ctx.problem, s.retain_fraction, rng.named(ctx.key, "retain_subset"))
  stream = ctx.problem.stream(retain, s.batch_size)
  opt = s.optimizer_for(s.epochs * train.steps_per_epoch((stream,)))
  return fit_result(fit(ctx, start(ctx, opt), stream, spec=ctx.spec_for(opt), epochs=s.epochs,
                        key=ctx.key, name="finetune", verbose=ctx.verbose))


def chance_loss_reached(spec: train.StepSpec, variables: dict, aux: dict, step) -> jax.Array:
  """Stop rule of gradient ascent (METHODS §4): mean CE on D_f ≥ ln(num_classes) → code 1.

  It never looks at the gold model: chance-level loss is the target.
  """
  del step
  run = lambda x, y, valid: train.cross_entropy(
      spec.model.apply(variables, data_lib.to_float(x), train=False)[0], dict(label=y))
  ce = batched(run, aux["stop_x"], aux["stop_y"], chunk=1024)
  return (jnp.mean(ce) >= math.log(spec.num_classes)).astype(jnp.int32)


CHANCE_STOP = train.StopRule(chance_loss_reached)


@dataclasses.dataclass(frozen=True)
class NegGrad(OptimizerSettings):
  """−CE on D_f only."""
  batch_size: int = schema.field(32, lo=1)
  max_steps: int = schema.field(300, lo=1, doc="cap on the ascent steps")
  stop_at_chance: bool = schema.field(True, doc="stop at mean forget CE ln(K) (never gold)")


@dataclasses.dataclass(frozen=True)
class NegGradPlus(OptimizerSettings):
  """α·CE(D_r) − (1−α)·CE(D_f)."""
  forget_batch_size: int = schema.field(32, lo=1)
  alpha: float = schema.field(0.9, lo=0.0, hi=1.0)
  max_steps: int = schema.field(1000, lo=1)
  stop_at_chance: bool = schema.field(True)


def _ascent_fit(ctx: Context, s, streams: tuple[train.Stream, ...], name: str) -> Result:
  """Gradient ascent with the chance-level stop rule and a ``max_steps`` cap (METHODS §4)."""
  epochs = max(1, math.ceil(s.max_steps / train.steps_per_epoch(streams)))
  opt = s.optimizer_for(s.max_steps)
  x_f, y_f = ctx.problem.take(ctx.problem.split.forget)
  out = fit(ctx, start(ctx, opt), streams, spec=ctx.spec_for(opt), epochs=epochs, key=ctx.key,
            aux=dict(stop_x=x_f, stop_y=y_f), stop=CHANCE_STOP if s.stop_at_chance else None,
            max_steps=s.max_steps, name=name, verbose=ctx.verbose)
  return fit_result(out, stopped="chance_loss")


@register("neg_grad", NegGrad, group="baseline", needs=())
def neg_grad(ctx: Context, s: NegGrad) -> Result:
  """−CE on D_f only, until the forget loss reaches ln(num_classes) or ``max_steps``."""
  forget = ctx.problem.split.forget
  stream = ctx.problem.stream(forget, s.batch_size, weight=-jnp.ones(len(forget)))
  return _ascent_fit(ctx, s, (stream,), "neg_grad")


@register("neg_grad_plus", NegGradPlus, group="baseline")
def neg_grad_plus(ctx: Context, s: NegGradPlus) -> Result:
  """α·CE(D_r) − (1−α)·CE(D_f) (SCRUB's NegGrad+), one retain and one forget batch per step.

  Weights α/B_r and −(1−α)/B_f make the engine's Σwℓ/Σ|w| exactly that combination.
  """
  forget, retain = ctx.problem.split.forget, ctx.problem.split.retain
  b_r, b_f = s.batch_size, min(s.forget_batch_size, len(forget))
  retain_stream = ctx.problem.stream(retain, b_r, weight=jnp.full(len(retain), s.alpha / b_r))
  forget_stream = ctx.problem.stream(forget, b_f,
                                     weight=jnp.full(len(forget), -(1 - s.alpha) / b_f))
  return _ascent_fit(ctx, s, (retain_stream, forget_stream), "neg_grad_plus")


@dataclasses.dataclass(frozen=True)
class RandomLabel(OptimizerSettings):
  """D_f relabelled ≠ y, mixed with D_r."""
  epochs: int = schema.field(5, lo=1)
  retain_fraction: float = schema.field(1.0, **FRACTION)


@register("random_label", RandomLabel, group="baseline")
def random_label(ctx: Context, s: RandomLabel) -> Result:
  """Amnesiac unlearning: D_f relabelled uniformly ≠ y (re-drawn each epoch), mixed with D_r."""
  retain = retain_subset(ctx.problem, s.retain_fraction, rng.named(ctx.key, "retain_subset"))
  stream = relabel_stream(ctx.problem, retain, ctx.problem.split.forget, np.zeros(0, np.int64),
                          s.batch_size)
  opt = s.optimizer_for(s.epochs * train.steps_per_epoch((stream,)))
  return fit_result(fit(ctx, start(ctx, opt), stream, spec=ctx.spec_for(opt), epochs=s.epochs,
                        key=ctx.key, name="random_label", verbose=ctx.verbose))


@dataclasses.dataclass(frozen=True)
class KLToSoft:
  """Per-example KL(teacher ‖ student) at temperature T against ``batch['soft']`` probs.

  ``mean_over_classes`` divides by the number of classes, as PyTorch's ``F.kl_div`` with its
  default ``reduction='mean'`` does (Bad Teacher's code, METHODS §4 "KL with mean reduction").
  """
  temperature: float = 1.0
  mean_over_classes: bool = True

  def __call__(self, logits, batch, aux=None):
    del aux
    log_student = jax.nn.log_softmax(logits / self.temperature)
    teacher = batch["soft"]
    kl = jnp.sum(teacher * (jnp.log(jnp.clip(teacher, 1e-12)) - log_student), axis=-1)
    return kl / logits.shape[-1] if self.mean_over_classes else kl


def soft_targets(ctx: Context, state: train.TrainState, images: jax.Array,
                 temperature: float) -> jax.Array:
  """softmax(model(x) / T) in eval mode: f32[N, K]."""
  return jax.nn.softmax(ctx.logits(state, images) / temperature)


@dataclasses.dataclass(frozen=True)
class BadTeacher(OptimizerSettings):
  """Competent (M_o) and incompetent (random) teachers."""
  optimizer: str = schema.field("adam", choices=train.optim.NAMES)
  lr: float = schema.field(1e-4, lo=0.0, lo_open=True)
  weight_decay: float = schema.field(0.0, lo=0.0)
  epochs: int = schema.field(1, lo=1)
  retain_fraction: float = schema.field(0.3, **FRACTION)
  temperature: float = schema.field(1.0, lo=0.0, lo_open=True)


@register("bad_teacher", BadTeacher, group="baseline")
def bad_teacher(ctx: Context, s: BadTeacher) -> Result:
  """Bad Teacher (Chundawat et al.): a competent (M_o) and an incompetent (random) teacher.

  The student (a copy of M_o) matches the random teacher on D_f and M_o on a random
  ``retain_fraction`` of D_r, shuffled together; KL at temperature T; Adam (METHODS §4).
  """
  k_teacher, k_sub, k_fit = jax.random.split(ctx.key, 3)
  forget = ctx.problem.split.forget
  retain = retain_subset(ctx.problem, s.retain_fraction, k_sub)
  incompetent = ctx.fresh_state(k_teacher, train.Optimizer(lr=0.0))
  x_f, y_f = ctx.problem.take(forget)
  x_r, y_r = ctx.problem.take(retain)
  soft = jnp.concatenate([soft_targets(ctx, incompetent, x_f, s.temperature),
                          soft_targets(ctx, ctx.original, x_r, s.temperature)])
  stream = train.Stream(dict(image=jnp.concatenate([x_f, x_r]),
                             label=jnp.concatenate([y_f, y_r]), soft=soft), s.batch_size)
  opt = s.optimizer_for(s.epochs * train.steps_per_epoch((stream,)))
  spec = ctx.spec_for(opt, loss_fn=KLToSoft(s.temperature), augment=False)
  return fit_result(fit(ctx, start(ctx, opt), stream, spec=spec, epochs=s.epochs, key=k_fit,
                        name="bad_teacher", verbose=ctx.verbose))
