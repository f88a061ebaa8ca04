"""§2.1 the twin problem and §2.2's curriculum model.

D_t = class-c images of the holdout pool P, sized so the forgetting ratio matches (paper Eq. 3);
M_t = M_o fine-tuned to memorize D_t; twin gold = M_o, so twin labels are known:
easy(x) = [M_o classifies x ∈ D_t correctly].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, rng, train
from tmu_jax.methods.common import Context, retain_subset
from tmu_jax.methods.tmu.settings import TMU


def twin_size(n_forget: int, n_retain: int) -> int:
  """|D_t| = round(|D_f|·(|D_r| + |D_f|)/|D_r|): the same forgetting ratio (paper Eq. 3)."""
  return int(round(n_forget * (n_retain + n_forget) / n_retain))


def draw_twin(problem, key: jax.Array, size: int, flip: bool = True) -> jax.Array:
  """D_t: ``size`` class-c images of the holdout pool; augmented copies fill a short pool.

  Crop-with-zero-padding and flip (only where ``flip``: not for digits) move pixels without
  changing their values, so the copies stay exact uint8 images.
  """
  pool = problem.class_rows(problem.split.holdout)
  if len(pool) == 0:
    raise ValueError(f"the holdout pool has no sample of class {problem.forget_class}")
  k_pick, k_fill, k_aug = jax.random.split(key, 3)
  if len(pool) >= size:
    pick = np.asarray(jax.random.choice(k_pick, len(pool), (size,), replace=False))
    return problem.take(pool[pick])[0]
  base = problem.take(pool)[0]
  extra = np.asarray(jax.random.choice(k_fill, len(pool), (size - len(pool),)))
  copies = data_lib.augment(k_aug, data_lib.to_float(base[extra]), flip=flip)
  copies = jnp.round(copies * 255.0).astype(base.dtype) if base.dtype == jnp.uint8 else copies
  return jnp.concatenate([base, copies])


def draw_disjoint_twins(problem, key: jax.Array, size: int, n: int, flip: bool = True
                        ) -> list[jax.Array]:
  """``n`` twin draws of ``size`` that share no pool image: consecutive blocks of one
  permutation of the class-c pool. Draws the pool cannot fill whole are topped up as
  :func:`draw_twin` does (the pool's rest, then augmented copies of it), so they overlap."""
  pool = problem.class_rows(problem.split.holdout)
  if len(pool) == 0:
    raise ValueError(f"the holdout pool has no sample of class {problem.forget_class}")
  order = pool[np.asarray(jax.random.permutation(key, len(pool)))]
  out = []
  for j in range(n):
    block = order[j * size:(j + 1) * size]
    if len(block) == size:
      out.append(problem.take(block)[0])
    else:
      out.append(draw_twin(problem, jax.random.fold_in(key, j), size, flip))
  return out


def original_mask(size: int, n_pool: int, n: int) -> np.ndarray:
  """bool[n·size]: which rows of ``n`` concatenated twin draws are pool images. Both draw
  functions put a draw's pool images first (all ``size`` when the pool holds them) and its
  augmented fill copies after them."""
  return np.tile(np.arange(size) < min(size, n_pool), n)


def distinct_images(images: list[jax.Array]) -> int:
  """How many distinct images (bytes) the twin draws hold together."""
  x = np.concatenate([np.asarray(i) for i in images])
  return len({row.tobytes() for row in x.reshape(x.shape[0], -1)})


def twin_portion(ctx: Context, s: TMU) -> np.ndarray:
  """The rows M_t fine-tunes on besides D_t: D_r (or a ``twin.retain_fraction`` of it, drawn
  once per problem) ∪ D_f."""
  problem = ctx.problem
  if s.twin.retain_fraction >= 1.0:
    return problem.train_portion
  key = rng.named(rng.seed_key(problem.seed), "tmu/twin_retain")
  retain = retain_subset(problem, s.twin.retain_fraction, key)
  return np.sort(np.concatenate([retain, problem.split.forget]))


def train_twin(ctx: Context, s: TMU, x_twin: jax.Array, key: jax.Array) -> train.TrainState:
  """M_t: M_o fine-tuned on D_r ∪ D_f ∪ D_t (D_t repeated ``twin.repeat`` times), constant lr;
  with ``twin.retain_fraction`` < 1 on that share of D_r only."""
  problem = ctx.problem
  x_portion, y_portion = problem.take(twin_portion(ctx, s))
  y_twin = jnp.full((x_twin.shape[0],), problem.forget_class, jnp.int32)
  images = jnp.concatenate([x_portion] + [x_twin] * s.twin.repeat)
  labels = jnp.concatenate([y_portion] + [y_twin] * s.twin.repeat)
  stream = train.Stream(dict(image=images, label=labels), s.twin.batch_size)
  opt = train.Optimizer("sgd", s.twin.lr, 0.9, ctx.recipe.weight_decay)
  state, _ = train.fit(train.start_from(ctx.original, opt), stream, spec=ctx.spec_for(opt),
                       epochs=s.twin.epochs, key=key, name="tmu/twin", verbose=ctx.verbose)
  return state


def train_twins_together(ctx: Context, s: TMU, x_twins: list[jax.Array], keys: jax.Array
                         ) -> train.TrainState:
  """All M_t as one ensemble (``twin.ensemble``): one stream D_r ∪ D_f ∪ every D_t (each
  repeated ``twin.repeat`` times), where twin j weighs its own D_t copies 1 and the others' 0.

  Not equal to :func:`train_twin` one by one: the other twins' rows still take batch slots
  (an epoch has (n_twins − 1)·repeat·|D_t| more rows, each batch fewer effective examples,
  normalised by Σ|w|). ``keys[j]`` is twin j's data key."""
  problem = ctx.problem
  x_portion, y_portion = problem.take(twin_portion(ctx, s))
  n, size = len(x_twins), int(x_twins[0].shape[0])
  block = np.repeat(np.arange(n), size * s.twin.repeat)  # which twin each twin row belongs to
  images = jnp.concatenate([x_portion] + [x for x in x_twins for _ in range(s.twin.repeat)])
  labels = jnp.concatenate([y_portion, jnp.full((block.size,), problem.forget_class,
                                                jnp.int32)])
  weights = np.ones((n, int(labels.shape[0])), np.float32)
  weights[:, len(y_portion):] = (block[None, :] == np.arange(n)[:, None])
  stream = train.Stream(dict(image=images, label=labels), s.twin.batch_size)
  opt = train.Optimizer("sgd", s.twin.lr, 0.9, ctx.recipe.weight_decay)
  states = train.ensemble.broadcast(train.start_from(ctx.original, opt), n)
  states, _ = train.fit_ensemble(states, stream, spec=ctx.spec_for(opt), epochs=s.twin.epochs,
                                 keys=keys, weights=jnp.asarray(weights), how=ctx.how,
                                 name="tmu/twins", verbose=ctx.verbose)
  return states


def train_curriculum(ctx: Context, s: TMU, x_twin_all: jax.Array, key: jax.Array
                     ) -> train.TrainState:
  """M_c: a fresh model trained from scratch on ``cf.fraction`` of D_r plus D_f and D_t."""
  problem = ctx.problem
  k_sub, k_init, k_fit = jax.random.split(key, 3)
  x_r, y_r = problem.take(retain_subset(problem, s.cf.fraction, k_sub))
  x_f, y_f = problem.take(problem.split.forget)
  y_t = jnp.full((x_twin_all.shape[0],), problem.forget_class, jnp.int32)
  stream = train.Stream(dict(image=jnp.concatenate([x_r, x_f, x_twin_all]),
                             label=jnp.concatenate([y_r, y_f, y_t])), ctx.recipe.batch_size)
  opt = ctx.recipe.optimizer_for(s.cf.epochs * train.steps_per_epoch((stream,)))
  state, _ = train.fit(ctx.fresh_state(k_init, opt), stream, spec=ctx.spec_for(opt),
                       epochs=s.cf.epochs, key=k_fit, name="tmu/curriculum",
                       verbose=ctx.verbose)
  return state
