"""Gold-vs-gold noise floor of the §5 metrics, and a method read against it (METHODS §5b).

Two gold models that differ only in their seed already disagree on part of D_f. Each §5 metric
(gap, agreement, L2 / L1 activation distance on D_f) is computed between gold members to give its
floor (mean ± std over pairs), and between a method and every gold member to give its value
(mean ± std over members); :func:`floors_away` reads the one against the other.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import metrics

ArrayLike = Any  # np.ndarray | jax.Array | a nested sequence

METRICS = ("gap", "agreement", "act_l2", "act_l1")
HIGHER_IS_BETTER = {"gap": False, "agreement": True, "act_l2": False, "act_l1": False}
_MODES = ("pairs", "halves")


@dataclasses.dataclass(frozen=True)
class Spread:
  """Mean ± sample std (ddof 1; nan when n < 2) of one metric over n pairs or members."""

  mean: float
  std: float
  n: int
  values: np.ndarray = dataclasses.field(compare=False, repr=False)  # f32[n]


def spread(values: ArrayLike) -> Spread:
  """f32[n] values → Spread (nan mean when n = 0)."""
  v = np.asarray(values, np.float64).reshape(-1)
  mean = float(v.mean()) if v.size else float("nan")
  std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
  return Spread(mean, std, int(v.size), v.astype(np.float32))


def _models(logits: ArrayLike, name: str) -> np.ndarray:
  """f32[S, K] or f32[M, S, K] → f32[M, S, K]."""
  x = np.asarray(logits, np.float32)
  if x.ndim == 2:
    x = x[None]
  if x.ndim != 3:
    raise ValueError(f"{name}: logits must be [S, K] or [M, S, K], got shape {x.shape}")
  return x


@jax.jit
def _act_distances(logits_a: jax.Array, logits_b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """f32[A, S, K], f32[B, S, K] → f32[A, B] mean over S of ‖softmax(a) − softmax(b)‖₂ and ‖·‖₁."""
  pa, pb = jax.nn.softmax(logits_a, -1), jax.nn.softmax(logits_b, -1)

  def row(p):  # f32[S, K] → f32[B], f32[B]
    d = pb - p[None]
    return (jnp.mean(jnp.sqrt(jnp.sum(d * d, -1)), -1), jnp.mean(jnp.sum(jnp.abs(d), -1), -1))

  return jax.lax.map(row, pa)


def cross_metrics(logits_a: ArrayLike, logits_b: ArrayLike,
                  labels: ArrayLike) -> dict[str, np.ndarray]:
  """Every §5 metric between each model of f32[A, S, K] and each of f32[B, S, K] on int[S]
  labels → {name: f32[A, B]} (gap and agreement in points, as tmu_jax.metrics)."""
  a, b = _models(logits_a, "cross_metrics"), _models(logits_b, "cross_metrics")
  y = np.asarray(labels)
  if a.shape[1:] != b.shape[1:] or y.shape != a.shape[1:2]:
    raise ValueError(f"cross_metrics: need [A, S, K], [B, S, K] and [S], got {a.shape}, "
                     f"{b.shape} and {y.shape}")
  s = y.shape[0]
  if s == 0:
    return {m: np.full((a.shape[0], b.shape[0]), np.nan, np.float32) for m in METRICS}
  correct = lambda x: metrics.correct(x.reshape(-1, x.shape[-1]), np.tile(y, x.shape[0])
                                      ).reshape(x.shape[0], s).astype(np.float64)
  ca, cb = correct(a), correct(b)
  # metrics.gap |acc_a − acc_b| and metrics.agreement, for every pair at once.
  gap = np.abs(100.0 * ca.mean(1)[:, None] - 100.0 * cb.mean(1)[None, :])
  agreement = 100.0 * (ca @ cb.T + (1 - ca) @ (1 - cb).T) / s
  l2, l1 = _act_distances(jnp.asarray(a), jnp.asarray(b))  # metrics.activation_distance
  return {"gap": gap.astype(np.float32), "agreement": agreement.astype(np.float32),
          "act_l2": np.asarray(l2), "act_l1": np.asarray(l1)}


def noise_floor(gold_logits: ArrayLike, labels: ArrayLike,
                mode: str = "pairs") -> dict[str, Spread]:
  """Floor of each §5 metric from f32[G, S, K] gold logits on D_f: over the G(G−1)/2 pairs
  i < j ("pairs"), or over first-half × second-half pairs ("halves") → {name: Spread}."""
  g = _models(gold_logits, "noise_floor")
  n = g.shape[0]
  if n < 2:
    raise ValueError(f"noise_floor: needs at least 2 gold models, got {n}")
  if mode not in _MODES:
    raise ValueError(f"noise_floor: mode must be one of {_MODES}, got {mode!r}")
  if mode == "halves":
    h = n // 2
    return {k: spread(v) for k, v in cross_metrics(g[:h], g[h:], labels).items()}
  i, j = np.triu_indices(n, k=1)
  return {k: spread(v[i, j]) for k, v in cross_metrics(g, g, labels).items()}


def method_vs_gold(method_logits: ArrayLike, gold_logits: ArrayLike,
                   labels: ArrayLike) -> dict[str, Spread]:
  """Each §5 metric of f32[S, K] (or f32[M, S, K], M runs) method logits against every member
  of f32[G, S, K] gold logits on D_f → {name: Spread over the M·G (run, member) pairs}."""
  return {k: spread(v) for k, v in cross_metrics(method_logits, gold_logits, labels).items()}


def floors_away(value: float, floor_mean: float, floor_std: float,
                higher_is_better: bool) -> float:
  """(value − floor mean) / floor std, signed so that > 0 is worse than gold-vs-gold.

  |k| <= 1 reads "within the floor". A zero std gives 0 when value equals the mean, else ±inf;
  a nan std (one pair) gives nan.
  """
  worse = (floor_mean - value) if higher_is_better else (value - floor_mean)
  if floor_std > 0:
    return float(worse / floor_std)
  if floor_std == 0:
    return 0.0 if worse == 0 else math.copysign(math.inf, worse)
  return float("nan")


def compare_to_floor(method: dict[str, Spread], floor: dict[str, Spread]) -> dict[str, float]:
  """{name: floors_away(method mean, floor mean, floor std)} for the metrics in both dicts."""
  return {k: floors_away(method[k].mean, floor[k].mean, floor[k].std, HIGHER_IS_BETTER[k])
          for k in METRICS if k in method and k in floor}
