"""Scores a model of a run against its gold model (METHODS §5): accuracies, gap, agreement,
activation distances, MIA and ZRF on fixed reference sets."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from tmu_jax import metrics, rng, train
from tmu_jax.protocol import Problem, Recipe


@dataclasses.dataclass
class Reference:
  """What every model of a run is scored against: gold outputs and fixed MIA / ZRF sets."""
  gold_logits_forget: jax.Array
  gold_acc_forget: float
  member_index: np.ndarray  # a D_r sample (MIA members)
  nonmember_images: jax.Array  # D_test sample (MIA non-members)
  nonmember_labels: jax.Array
  random_logits_forget: jax.Array  # a randomly initialised net on D_f (ZRF)


@dataclasses.dataclass(frozen=True)
class Scorer:
  """The run's model, problem and inference chunk: scores any state of that model."""
  model: nn.Module
  problem: Problem
  recipe: Recipe

  def logits(self, state: train.TrainState, images: jax.Array) -> jax.Array:
    return train.logits(self.model, state.variables, images, self.recipe.eval_batch_size)

  def reference(self, gold: train.TrainState, mia_samples: int) -> Reference:
    """The gold outputs on D_f and the fixed MIA / ZRF sets of this problem."""
    problem = self.problem
    key = rng.seed_key(problem.seed)
    k_mem, k_non = rng.named(key, "mia/members"), rng.named(key, "mia/nonmembers")
    k_rand = rng.named(key, "zrf/random_model")
    retain = problem.split.retain
    n = min(mia_samples, len(retain), problem.y_test.shape[0])
    member = np.sort(retain[np.asarray(jax.random.choice(k_mem, len(retain), (n,),
                                                         replace=False))])
    non = jax.random.choice(k_non, problem.y_test.shape[0], (n,), replace=False)
    x_f, y_f = problem.take(problem.split.forget)
    random_vars = train.init_variables(k_rand, self.model, problem.image_shape)
    gold_logits = self.logits(gold, x_f)
    return Reference(gold_logits, metrics.accuracy(gold_logits, y_f), member,
                     problem.x_test[non], problem.y_test[non],
                     train.logits(self.model, random_vars, x_f, self.recipe.eval_batch_size))

  def accuracies(self, state: train.TrainState, problem: Problem | None = None
                 ) -> dict[str, float]:
    """acc_test, acc_retain, acc_forget in percent."""
    problem = problem or self.problem
    x_f, y_f = problem.take(problem.split.forget)
    x_r, y_r = problem.take(problem.split.retain)
    return dict(acc_test=metrics.accuracy(self.logits(state, problem.x_test), problem.y_test),
                acc_retain=metrics.accuracy(self.logits(state, x_r), y_r),
                acc_forget=metrics.accuracy(self.logits(state, x_f), y_f))

  def score(self, state: train.TrainState, ref: Reference) -> dict[str, Any]:
    """Accuracies and the alignment metrics of METHODS §5 against ``ref``."""
    return self.score_and_logits(state, ref)[0]

  def score_and_logits(self, state: train.TrainState, ref: Reference
                       ) -> tuple[dict[str, Any], jax.Array]:
    """:meth:`score` and the model's logits on D_f f32[S, K] (for the ensemble metrics)."""
    problem = self.problem
    x_f, y_f = problem.take(problem.split.forget)
    logits_f = self.logits(state, x_f)
    out = self.accuracies(state)
    out["gap"] = metrics.gap(out["acc_forget"], ref.gold_acc_forget)
    out["agreement"] = metrics.agreement(metrics.correct(logits_f, y_f),
                                         metrics.correct(ref.gold_logits_forget, y_f))
    out["act_dist_l2"] = metrics.activation_distance(logits_f, ref.gold_logits_forget, ord=2)
    out["act_dist_l1"] = metrics.activation_distance(logits_f, ref.gold_logits_forget, ord=1)
    x_m, y_m = problem.take(ref.member_index)
    loss = lambda x, y: metrics.per_sample_ce(self.logits(state, x), y)
    out["mia"] = metrics.membership_inference(loss(x_m, y_m),
                                              loss(ref.nonmember_images, ref.nonmember_labels),
                                              metrics.per_sample_ce(logits_f, y_f))
    out["zrf"] = metrics.zrf(logits_f, ref.random_logits_forget)
    return out, logits_f

  def gold_easy(self, ref: Reference) -> np.ndarray:
    """bool[|D_f|]: M_g right on each forget sample (gold's easy/hard labels; TMU Table 4)."""
    return metrics.correct(ref.gold_logits_forget, self.problem.take(self.problem.split.forget)[1])

  def label_auc(self, p_easy: np.ndarray, ref: Reference) -> float:
    """ROC AUC of a method's easy-probabilities on D_f for gold's correctness there (M_g's):
    how well TMU's classifier ranks the real problem, for reporting only (never used)."""
    return metrics.roc_auc(p_easy, self.gold_easy(ref))

  def label_accuracy(self, pred_easy: np.ndarray, ref: Reference) -> float:
    """TMU Table 4: a method's predicted easy/hard split of D_f against gold's correctness."""
    return metrics.label_accuracy(pred_easy, self.gold_easy(ref))
