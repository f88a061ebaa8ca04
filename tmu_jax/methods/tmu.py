"""TMU — Twin Machine Unlearning (TMU paper §2; METHODS §2).

1. Twin problem (§2.1): D_t from the holdout pool P (class c), sized by the forgetting ratio;
   twin model M_t = M_o fine-tuned to memorize D_t; twin gold = M_o; twin labels
   easy(x) = [M_o classifies x ∈ D_t correctly].
2. Features NF, AF, CF (§2.2) for the twin and the original problem, standardised with twin
   statistics (§2.3).
3. Generalization-label classifier (§2.4): MLP 3→64→32→1 on twin features and labels.
4. Aligned unlearning (§2.5): from M_o, keep D_r and predicted-easy D_f, forget predicted-hard.

``tmu`` is the faithful variant. ``tmu_plus`` switches on the options that FINDINGS.md found
to matter, each also available alone: ``n_twins`` independent twin draws, a class-``balanced``
classifier loss, a ``threshold="twin_rate"`` that flags as many hard samples as the twin problem
had, and ``unlearn="runner_up"`` which gives each predicted-hard sample M_o's runner-up label,
oversampled, until it is misclassified.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, engine, features as F
from tmu_jax.methods import Context, register, retain_subset, start_from
from tmu_jax.methods.baselines import relabel_stream
from tmu_jax.models import get_model

FEATURES = ("nf", "af", "cf")


def twin_size(n_forget: int, n_retain: int) -> int:
  """|D_t| = round(|D_f|·(|D_r| + |D_f|)/|D_r|): the same forgetting ratio (paper Eq. 3)."""
  return int(round(n_forget * (n_retain + n_forget) / n_retain))


def draw_twin(problem, key: jax.Array, size: int) -> jax.Array:
  """D_t: ``size`` class-c images of the holdout pool; augmented copies fill a short pool.

  Crop-with-zero-padding and flip move pixels without changing their values, so the copies
  stay exact uint8 images.
  """
  labels = np.asarray(problem.dataset.train_labels)
  pool = problem.split.holdout[labels[problem.split.holdout] == problem.forget_class]
  if len(pool) == 0:
    raise ValueError(f"the holdout pool has no sample of class {problem.forget_class}")
  k_pick, k_fill, k_aug = jax.random.split(key, 3)
  if len(pool) >= size:
    pick = np.asarray(jax.random.choice(k_pick, len(pool), (size,), replace=False))
    return problem.take(pool[pick])[0]
  base = problem.take(pool)[0]
  extra = np.asarray(jax.random.choice(k_fill, len(pool), (size - len(pool),)))
  copies = data_lib.augment(k_aug, data_lib.to_float(base[extra]))
  copies = jnp.round(copies * 255.0).astype(base.dtype) if base.dtype == jnp.uint8 else copies
  return jnp.concatenate([base, copies])


def train_twin(ctx: Context, cfg, x_twin: jax.Array, key: jax.Array) -> engine.TrainState:
  """M_t: M_o fine-tuned on D_r ∪ D_f ∪ D_t (D_t repeated ``twin.repeat`` times), constant lr."""
  problem = ctx.problem
  x_portion, y_portion = problem.take(problem.train_portion)
  y_twin = jnp.full((x_twin.shape[0],), problem.forget_class, jnp.int32)
  images = jnp.concatenate([x_portion] + [x_twin] * cfg.twin.repeat)
  labels = jnp.concatenate([y_portion] + [y_twin] * cfg.twin.repeat)
  stream = engine.Stream(dict(image=images, label=labels), cfg.twin.batch_size)
  tx = engine.make_optimizer("sgd", cfg.twin.lr, momentum=0.9,
                             weight_decay=ctx.config.train.weight_decay)
  state = engine.with_optimizer(ctx.original, tx)
  state, _ = engine.fit(state, stream, epochs=cfg.twin.epochs, key=key, spec=ctx.spec(),
                        name="tmu/twin", verbose=ctx.verbose)
  return state


def train_curriculum(ctx: Context, cfg, x_twin_all: jax.Array, key: jax.Array
                     ) -> engine.TrainState:
  """M_c: a fresh model trained from scratch on ``cf.fraction`` of D_r plus D_f and D_t."""
  problem = ctx.problem
  k_sub, k_init, k_fit = jax.random.split(key, 3)
  x_r, y_r = problem.take(retain_subset(ctx, cfg.cf.fraction, k_sub))
  x_f, y_f = problem.take(problem.split.forget)
  y_t = jnp.full((x_twin_all.shape[0],), problem.forget_class, jnp.int32)
  stream = engine.Stream(dict(image=jnp.concatenate([x_r, x_f, x_twin_all]),
                              label=jnp.concatenate([y_r, y_f, y_t])),
                         ctx.config.train.batch_size)
  train = ctx.config.train
  total = cfg.cf.epochs * engine.steps_per_epoch((stream,))
  tx = engine.make_optimizer(train.optimizer, train.lr, momentum=train.momentum,
                             weight_decay=train.weight_decay, schedule=train.schedule,
                             total_steps=total)
  state = ctx.fresh_state(k_init, tx)
  state, _ = engine.fit(state, stream, epochs=cfg.cf.epochs, key=k_fit, spec=ctx.spec(),
                        name="tmu/curriculum", verbose=ctx.verbose)
  return state


def sample_features(cfg, model: engine.TrainState, curriculum: engine.TrainState, x: jax.Array,
                    y: jax.Array, x_remaining_c: jax.Array, key: jax.Array) -> np.ndarray:
  """[NF, AF, CF] of each sample: f32[n, 3] (§2.2), one code path for twin and original."""
  nf = F.nf_feature(model, x, x_remaining_c, k=cfg.nf.k, ref_chunk=cfg.nf.ref_chunk)
  af = F.af_feature(model, x, y, key, eps=cfg.af.eps, steps=cfg.af.steps)
  cf = F.per_sample_loss(curriculum, x, y)
  return np.stack([np.asarray(nf), np.asarray(af), np.asarray(cf)], axis=1)


def train_label_classifier(cfg, feats: np.ndarray, easy: np.ndarray, key: jax.Array,
                           verbose: bool) -> engine.TrainState:
  """§2.4: MLP 3→64→32→1, BCE, SGD lr 0.01 momentum 0.9 wd 5e-4, ``clf.epochs`` epochs.

  With ``balanced``, each class's examples weigh 1/(2·its share), so hard samples count as
  much as easy ones in total (FINDINGS.md: the plain loss collapses to "all easy").
  """
  easy = easy.astype(np.int32)
  weight = np.ones(len(easy), np.float32)
  if cfg.balanced and 0 < easy.sum() < len(easy):
    share = np.where(easy == 1, easy.mean(), 1 - easy.mean())
    weight = (0.5 / share).astype(np.float32)
  model = _label_mlp()
  stream = engine.Stream(dict(image=jnp.asarray(feats), label=jnp.asarray(easy),
                              weight=jnp.asarray(weight)), cfg.clf.batch_size)
  tx = engine.make_optimizer("sgd", cfg.clf.lr, momentum=0.9, weight_decay=cfg.clf.weight_decay)
  k_init, k_fit = jax.random.split(key)
  state = engine.create_train_state(k_init, model, (feats.shape[1],), tx)
  state, _ = engine.fit(state, stream, epochs=cfg.clf.epochs, key=k_fit,
                        spec=engine.StepSpec(loss_fn=engine.binary_cross_entropy),
                        name="tmu/classifier", verbose=verbose)
  return state


def easy_probability(state: engine.TrainState, feats: np.ndarray) -> np.ndarray:
  logits, _ = engine.predict(state.apply_fn, state.variables, jnp.asarray(feats))
  return np.asarray(jax.nn.sigmoid(logits[:, 0]))


def predict_easy(p_easy: np.ndarray, threshold: str, twin_hard_rate: float,
                 key: jax.Array | None = None) -> np.ndarray:
  """``half``: easy iff p > 0.5 (§2.4). ``twin_rate``: the round(rate·n) lowest-p samples are
  hard, so the predicted hard fraction matches the twin problem's hard rate. ``random``: that
  many hard samples drawn at random (a control: FINDINGS.md showed the gap alone cannot tell
  it from a real prediction; agreement and activation distance can)."""
  if threshold == "half":
    return p_easy > 0.5
  n_hard = int(round(twin_hard_rate * len(p_easy)))
  if threshold == "twin_rate":
    order = np.argsort(p_easy, kind="stable")
  elif threshold == "random":
    order = np.asarray(jax.random.permutation(key, len(p_easy)))
  else:
    raise ValueError(f"unknown threshold {threshold!r}; valid: half, twin_rate, random")
  pred = np.ones(len(p_easy), bool)
  pred[order[:n_hard]] = False
  return pred


def runner_up_labels(state: engine.TrainState, x: jax.Array, y: jax.Array) -> jax.Array:
  """M_o's most likely class other than y: the nearest wrong answer for each sample."""
  logits, _ = engine.predict(state.apply_fn, state.variables, x)
  logits = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.argmax(logits, -1).astype(jnp.int32)


