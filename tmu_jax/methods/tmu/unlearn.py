"""§2.5 aligned unlearning: from M_o, keep D_r and predicted-easy D_f, forget predicted-hard."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, train
from tmu_jax.batched import batched
from tmu_jax.methods.common import (Context, Result, fit, fit_result, relabel_stream,
                                    retain_subset, start)
from tmu_jax.methods.tmu.settings import Unlearn


def runner_up_labels(ctx: Context, x: jax.Array, y: jax.Array) -> jax.Array:
  """M_o's most likely class other than y: the nearest wrong answer for each sample."""
  logits = ctx.logits(ctx.original, x)
  logits = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.argmax(logits, -1).astype(jnp.int32)


def all_flipped(spec: train.StepSpec, variables: dict, aux: dict, step) -> jax.Array:
  """Stop rule: code 1 once every predicted-hard sample is misclassified."""
  del step
  run = lambda x, valid: jnp.argmax(
      spec.model.apply(variables, data_lib.to_float(x), train=False)[0], -1)
  pred = batched(run, aux["stop_x"], chunk=1024)
  return jnp.all(pred != aux["stop_y"]).astype(jnp.int32)


def _stop_now(spec, variables, aux, step) -> jax.Array:
  """Stop rule for an empty hard set: nothing to flip."""
  del spec, variables, aux, step
  return jnp.int32(1)


def aligned_unlearning(ctx: Context, u: Unlearn, pred_easy: np.ndarray, key: jax.Array
                       ) -> Result:
  """§2.5: from M_o, D_r ∪ D_f^easy with true labels (D_r alone without ``keep_easy``),
  D_f^hard with a forgetting mechanism."""
  problem = ctx.problem
  forget = problem.split.forget
  easy, hard = forget[pred_easy], forget[~pred_easy]
  if not u.keep_easy:
    easy = easy[:0]
  k_sub, k_fit = jax.random.split(key)
  retain = retain_subset(problem, u.retain_fraction, k_sub)
  if u.mechanism == "runner_up":
    return _runner_up_unlearning(ctx, u, retain, easy, hard, k_fit)
  if u.mechanism == "random_label":
    stream = relabel_stream(problem, retain, hard, easy, u.batch_size)
  else:  # neg_grad
    index = np.concatenate([retain, easy, hard])
    weight = np.concatenate([np.ones(len(retain) + len(easy)), -np.ones(len(hard))])
    stream = problem.stream(index, u.batch_size, weight=jnp.asarray(weight, jnp.float32))
  opt = u.optimizer_for(u.epochs * train.steps_per_epoch((stream,)))
  return fit_result(fit(ctx, start(ctx, opt), stream, spec=ctx.spec_for(opt), epochs=u.epochs,
                        key=k_fit, name="tmu/unlearn", verbose=ctx.verbose))


def _runner_up_unlearning(ctx: Context, u: Unlearn, retain, easy, hard, key) -> Result:
  """Strong unlearning: each predicted-hard sample gets M_o's runner-up label, repeated
  ``hard_repeat`` times, until every one of them is misclassified (or ``epochs`` run out;
  every epoch without ``stop_when_flipped``)."""
  problem = ctx.problem
  x_h, y_h = problem.take(hard)
  targets = runner_up_labels(ctx, x_h, y_h) if len(hard) else y_h
  x_k, y_k = problem.take(np.concatenate([retain, easy]))
  images = jnp.concatenate([x_k] + [x_h] * u.hard_repeat)
  labels = jnp.concatenate([y_k] + [targets] * u.hard_repeat)
  stream = train.Stream(dict(image=images, label=labels), u.batch_size)
  spe = train.steps_per_epoch((stream,))
  opt = u.optimizer_for(u.epochs * spe)
  rule = (train.StopRule(all_flipped if len(hard) else _stop_now, every=max(1, spe // 4))
          if u.stop_when_flipped else None)
  out = fit(ctx, start(ctx, opt), stream, spec=ctx.spec_for(opt), epochs=u.epochs, key=key,
            aux=dict(stop_x=x_h, stop_y=y_h), stop=rule, name="tmu/unlearn",
            verbose=ctx.verbose)
  return fit_result(out, stopped="all_flipped")
