"""TMU — Twin Machine Unlearning (TMU paper §2; METHODS §2).

1. Twin problem (§2.1, :mod:`.twin`): D_t from the holdout pool P (class c), sized by the
   forgetting ratio; twin model M_t = M_o fine-tuned to memorize D_t; twin gold = M_o; twin
   labels easy(x) = [M_o classifies x ∈ D_t correctly].
2. Features NF, AF, CF (§2.2, :mod:`.features`) for the twin and the original problem,
   standardised with twin statistics (§2.3); optionally KF, an extension (:func:`kf_columns`).
3. Generalization-label classifier (§2.4, :mod:`.classifier`): MLP 3→64→32→1.
4. Aligned unlearning (§2.5, :mod:`.unlearn`): from M_o, keep D_r and predicted-easy D_f,
   forget predicted-hard.

``tmu`` is the faithful variant; ``tmu_plus`` the same pipeline with :class:`TMUPlus`'s
defaults. Variants that differ only downstream of the features (classifier, threshold,
unlearning) share one set of twin artefacts, computed once per (split, M_o, twin settings) and
passed through the run's content-keyed ``ctx.shared`` store.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import rng, train
from tmu_jax.methods.common import Context, Result
from tmu_jax.methods.registry import register
from tmu_jax.methods.tmu import features as F
from tmu_jax.methods.tmu.classifier import (auc, easy_probability, predict_easy,
                                            train_label_classifier)
from tmu_jax.methods.tmu.settings import TMU, TMUPlus
from tmu_jax.methods.tmu.twin import (distinct_images, draw_disjoint_twins, draw_twin,
                                      original_mask,
                                      train_curriculum, train_twin,
                                      train_twins_together, twin_size)
from tmu_jax.methods.tmu.unlearn import aligned_unlearning

__all__ = ["TMU", "TMUPlus", "TwinArtifacts", "run_tmu", "twin_artifacts"]


@dataclasses.dataclass
class TwinArtifacts:
  """§2.1–2.2 outputs shared by the TMU variants of one problem."""
  size: int  # |D_t| of one draw
  twin: np.ndarray  # f32[n_twins·|D_t|, 3] NF, AF, CF of every twin draw
  twin_easy: np.ndarray  # bool[n_twins·|D_t|]: M_o right on the twin sample (twin gold)
  twin_acc: float  # mean accuracy of M_t on its D_t (%)
  distinct: int  # distinct images over all twin draws (n_twins·|D_t| when none repeats)
  forget: np.ndarray  # f32[|D_f|, 3] NF, AF, CF of D_f with M_o
  twin_original: np.ndarray  # bool[n_twins·|D_t|]: a pool image, not an augmented fill copy
  x_twin: jax.Array  # uint8[n_twins·|D_t|, ...]: the twin images, in the rows of ``twin``


def sample_features(ctx: Context, s: TMU, state: train.TrainState,
                    curriculum: train.TrainState, x: jax.Array, y: jax.Array,
                    x_remaining_c: jax.Array, key: jax.Array) -> np.ndarray:
  """[NF, AF, CF] of each sample: f32[n, 3] (§2.2), one code path for twin and original."""
  bs = ctx.recipe.eval_batch_size
  nf = F.nf_feature(ctx.model, state.variables, x, x_remaining_c, k=s.nf.k, batch_size=bs,
                    ref_chunk=s.nf.ref_chunk)
  af = F.af_feature(ctx.model, state.variables, x, y, key, eps=s.af.eps, steps=s.af.steps,
                    batch_size=bs)
  cf = F.per_sample_loss(ctx.model, curriculum.variables, x, y, bs)
  return np.stack([np.asarray(nf), np.asarray(af), np.asarray(cf)], axis=1)


def compute_twin_artifacts(ctx: Context, s: TMU) -> TwinArtifacts:
  """§2.1–2.2: twin draws, their models and labels, and NF/AF/CF of D_t and D_f.

  Keys derive from the problem's seed, not the method name, so variants compare like with like.
  """
  problem = ctx.problem
  keys = jax.random.split(rng.named(rng.seed_key(problem.seed), "tmu/twins"), 5)
  forget, retain = problem.split.forget, problem.split.retain
  size = twin_size(len(forget), len(retain))
  if s.twin.disjoint:
    x_twins = draw_disjoint_twins(problem, keys[0], size, s.n_twins, flip=ctx.spec.flip)
  else:
    x_twins = [draw_twin(problem, jax.random.fold_in(keys[0], j), size, flip=ctx.spec.flip)
               for j in range(s.n_twins)]
  curriculum = train_curriculum(ctx, s, jnp.concatenate(x_twins), keys[1])
  x_rem_twin = problem.take(problem.class_rows(problem.train_portion))[0]
  x_rem_orig = problem.take(problem.class_rows(retain))[0]
  twin_feats, twin_easy, twin_acc = [], [], []
  together = None
  if s.twin.ensemble:
    together = train_twins_together(ctx, s, x_twins, jnp.stack(
        [jax.random.fold_in(keys[2], j) for j in range(s.n_twins)]))
  for j, x_t in enumerate(x_twins):
    y_t = jnp.full((x_t.shape[0],), problem.forget_class, jnp.int32)
    m_t = (train.ensemble.member(together, j) if together is not None
           else train_twin(ctx, s, x_t, jax.random.fold_in(keys[2], j)))
    twin_acc.append(train.accuracy(ctx.model, m_t.variables, x_t, y_t))
    twin_easy.append(np.asarray(jnp.argmax(ctx.logits(ctx.original, x_t), -1) == y_t))
    twin_feats.append(sample_features(ctx, s, m_t, curriculum, x_t, y_t, x_rem_twin,
                                      jax.random.fold_in(keys[3], j)))
  # The same features for the original problem (x ∈ D_f, model M_o, remaining D_r).
  x_f, y_f = problem.take(forget)
  original = original_mask(size, len(problem.class_rows(problem.split.holdout)), s.n_twins)
  return TwinArtifacts(size, np.concatenate(twin_feats), np.concatenate(twin_easy),
                       float(np.mean(twin_acc)), distinct_images(x_twins),
                       sample_features(ctx, s, ctx.original, curriculum, x_f, y_f, x_rem_orig,
                                       keys[4]), original, jnp.concatenate(x_twins))


def twin_artifacts(ctx: Context, s: TMU) -> tuple[TwinArtifacts, bool]:
  """The twin artefacts of this problem and whether they were reused: from ``ctx.shared`` when
  a variant made them already (its time then leaves out the twins: see ``twins_reused``).

  The key is content: the split's key, M_o's cache key and the twin/feature settings.
  """
  key = ("tmu/twins", ctx.problem.split_key, ctx.original_key, s.twin_key)
  if key not in ctx.shared:
    ctx.shared[key] = compute_twin_artifacts(ctx, s)
    return ctx.shared[key], False
  return ctx.shared[key], True


def kf_columns(problem, s: TMU, art: TwinArtifacts) -> tuple[np.ndarray, np.ndarray]:
  """KF (an extension of §2.2) of the twin rows and of D_f: f32[n_twins·|D_t|], f32[|D_f|].

  Each side's references are its gold's training set: D_r ∪ D_f for D_t (the twin gold is M_o),
  D_r for D_f (M_g). Model-free and deterministic, so it is computed here, beside the shared
  twin artefacts, only for the variants that use it."""
  cls = problem.forget_class
  kf = lambda x, rows: np.asarray(F.kf_feature(x, *problem.take(rows), cls, k=s.kf.k,
                                               ref_chunk=s.kf.ref_chunk))
  return kf(art.x_twin, problem.train_portion), kf(problem.take(problem.split.forget)[0],
                                                   problem.split.retain)


def heldout_auc(s: TMU, twin_z: np.ndarray, twin_easy: np.ndarray, n_draws: int,
                key: jax.Array) -> float:
  """Mean over twin draws j of the AUC, on draw j, of a classifier trained on the other draws
  (k = n_draws folds; nan with one draw): the classifier's ranking on twin data it never saw."""
  if n_draws < 2:
    return float("nan")
  draw = np.repeat(np.arange(n_draws), len(twin_easy) // n_draws)
  scores = []
  for j in range(n_draws):
    fit_rows, test_rows = draw != j, draw == j
    clf = train_label_classifier(s, twin_z[fit_rows], twin_easy[fit_rows],
                                 jax.random.fold_in(key, j), False)
    scores.append(auc(np.asarray(easy_probability(clf, twin_z[test_rows])),
                      twin_easy[test_rows].astype(bool)))
  return float(np.nanmean(scores))


def run_tmu(ctx: Context, s: TMU) -> Result:
  """The whole TMU pipeline from M_o: a Result with ``pred_easy`` and report entries."""
  problem = ctx.problem
  keys = jax.random.split(ctx.key, 6)
  art, reused = twin_artifacts(ctx, s)
  # §2.3 standardise with twin statistics; §2.4 classifier; predicted easy/hard split of D_f.
  # (standardize = "own": D_f with its own statistics instead, a per-problem normalisation.)
  twin_feats, forget_feats = art.twin, art.forget
  if "kf" in s.features.split(","):  # the extension's fourth column
    twin_kf, forget_kf = kf_columns(problem, s, art)
    twin_feats = np.concatenate([twin_feats, twin_kf[:, None]], axis=1)
    forget_feats = np.concatenate([forget_feats, forget_kf[:, None]], axis=1)
  cols = s.feature_columns
  twin_z, orig_z = (z[:, cols] for z in F.standardize(twin_feats, forget_feats, s.standardize))
  clf = train_label_classifier(s, twin_z, art.twin_easy, keys[5], ctx.verbose)
  p_easy = easy_probability(clf, orig_z)
  # The twin hard rate sets TMU+'s hard count. With a short pool, augmented fill copies are
  # harder than real images (Fig. 3 at |D_f| >= 2000); rate_from = "originals" counts pool
  # images only.
  rated = art.twin_original if s.rate_from == "originals" else np.ones_like(art.twin_original)
  twin_hard_rate = float(1.0 - art.twin_easy[rated].mean())
  pred_easy = predict_easy(p_easy, s.threshold, twin_hard_rate, rng.named(ctx.key, "tmu/random_hard"))
  # §2.5 aligned unlearning from M_o.
  out = aligned_unlearning(ctx, s.unlearn, pred_easy, rng.named(ctx.key, "tmu/unlearn"))
  x_f, y_f = problem.take(problem.split.forget)
  out.pred_easy = pred_easy
  out.arrays = dict(twin=twin_feats, twin_easy=art.twin_easy, forget=forget_feats, p_easy=p_easy)
  out.report.update(
      twin_size=art.size, n_twins=s.n_twins, twins_reused=reused, twin_distinct=art.distinct,
      # §2.2's symmetry: M_c sees each D_f image once an epoch and each distinct twin image this
      # many times on average (1.0: disjoint draws the pool fills; augmented fill copies count
      # as distinct images, though they repeat a pool image).
      curriculum_twin_exposure=s.n_twins * art.size / max(art.distinct, 1),
      twin_acc_mt=art.twin_acc,
      orig_acc_mo_df=train.accuracy(ctx.model, ctx.original.variables, x_f, y_f),
      twin_hard_rate=100.0 * twin_hard_rate, pred_hard=int((~pred_easy).sum()),
      twin_hard_rate_all=100.0 * float(1.0 - art.twin_easy.mean()),
      twin_original_share=100.0 * float(art.twin_original.mean()),
      twin_auc=auc(np.asarray(easy_probability(clf, twin_z)), art.twin_easy.astype(bool)))
  if s.clf.heldout_auc:
    out.report["twin_auc_heldout"] = heldout_auc(s, np.asarray(twin_z), np.asarray(art.twin_easy),
                                                 s.n_twins, rng.named(ctx.key, "tmu/heldout"))
  return out


@register("tmu", TMU, group="tmu", needs=("retain", "pool"))
def tmu(ctx: Context, s: TMU) -> Result:
  """Faithful TMU (METHODS §2)."""
  return run_tmu(ctx, s)


@register("tmu_plus", TMUPlus, group="tmu", needs=("retain", "pool"))
def tmu_plus(ctx: Context, s: TMUPlus) -> Result:
  """TMU with the FINDINGS.md options (more twins, balanced loss, twin-rate threshold,
  runner-up unlearning); same pipeline, other defaults."""
  return run_tmu(ctx, s)


@register("tmu_plus_oracle", TMUPlus, group="tmu", paper=False, needs=("retain", "gold"))
def tmu_plus_oracle(ctx: Context, s: TMUPlus) -> Result:
  """Oracle reference, not a method: TMU+'s aligned unlearning (§2.5) with gold's own easy/hard
  labels on D_f instead of the classifier's (no twins, no features). It reads M_g, so it only
  bounds what a perfect label classifier could reach through this unlearning mechanism."""
  if ctx.gold_easy is None:
    raise ValueError("tmu_plus_oracle needs the gold model's correctness on D_f (gold_easy)")
  pred_easy = np.asarray(ctx.gold_easy, bool)
  out = aligned_unlearning(ctx, s.unlearn, pred_easy, rng.named(ctx.key, "tmu/unlearn"))
  out.pred_easy = pred_easy
  out.report.update(pred_hard=int((~pred_easy).sum()), oracle=True)
  return out
