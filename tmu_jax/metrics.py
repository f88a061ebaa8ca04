"""Metrics of METHODS §5, as pure functions over arrays. Percentages are in [0, 100]."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def correct(logits_or_preds, labels) -> np.ndarray:
  """bool[N]: prediction (argmax of f32[N, K] logits, or int[N] predictions) equals label."""
  x = np.asarray(logits_or_preds)
  preds = x.argmax(-1) if x.ndim == 2 else x
  return preds == np.asarray(labels)


def accuracy(logits_or_preds, labels) -> float:
  """Percent of correct predictions; nan for an empty set."""
  c = correct(logits_or_preds, labels)
  return float(100.0 * c.mean()) if c.size else float("nan")


def gap(acc_forget_unlearned: float, acc_forget_gold: float) -> float:
  """Alignment gap Δ = |Acc_Df(M_u) − Acc_Df(M_g)| in points (TMU Tables 1–2)."""
  return float(abs(acc_forget_unlearned - acc_forget_gold))


def agreement(correct_unlearned, correct_gold) -> float:
  """Percent of D_f whose correctness under M_u equals that under M_g (per-sample alignment)."""
  a, b = np.asarray(correct_unlearned, bool), np.asarray(correct_gold, bool)
  return float(100.0 * np.mean(a == b)) if a.size else float("nan")


def activation_distance(logits_u, logits_g, ord: int = 2) -> float:  # pylint: disable=redefined-builtin
  """Mean over samples of ‖softmax(u) − softmax(g)‖_ord (TMU / Bad Teacher ord 2, SCRUB ord 1)."""
  p = jax.nn.softmax(jnp.asarray(logits_u, jnp.float32), -1)
  q = jax.nn.softmax(jnp.asarray(logits_g, jnp.float32), -1)
  return float(jnp.mean(jnp.linalg.norm(p - q, ord=ord, axis=-1)))


def label_accuracy(pred_easy, gold_correct) -> float:
  """Percent of D_f where TMU's predicted easy/hard equals gold's correctness (TMU Table 4)."""
  return agreement(pred_easy, gold_correct)


def per_sample_ce(logits, labels) -> np.ndarray:
  """Cross-entropy of each sample: f32[N]."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
  return np.asarray(-jnp.take_along_axis(logp, jnp.asarray(labels)[:, None], -1)[:, 0])


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_logistic(x, y, w, steps: int):
  """1-D weighted logistic regression by Newton's method: returns (a, b) of σ(a·x + b)."""

  def newton(params, _):
    a, b = params
    p = jax.nn.sigmoid(a * x + b)
    g = jnp.array([jnp.sum(w * (p - y) * x), jnp.sum(w * (p - y))])
    s = w * p * (1 - p) + 1e-6
    h = jnp.array([[jnp.sum(s * x * x), jnp.sum(s * x)], [jnp.sum(s * x), jnp.sum(s)]])
    h = h + 1e-4 * jnp.eye(2)  # a small ridge keeps separable data finite
    return params - jnp.linalg.solve(h, g), None

  params, _ = jax.lax.scan(newton, jnp.zeros(2), None, length=steps)
  return params


def membership_inference(loss_members, loss_nonmembers, loss_query, steps: int = 50) -> float:
  """Loss-threshold MIA (METHODS §5): logistic regression on per-sample loss.

  Fits σ(a·ℓ + b) = P(member) on members (label 1) and non-members (label 0), each class
  weighted to half the total so unequal set sizes do not bias it; the feature is standardised
  with the training statistics. Returns the percent of ``loss_query`` predicted member.
  """
  m = np.asarray(loss_members, np.float64)
  n = np.asarray(loss_nonmembers, np.float64)
  q = np.asarray(loss_query, np.float64)
  x = np.concatenate([m, n])
  mu, sd = x.mean(), max(x.std(), 1e-12)
  y = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
  w = np.concatenate([np.full(len(m), 0.5 / len(m)), np.full(len(n), 0.5 / len(n))])
  a, b = np.asarray(_fit_logistic(jnp.asarray((x - mu) / sd, jnp.float32),
                                  jnp.asarray(y, jnp.float32), jnp.asarray(w, jnp.float32),
                                  steps))
  member = (a * (q - mu) / sd + b) > 0
  return float(100.0 * member.mean())


def js_divergence(p, q) -> np.ndarray:
  """Per-sample Jensen-Shannon divergence (natural log) between rows of p and q: f32[N]."""
  p, q = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
  m = 0.5 * (p + q)
  kl = lambda a, b: jnp.sum(jnp.where(a > 0, a * (jnp.log(jnp.clip(a, 1e-30)) - jnp.log(
      jnp.clip(b, 1e-30))), 0.0), -1)
  return np.asarray(0.5 * kl(p, m) + 0.5 * kl(q, m))


def zrf(logits_u, logits_random) -> float:
  """ZRF = 1 − mean JS(M_u(x), T_random(x)) over D_f (Bad Teacher; mean reduction), in [0, 1]."""
  p = jax.nn.softmax(jnp.asarray(logits_u, jnp.float32), -1)
  q = jax.nn.softmax(jnp.asarray(logits_random, jnp.float32), -1)
  return float(1.0 - np.mean(js_divergence(p, q)))
