"""§2.3–2.4: the generalization-label classifier on standardised twin features, and the
easy/hard decision on D_f."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import metrics, train
from tmu_jax.train import ensemble as E
from tmu_jax.methods.tmu.settings import TMU
from tmu_jax.models import get_model

LABEL_MLP = get_model("label_mlp", 1)  # 3 → 64 → 32 → 1 (a value: equal everywhere)


def train_label_classifier(s: TMU, feats: np.ndarray, easy: np.ndarray, key: jax.Array,
                           verbose: bool) -> train.TrainState:
  """§2.4: MLP 3→64→32→1, BCE, SGD lr 0.01 momentum 0.9 wd 5e-4, ``clf.epochs`` epochs;
  ``clf.members`` > 1 trains that many (an ensemble state, averaged by easy_probability).

  With ``balanced``, each class's examples weigh 1/(2·its share), so hard samples count as
  much as easy ones in total (FINDINGS.md: the plain loss collapses to "all easy").
  """
  easy = easy.astype(np.int32)
  weight = np.ones(len(easy), np.float32)
  if s.balanced and 0 < easy.sum() < len(easy):
    share = np.where(easy == 1, easy.mean(), 1 - easy.mean())
    weight = (0.5 / share).astype(np.float32)
  stream = train.Stream(dict(image=jnp.asarray(feats), label=jnp.asarray(easy),
                             weight=jnp.asarray(weight)), s.clf.batch_size)
  opt = train.Optimizer("sgd", s.clf.lr, 0.9, s.clf.weight_decay)
  k_init, k_fit = jax.random.split(key)
  spec = train.StepSpec(model=LABEL_MLP, optimizer=opt.family,
                        loss_fn=train.binary_cross_entropy)
  if s.clf.members == 1:
    state = train.new_state(k_init, LABEL_MLP, (feats.shape[1],), opt)
    state, _ = train.fit(state, stream, spec=spec, epochs=s.clf.epochs, key=k_fit,
                         name="tmu/classifier", verbose=verbose)
    return state
  # ``members`` classifiers as one program (member 0 is the single classifier of ``key``),
  # each its own initialisation and batch order; easy_probability averages them.
  m = s.clf.members
  states = E.new_ensemble(E.member_keys(k_init, m), LABEL_MLP, (feats.shape[1],), opt)
  states, _ = E.fit_ensemble(states, stream, spec=spec, epochs=s.clf.epochs,
                             keys=E.member_keys(k_fit, m), name="tmu/classifiers",
                             verbose=verbose)
  return states


def easy_probability(state: train.TrainState, feats: np.ndarray) -> np.ndarray:
  """p(easy) of each row of f32[n, F] standardised features: f32[n]; for an ensemble of
  classifiers (a leading member axis), the mean over members."""
  x = jnp.asarray(feats)
  if state.step.ndim == 0:
    return np.asarray(jax.nn.sigmoid(train.logits(LABEL_MLP, state.variables, x)[:, 0]))
  p = [jax.nn.sigmoid(train.logits(LABEL_MLP, E.member(state, i).variables, x)[:, 0])
       for i in range(E.size(state))]
  return np.asarray(jnp.mean(jnp.stack(p), axis=0))


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


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """ROC AUC of ``scores`` for ``positive`` (:func:`tmu_jax.metrics.roc_auc`)."""
  return metrics.roc_auc(scores, positive)
