"""§2.3–2.4: the generalization-label classifier on standardised twin features, and the
easy/hard decision on D_f."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import metrics, train
from tmu_jax.methods.tmu.settings import TMU
from tmu_jax.models import get_model

LABEL_MLP = get_model("label_mlp", 1)  # 3 → 64 → 32 → 1 (a value: equal everywhere)


def train_label_classifier(s: TMU, feats: np.ndarray, easy: np.ndarray, key: jax.Array,
                           verbose: bool) -> train.TrainState:
  """§2.4: MLP 3→64→32→1, BCE, SGD lr 0.01 momentum 0.9 wd 5e-4, ``clf.epochs`` epochs.

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
  state = train.new_state(k_init, LABEL_MLP, (feats.shape[1],), opt)
  spec = train.StepSpec(model=LABEL_MLP, optimizer=opt.family,
                        loss_fn=train.binary_cross_entropy)
  state, _ = train.fit(state, stream, spec=spec, epochs=s.clf.epochs, key=k_fit,
                       name="tmu/classifier", verbose=verbose)
  return state


def easy_probability(state: train.TrainState, feats: np.ndarray) -> np.ndarray:
  """p(easy) of each row of f32[n, F] standardised features: f32[n]."""
  logits = train.logits(LABEL_MLP, state.variables, jnp.asarray(feats))
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


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """ROC AUC of ``scores`` for ``positive`` (:func:`tmu_jax.metrics.roc_auc`)."""
  return metrics.roc_auc(scores, positive)