def aligned_unlearning(ctx: Context, cfg, pred_easy: np.ndarray, key: jax.Array):
  """§2.5: from M_o, D_r ∪ D_f^easy with true labels, D_f^hard with a forgetting mechanism."""
  problem = ctx.problem
  forget = problem.split.forget
  easy, hard = forget[pred_easy], forget[~pred_easy]
  k_sub, k_fit = jax.random.split(key)
  retain = retain_subset(ctx, cfg.unlearn.retain_fraction, k_sub)
  u = cfg.unlearn
  if u.mechanism == "random_label":
    stream = relabel_stream(ctx, retain, hard, easy, u.batch_size)
  elif u.mechanism == "neg_grad":
    index = np.concatenate([retain, easy, hard])
    weight = np.concatenate([np.ones(len(retain) + len(easy)), -np.ones(len(hard))])
    stream = problem.stream(index, u.batch_size, weight=jnp.asarray(weight, jnp.float32))
  elif u.mechanism == "runner_up":
    return _runner_up_unlearning(ctx, u, retain, easy, hard, k_fit)
  else:
    raise ValueError(f"unknown unlearn.mechanism {u.mechanism!r}")
  state = start_from(ctx.original, u, u.epochs * engine.steps_per_epoch((stream,)))
  return engine.fit(state, stream, epochs=u.epochs, key=k_fit, spec=ctx.spec(),
                    name="tmu/unlearn", verbose=ctx.verbose)


