"""Metrics of METHODS §5, as pure functions over arrays. Percentages are in [0, 100].

Inputs may be numpy or jax arrays (or lists); scalar metrics come back as Python floats and
per-sample ones as numpy arrays. A metric over an empty set is nan, never an error.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any  # np.ndarray | jax.Array | a nested sequence


def _same_shape(name: str, a: np.ndarray | jax.Array, b: np.ndarray | jax.Array) -> None:
  """Raises if two per-sample arrays differ in shape (they would broadcast silently)."""
  if a.shape != b.shape:
    raise ValueError(f"{name}: the two inputs must have the same shape, got {a.shape} and "
                     f"{b.shape}")


def correct(logits_or_preds: ArrayLike, labels: ArrayLike) -> np.ndarray:
  """bool[N]: prediction (argmax of f32[N, K] logits, or int[N] predictions) equals int[N] label."""
  x, y = np.asarray(logits_or_preds), np.asarray(labels)
  preds = x.argmax(-1) if x.ndim == 2 else x
  _same_shape("correct", preds, y)
  return preds == y


def accuracy(logits_or_preds: ArrayLike, labels: ArrayLike) -> float:
  """Percent of correct predictions (f32[N, K] logits or int[N] preds vs int[N]); nan if N = 0."""
  c = correct(logits_or_preds, labels)
  return float(100.0 * c.mean()) if c.size else float("nan")


def gap(acc_forget_unlearned: float, acc_forget_gold: float) -> float:
  """Alignment gap Δ = |Acc_Df(M_u) − Acc_Df(M_g)| in points (TMU Tables 1–2)."""
  return float(abs(acc_forget_unlearned - acc_forget_gold))


def agreement(correct_unlearned: ArrayLike, correct_gold: ArrayLike) -> float:
  """Percent of D_f (bool[N] each) whose correctness under M_u equals that under M_g.

  Per-sample alignment (METHODS §5): unlike the gap, a random subset of the right size does not
  score well here (FINDINGS.md).
  """
  a, b = np.asarray(correct_unlearned, bool), np.asarray(correct_gold, bool)
  _same_shape("agreement", a, b)
  return float(100.0 * np.mean(a == b)) if a.size else float("nan")


def activation_distance(logits_u: ArrayLike, logits_g: ArrayLike,
                        ord: int = 2) -> float:  # pylint: disable=redefined-builtin
  """Mean over N of ‖softmax(u) − softmax(g)‖_ord for f32[N, K] logits.

  ord 2: TMU, Bad Teacher; ord 1: Golatkar, SCRUB. nan if N = 0.
  """
  u, g = jnp.asarray(logits_u, jnp.float32), jnp.asarray(logits_g, jnp.float32)
  _same_shape("activation_distance", u, g)
  if u.shape[0] == 0:
    return float("nan")
  d = jax.nn.softmax(u, -1) - jax.nn.softmax(g, -1)
  return float(jnp.mean(jnp.linalg.norm(d, ord=ord, axis=-1)))


def label_accuracy(pred_easy: ArrayLike, gold_correct: ArrayLike) -> float:
  """Percent of D_f where TMU's predicted easy (bool[N]) equals gold's correctness (bool[N]);
  TMU Table 4."""
  return agreement(pred_easy, gold_correct)


def roc_auc(scores: ArrayLike, positive: ArrayLike) -> float:
  """ROC AUC of ``scores`` for the bool mask ``positive`` (Mann-Whitney U with midranks, so a
  tie between a positive and a negative counts ½), nan if one class is absent. The one AUC of
  the project: TMU's twin AUCs and the label AUC against gold both call it."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  _same_shape("roc_auc", scores, positive)
  scores, positive = scores.reshape(-1), positive.reshape(-1)
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="stable")
  _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
  ranks = np.empty(scores.size)
  ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based midranks
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_sample_ce(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
  """Cross-entropy of each sample: f32[N, K] logits, int[N] labels → f32[N]."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
  y = jnp.asarray(labels, jnp.int32)
  _same_shape("per_sample_ce", logp[:, 0], y)
  return np.asarray(-jnp.take_along_axis(logp, y[:, None], -1)[:, 0])


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_logistic(x: jax.Array, y: jax.Array, w: jax.Array, steps: int) -> jax.Array:
  """Weighted 1-D logistic regression by Newton's method: f32[M] x, y, w → f32[2] (a, b) of
  P(member) = σ(a·x + b)."""

  def newton(params, _):
    a, b = params
    p = jax.nn.sigmoid(a * x + b)
    g = jnp.array([jnp.sum(w * (p - y) * x), jnp.sum(w * (p - y))])
    s = w * p * (1 - p)
    h = jnp.array([[jnp.sum(s * x * x), jnp.sum(s * x)], [jnp.sum(s * x), jnp.sum(s)]])
    # Damping only (the gradient has no penalty): on separable data (a memorized model's loss is
    # often exactly 0) σ saturates, h → 0, and the damped step stays finite instead of NaN; the
    # boundary −b/a still lies between the two classes.
    return params - jnp.linalg.solve(h + 1e-4 * jnp.eye(2), g), None

  params, _ = jax.lax.scan(newton, jnp.zeros(2), None, length=steps)
  return params


def membership_inference(loss_members: ArrayLike, loss_nonmembers: ArrayLike,
                         loss_query: ArrayLike, *, steps: int = 50) -> float:
  """Loss-based MIA (METHODS §5): percent of f32[Q] query losses predicted member.

  Fits P(member) = σ(a·ℓ + b) on f32[M] member losses (label 1, e.g. a D_r sample) and f32[N]
  non-member losses (label 0, e.g. D_test). Choices: each class is weighted to half the total,
  not subsampled, so unequal set sizes neither bias the boundary nor discard data; the loss is
  standardised with the training statistics; the fit is ``steps`` Newton iterations (the 2×2
  problem converges in ~10, so 50 is ample). A query is a member when p > 0.5.
  """
  m = np.asarray(loss_members, np.float64).reshape(-1)
  n = np.asarray(loss_nonmembers, np.float64).reshape(-1)
  q = np.asarray(loss_query, np.float64).reshape(-1)
  if m.size == 0 or n.size == 0:
    raise ValueError(f"membership_inference: needs members and non-members to fit, got "
                     f"{m.size} members and {n.size} non-members")
  if q.size == 0:
    return float("nan")
  x = np.concatenate([m, n])
  mu, sd = x.mean(), max(x.std(), 1e-12)
  y = np.concatenate([np.ones(m.size), np.zeros(n.size)])
  w = np.concatenate([np.full(m.size, 0.5 / m.size), np.full(n.size, 0.5 / n.size)])
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  a, b = np.asarray(_fit_logistic(f32((x - mu) / sd), f32(y), f32(w), steps), np.float64)
  member = (a * (q - mu) / sd + b) > 0  # σ(z) > 0.5 ⟺ z > 0
  return float(100.0 * member.mean())


def js_divergence(p: ArrayLike, q: ArrayLike) -> np.ndarray:
  """Per-sample Jensen–Shannon divergence (natural log, so in [0, ln 2]) between rows of
  f32[N, K] distributions p and q → f32[N]."""
  p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
  _same_shape("js_divergence", p, q)
  m = 0.5 * (p + q)

  def kl(a, b):  # 0·log 0 = 0; b ≥ a/2 > 0 wherever a > 0, so the clip only guards a = 0
    return jnp.sum(jnp.where(a > 0, a * (jnp.log(jnp.clip(a, 1e-30)) - jnp.log(
        jnp.clip(b, 1e-30))), 0.0), -1)

  return np.asarray(jnp.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, jnp.log(2.0)))


def zrf(logits_u: ArrayLike, logits_random: ArrayLike) -> float:
  """ZRF = 1 − mean JS(softmax(u), softmax(random teacher)) over f32[N, K] logits on D_f
  (Bad Teacher; mean reduction), in [1 − ln 2, 1]; nan if N = 0."""
  p = jax.nn.softmax(jnp.asarray(logits_u, jnp.float32), -1)
  q = jax.nn.softmax(jnp.asarray(logits_random, jnp.float32), -1)
  js = js_divergence(p, q)
  return float(1.0 - js.mean()) if js.size else float("nan")
