"""Baselines of METHODS §4: finetune, neg_grad, neg_grad_plus, random_label, bad_teacher.

``retrain`` is the gold model itself and is produced by the experiment, not here.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import engine
from tmu_jax.methods import (Context, forget_loss_stop, register, retain_subset, start_from)


def _steps(n: int, batch_size: int) -> int:
  return math.ceil(n / batch_size)


@register("finetune")
def finetune(ctx: Context, cfg):
  """CE on D_r only (catastrophic forgetting of D_f), ``epochs`` at lr ``lr``."""
  retain = retain_subset(ctx, cfg.retain_fraction, jax.random.fold_in(ctx.key, 1))
  stream = ctx.problem.stream(retain, cfg.batch_size)
  state = start_from(ctx.original, cfg, cfg.epochs * _steps(len(retain), cfg.batch_size))
  return engine.fit(state, stream, epochs=cfg.epochs, key=ctx.key, spec=ctx.spec(),
                    name="finetune", verbose=ctx.verbose)


def _ascent_fit(ctx: Context, cfg, streams, name: str):
  """Gradient ascent with the chance-level stop rule and a ``max_steps`` cap (METHODS §4)."""
  spe = engine.steps_per_epoch(streams)
  epochs = max(1, math.ceil(cfg.max_steps / spe))
  state = start_from(ctx.original, cfg, cfg.max_steps)
  stop = forget_loss_stop(ctx) if cfg.stop_at_chance else None
  state, info = engine.fit(state, streams, epochs=epochs, key=ctx.key, spec=ctx.spec(),
                           name=name, verbose=ctx.verbose, stop_fn=stop,
                           max_steps=cfg.max_steps)
  return state, info


@register("neg_grad")
def neg_grad(ctx: Context, cfg):
  """−CE on D_f only, until the forget loss reaches ln(num_classes) or ``max_steps``."""
  forget = ctx.problem.split.forget
  stream = ctx.problem.stream(forget, cfg.batch_size, weight=-jnp.ones(len(forget)))
  return _ascent_fit(ctx, cfg, (stream,), "neg_grad")


@register("neg_grad_plus")
def neg_grad_plus(ctx: Context, cfg):
  """α·CE(D_r) − (1−α)·CE(D_f) (SCRUB's NegGrad+), one retain and one forget batch per step.

  Weights α/B_r and −(1−α)/B_f make the engine's Σwℓ/Σ|w| exactly that combination.
  """
  forget, retain = ctx.problem.split.forget, ctx.problem.split.retain
  b_r, b_f = cfg.batch_size, min(cfg.forget_batch_size, len(forget))
  retain_stream = ctx.problem.stream(retain, b_r,
                                     weight=jnp.full(len(retain), cfg.alpha / b_r))
  forget_stream = ctx.problem.stream(forget, b_f,
                                     weight=jnp.full(len(forget), -(1 - cfg.alpha) / b_f))
  return _ascent_fit(ctx, cfg, (retain_stream, forget_stream), "neg_grad_plus")


def relabel_stream(ctx: Context, retain: np.ndarray, relabeled: np.ndarray, kept: np.ndarray,
                   batch_size: int, repeat: int = 1) -> engine.Stream:
  """D_r ∪ kept (true labels) ∪ relabeled×repeat (a fresh label ≠ y each epoch)."""
  relabeled = np.tile(relabeled, repeat)
  index = np.concatenate([retain, kept, relabeled])
  flags = np.concatenate([np.zeros(len(retain) + len(kept), bool), np.ones(len(relabeled), bool)])
  return ctx.problem.stream(index, batch_size, relabel=jnp.asarray(flags))


@register("random_label")
def random_label(ctx: Context, cfg):
  """Amnesiac unlearning: D_f relabelled uniformly ≠ y (re-drawn each epoch), mixed with D_r."""
  retain = retain_subset(ctx, cfg.retain_fraction, jax.random.fold_in(ctx.key, 1))
  stream = relabel_stream(ctx, retain, ctx.problem.split.forget, np.zeros(0, np.int64),
                          cfg.batch_size)
  state = start_from(ctx.original, cfg, cfg.epochs * _steps(stream.size, cfg.batch_size))
  return engine.fit(state, stream, epochs=cfg.epochs, key=ctx.key, spec=ctx.spec(),
                    name="random_label", verbose=ctx.verbose)


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


def soft_targets(state: engine.TrainState, images: jax.Array, temperature: float,
                 batch_size: int = 1024) -> jax.Array:
  """softmax(model(x) / T) in eval mode: f32[N, K]."""
  logits, _ = engine.predict(state.apply_fn, state.variables, images, batch_size)
  return jax.nn.softmax(logits / temperature)


@register("bad_teacher")
def bad_teacher(ctx: Context, cfg):
  """Bad Teacher (Chundawat et al.): a competent (M_o) and an incompetent (random) teacher.

  The student (a copy of M_o) matches the random teacher on D_f and M_o on a random
  ``retain_fraction`` of D_r, shuffled together; KL at temperature T; Adam (METHODS §4).
  """
  k_teacher, k_sub, k_fit = jax.random.split(ctx.key, 3)
  forget = ctx.problem.split.forget
  retain = retain_subset(ctx, cfg.retain_fraction, k_sub)
  incompetent = ctx.fresh_state(k_teacher, engine.make_optimizer("sgd", 0.0))
  x_f, y_f = ctx.problem.take(forget)
  x_r, y_r = ctx.problem.take(retain)
  soft = jnp.concatenate([soft_targets(incompetent, x_f, cfg.temperature),
                          soft_targets(ctx.original, x_r, cfg.temperature)])
  stream = engine.Stream(dict(image=jnp.concatenate([x_f, x_r]), label=jnp.concatenate([y_f, y_r]),
                              soft=soft), cfg.batch_size)
  state = start_from(ctx.original, cfg, cfg.epochs * _steps(stream.size, cfg.batch_size))
  spec = ctx.spec(loss_fn=KLToSoft(cfg.temperature), augment=False)
  return engine.fit(state, stream, epochs=cfg.epochs, key=k_fit, spec=spec, name="bad_teacher",
                    verbose=ctx.verbose)