def _runner_up_unlearning(ctx: Context, u, retain, easy, hard, key):
  """Strong unlearning: each predicted-hard sample gets M_o's runner-up label, repeated
  ``hard_repeat`` times, until every one of them is misclassified (or ``epochs`` run out)."""
  problem = ctx.problem
  x_h, y_h = problem.take(hard)
  targets = runner_up_labels(ctx.original, x_h, y_h) if len(hard) else y_h
  x_k, y_k = problem.take(np.concatenate([retain, easy]))
  images = jnp.concatenate([x_k] + [x_h] * u.hard_repeat)
  labels = jnp.concatenate([y_k] + [targets] * u.hard_repeat)
  stream = engine.Stream(dict(image=images, label=labels), u.batch_size)
  spe = engine.steps_per_epoch((stream,))
  state = start_from(ctx.original, u, u.epochs * spe)

  def all_flipped(s: engine.TrainState) -> bool:
    if not len(hard):
      return True
    logits, _ = engine.predict(s.apply_fn, s.variables, x_h)
    return bool(jnp.all(jnp.argmax(logits, -1) != y_h))

  return engine.fit(state, stream, epochs=u.epochs, key=key, spec=ctx.spec(),
                    name="tmu/unlearn", verbose=ctx.verbose, stop_fn=all_flipped,
                    stop_every=max(1, spe // 4))


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """ROC AUC of ``scores`` for ``positive`` (Mann-Whitney), nan if one class is absent."""
  pos, neg = scores[positive], scores[~positive]
  if len(pos) == 0 or len(neg) == 0:
    return float("nan")
  ranks = np.argsort(np.argsort(np.concatenate([pos, neg]), kind="stable"), kind="stable") + 1.0
  return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


_FEATURE_CACHE: dict = {}


def twin_and_forget_features(ctx: Context, cfg) -> dict:
  """§2.1–2.2: twin draws, their models and labels, and NF/AF/CF of D_t and D_f.

  Keys derive from the problem's seed, not the method name, and the result is memoised per
  (problem, M_o, twin/feature config): variants that differ only downstream (classifier,
  threshold, unlearning) share the same twins, so an ablation compares like with like.
  """
  problem = ctx.problem
  spec = (id(problem), id(ctx.original), cfg.n_twins, str(cfg.twin), str(cfg.nf), str(cfg.af),
          str(cfg.cf))
  if spec in _FEATURE_CACHE:
    return _FEATURE_CACHE[spec]
  if _FEATURE_CACHE and next(iter(_FEATURE_CACHE))[:2] != spec[:2]:
    _FEATURE_CACHE.clear()  # a new problem: drop the old one's arrays
  keys = jax.random.split(jax.random.fold_in(jax.random.key(problem.seed), 31337), 5)
  forget, retain = problem.split.forget, problem.split.retain
  size = twin_size(len(forget), len(retain))
  labels_np = np.asarray(problem.dataset.train_labels)
  x_twins = [draw_twin(problem, jax.random.fold_in(keys[0], j), size) for j in range(cfg.n_twins)]
  curriculum = train_curriculum(ctx, cfg, jnp.concatenate(x_twins), keys[1])
  portion = problem.train_portion
  x_rem_twin = problem.take(portion[labels_np[portion] == problem.forget_class])[0]
  x_rem_orig = problem.take(retain[labels_np[retain] == problem.forget_class])[0]
  twin_feats, twin_easy, twin_acc = [], [], []
  for j, x_t in enumerate(x_twins):
    y_t = jnp.full((x_t.shape[0],), problem.forget_class, jnp.int32)
    m_t = train_twin(ctx, cfg, x_t, jax.random.fold_in(keys[2], j))
    twin_acc.append(engine.evaluate(m_t, x_t, y_t))
    logits_o, _ = engine.predict(ctx.original.apply_fn, ctx.original.variables, x_t)
    twin_easy.append(np.asarray(jnp.argmax(logits_o, -1) == y_t))  # twin gold = M_o
    twin_feats.append(sample_features(cfg, m_t, curriculum, x_t, y_t, x_rem_twin,
                                      jax.random.fold_in(keys[3], j)))
  # The same features for the original problem (x ∈ D_f, model M_o, remaining D_r).
  x_f, y_f = problem.take(forget)
  out = dict(size=size, twin=np.concatenate(twin_feats), twin_easy=np.concatenate(twin_easy),
             twin_acc=float(np.mean(twin_acc)),
             forget=sample_features(cfg, ctx.original, curriculum, x_f, y_f, x_rem_orig, keys[4]))
  _FEATURE_CACHE[spec] = out
  return out


def run_tmu(ctx: Context, cfg):
  """The whole TMU pipeline; returns (M_u, info) with ``pred_easy`` and report entries."""
  problem = ctx.problem
  subset = [FEATURES.index(f.strip()) for f in cfg.features.split(",")]
  keys = jax.random.split(ctx.key, 6)
  feats = twin_and_forget_features(ctx, cfg)
  twin_feats, twin_easy, orig_feats = feats["twin"], feats["twin_easy"], feats["forget"]
  x_f, y_f = problem.take(problem.split.forget)

  # §2.3 standardise with twin statistics; §2.4 classifier; predicted easy/hard split of D_f.
  scale = F.Standardizer.fit(twin_feats)
  twin_z, orig_z = scale(twin_feats)[:, subset], scale(orig_feats)[:, subset]
  clf = train_label_classifier(cfg, twin_z, twin_easy, keys[5], ctx.verbose)
  p_easy = easy_probability(clf, orig_z)
  twin_hard_rate = float(1.0 - twin_easy.mean())
  pred_easy = predict_easy(p_easy, cfg.threshold, twin_hard_rate, jax.random.fold_in(ctx.key, 7))

  # §2.5 aligned unlearning from M_o.
  state, info = aligned_unlearning(ctx, cfg, pred_easy, jax.random.fold_in(ctx.key, 99))
  acc_mo_df = engine.evaluate(ctx.original, x_f, y_f)
  info.update(pred_easy=pred_easy, features=dict(
      twin=twin_feats, twin_easy=twin_easy, forget=orig_feats, p_easy=p_easy))
  info["report"] = dict(
      twin_size=feats["size"], n_twins=cfg.n_twins, twin_acc_mt=feats["twin_acc"],
      orig_acc_mo_df=acc_mo_df, twin_hard_rate=100.0 * twin_hard_rate,
      pred_hard=int((~pred_easy).sum()),
      twin_auc=_auc(np.asarray(easy_probability(clf, twin_z)), twin_easy.astype(bool)))
  return state, info


@register("tmu")
def tmu(ctx: Context, cfg):
  """Faithful TMU (METHODS §2)."""
  return run_tmu(ctx, cfg)


@register("tmu_plus")
def tmu_plus(ctx: Context, cfg):
  """TMU with the FINDINGS.md options (more twins, balanced loss, twin-rate threshold,
  runner-up unlearning); same pipeline, other config defaults."""
  return run_tmu(ctx, cfg)


@functools.lru_cache(maxsize=1)
def _label_mlp():
  return get_model("label_mlp", 1)  # one object, so its compiled steps are reused
