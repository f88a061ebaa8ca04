"""Per-example ε of the NeurIPS 2023 Machine Unlearning Challenge (METHODS §5b).

Written from the definition in METHODS §5b (Triantafillou, Kairouz et al., "Evaluation for the
NeurIPS Machine Unlearning Competition", 2023); docs/evaluation.md lists where the organisers'
PDF, their public scorer (google-deepmind/unlearning_evaluation) and this module differ.

For each forget example s there are N_r values from retrained models and N_u from unlearned
ones. A decision rule predicts "positive" on a set R of confidences; FPR = the negatives' share
in R, FNR = the positives' share outside R. Rules: single thresholds R = [t, ∞) and intervals
R = [l, r], with t, l, r on a grid of ``grid_per_unit`` points per unit over the example's pooled
range (or at every observed value when it is None, the limit of an infinitely fine grid).

The search is exact over that grid without enumerating it: a rule only matters through the set
of values it captures, so thresholds are taken at the observed values (O(N) per example), and an
interval is determined, for its optimum, by the block of consecutive negatives it holds — taken
as wide as the neighbouring negatives allow, or narrowed by one positive level on either side
when it would hold every positive (a discarded rule). That is O(N_neg²) per example in integer
arithmetic, vectorised over examples; docs/evaluation.md gives the argument.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = Any  # np.ndarray | jax.Array | a nested sequence

_ORIENTATIONS = ("scorer", "both")


@dataclasses.dataclass(frozen=True)
class EpsilonSettings:
  """Knobs of the ε score (METHODS §5b); defaults are the PDF's and the scorer's."""

  grid_per_unit: float | None = 100.0  # thresholds per unit of confidence (scorer); None = exact
  delta: float = 1e-5  # δ of (ε, δ) (scorer's DELTA)
  bin_width: float = 0.5  # width of a scoring bin of ε (PDF and scorer)
  max_epsilon: float = 6.5  # end of the last scoring bin: the PDF's [0, 6.5) for N = 512
  cap: float = 50.0  # largest reported ε; perfect separation and point masses get it (scorer)
  point_mass_ratio: float = 0.01  # one side's range under this share of the other's → cap
  orientation: str = "scorer"  # which side is "positive": "scorer" rules, or "both" (two-sided)
  chunk: int = 64  # examples per compiled call (on an accelerator: memory ~ chunk · N² ints)

  def __post_init__(self):
    if self.grid_per_unit is not None and not self.grid_per_unit > 0:
      raise ValueError(f"EpsilonSettings: grid_per_unit must be > 0 or None, got "
                       f"{self.grid_per_unit}")
    if not 0 <= self.delta < 1:
      raise ValueError(f"EpsilonSettings: delta must be in [0, 1), got {self.delta}")
    if not self.bin_width > 0 or not self.max_epsilon >= 0:
      raise ValueError(f"EpsilonSettings: need bin_width > 0 and max_epsilon >= 0, got "
                       f"{self.bin_width} and {self.max_epsilon}")
    if not self.cap > 0:
      raise ValueError(f"EpsilonSettings: cap must be > 0 (math.inf for none), got {self.cap}")
    if self.orientation not in _ORIENTATIONS:
      raise ValueError(f"EpsilonSettings: orientation must be one of {_ORIENTATIONS}, got "
                       f"{self.orientation!r}")
    if self.chunk < 1:
      raise ValueError(f"EpsilonSettings: chunk must be >= 1, got {self.chunk}")

  @property
  def num_bins(self) -> int:
    """Number of whole scoring bins in [0, max_epsilon) (a partial last bin does not count)."""
    return int(math.floor(self.max_epsilon / self.bin_width + 1e-9))


def max_epsilon_for(num_models: int, bin_width: float = 0.5, rule: str = "pdf") -> float:
  """End of the last scoring bin for N models: ln(N − 1) rounded up to a bin edge ("pdf": 6.5
  for N = 512) or to an integer ("scorer": 7.0 for N = 512)."""
  if num_models < 3:
    raise ValueError(f"max_epsilon_for: needs num_models >= 3 (ln(N − 1) > 0), got {num_models}")
  top = math.log(num_models - 1)
  if rule == "pdf":
    return math.ceil(top / bin_width - 1e-12) * bin_width
  if rule == "scorer":
    return float(math.ceil(top))
  raise ValueError(f"max_epsilon_for: rule must be 'pdf' or 'scorer', got {rule!r}")


def settings_for(num_models: int, rule: str = "pdf", **overrides) -> EpsilonSettings:
  """EpsilonSettings whose last bin fits N models (see :func:`max_epsilon_for`)."""
  width = overrides.get("bin_width", EpsilonSettings.bin_width)
  return EpsilonSettings(**{"max_epsilon": max_epsilon_for(num_models, width, rule),
                            **overrides})


def logit_confidence(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
  """f32[..., K] logits, int[...] labels (broadcast) → f32[...] log p_y − log(1 − p_y).

  Stable form (METHODS §5b): z_y − logsumexp(z_k, k ≠ y), finite for any finite logits.
  """
  z = jnp.asarray(logits, jnp.float32)
  if z.ndim < 1 or z.shape[-1] < 2:
    raise ValueError(f"logit_confidence: needs logits [..., K] with K >= 2, got {z.shape}")
  y = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), z.shape[:-1])
  true = jax.nn.one_hot(y, z.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(true, z, 0.0), -1)
  return np.asarray(z_y - jax.nn.logsumexp(jnp.where(true, -jnp.inf, z), -1))


def rule_epsilon(fpr: ArrayLike, fnr: ArrayLike, delta: float = 1e-5) -> np.ndarray:
  """ε of decision rules from f32[R] FPR and FNR (METHODS §5b) → f32[R]: +inf when both are 0,
  −inf (discarded) when exactly one is, else max(log(1 − δ − FPR) − log FNR,
  log(1 − δ − FNR) − log FPR, 0)."""
  return np.asarray(_rule_eps(jnp.asarray(fpr, jnp.float32), jnp.asarray(fnr, jnp.float32),
                              delta))


def _rule_eps(fpr: jax.Array, fnr: jax.Array, delta: float) -> jax.Array:
  """Traced form of :func:`rule_epsilon`; a log of a non-positive number counts as −inf."""

  def log_ratio(num, den):  # log(num) − log(den) with den > 0; −inf where num <= 0
    return jnp.where(num > 0, jnp.log(jnp.maximum(num, 1e-30)), -jnp.inf) - jnp.log(
        jnp.maximum(den, 1e-30))

  eps = jnp.maximum(jnp.maximum(log_ratio(1 - delta - fpr, fnr), log_ratio(1 - delta - fnr, fpr)),
                    0.0)
  eps = jnp.where((fpr == 0) != (fnr == 0), -jnp.inf, eps)
  return jnp.where((fpr == 0) & (fnr == 0), jnp.inf, eps)


def _count(arr: jax.Array, v: jax.Array, side: str) -> jax.Array:
  """int[...] number of entries of sorted arr below v ("left") or at most v ("right")."""
  return jnp.searchsorted(arr, v, side=side).astype(jnp.int32)


def _grid_index(x: jax.Array, lo: jax.Array, hi: jax.Array, pooled: jax.Array,
                grid_per_unit: float | None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Grid of one example → (fi, ci, G): int[n] fi = max{i: g_i <= x}, ci = min{j: g_j >= x}
  for sorted x, and the grid size G. Uniform grid of max(⌈range · density⌉, 2) points over
  [lo, hi] (the scorer's linspace), or the distinct pooled values when density is None."""
  if grid_per_unit is None:
    first = jnp.concatenate([jnp.ones(1, bool), pooled[1:] > pooled[:-1]])
    rank = jnp.cumsum(first.astype(jnp.int32)) - 1
    fi = rank[_count(pooled, x, "left")]
    return fi, fi, rank[-1] + 1
  span = hi - lo
  n = jnp.maximum(jnp.ceil(span * grid_per_unit), 2).astype(jnp.int32)
  h = jnp.where(span > 0, span, 1.0) / (n - 1).astype(jnp.float32)
  grid = lambda i: jnp.where(i >= n - 1, hi, lo + i.astype(jnp.float32) * h)
  fi = jnp.clip(jnp.floor((x - lo) / h), 0, n - 1).astype(jnp.int32)
  fi = jnp.where((fi < n - 1) & (grid(fi + 1) <= x), fi + 1, fi)  # float rounding of the floor
  fi = jnp.where((fi > 0) & (grid(fi) > x), fi - 1, fi)
  return fi, jnp.where(grid(fi) == x, fi, fi + 1), n


def _single_eps(fp_: jax.Array, fq: jax.Array, delta: float) -> jax.Array:
  """Best ε of the rules "positive iff fi(x) >= t" (x >= g_t) for sorted int[Np] positives'
  and int[Nq] negatives' grid indices; t runs over the observed indices (every distinct set)."""
  n_p, n_q = fp_.shape[0], fq.shape[0]
  t = jnp.concatenate([fp_, fq])
  tp = n_p - _count(fp_, t, "left")
  fp = n_q - _count(fq, t, "left")
  return jnp.max(_rule_eps(fp / n_q, (n_p - tp) / n_p, delta))


def _interval_eps(fp_: jax.Array, cp: jax.Array, fq: jax.Array, cq: jax.Array, g: jax.Array,
                  delta: float) -> jax.Array:
  """Best ε of the rules "positive iff x in [g_i, g_j]" for sorted int[Np] fi/ci of positives
  and int[Nq] of negatives on a grid of g points (docs/evaluation.md gives the argument).

  x ∈ [g_i, g_j] ⟺ fi(x) >= i and ci(x) <= j, so for i <= j the count inside is
  #{ci <= j} − #{fi < i}. Block (s, k) = negatives s..s+k−1: widest interval i_s = fi(q_{s−1}) + 1,
  j_e = ci(q_{s+k}) − 1, plus the two narrowings that drop the lowest / highest positive level.
  ε grows with the positives inside and falls with the negatives inside, so per k only the best
  valid positive count matters and the negatives count is taken as k (exact for every block that
  can be isolated; an underestimate, never an overestimate, for the others).
  """
  n_p, n_q = fp_.shape[0], fq.shape[0]
  s = jnp.arange(n_q)
  prev = fq[jnp.maximum(s - 1, 0)]
  i_s = jnp.where(s == 0, 0, prev + 1)
  a_lo = jnp.where(s == 0, 0, _count(fq, prev, "right"))  # negatives with fi < i_s
  b_lo = _count(fp_, i_s, "left")
  e = jnp.arange(1, n_q + 1)
  j_e = jnp.where(e == n_q, g - 1, cq[jnp.minimum(e, n_q - 1)] - 1)
  a_hi, b_hi = _count(cq, j_e, "right"), _count(cp, j_e, "right")  # ci <= j_e
  i_l = fp_[0] + 1  # narrowing that drops the lowest positive level
  a_l, b_l = _count(fq, i_l, "left"), _count(fp_, i_l, "left")
  j_r = cp[-1] - 1  # narrowing that drops the highest positive level
  a_r, b_r = _count(cq, j_r, "right"), _count(cp, j_r, "right")

  k = jnp.arange(1, n_q + 1)
  idx = s[:, None] + k[None, :] - 1  # [s, k] → index of e = s + k in the e-arrays
  inside = idx <= n_q - 1
  idx = jnp.minimum(idx, n_q - 1)
  jj, ah, bh = j_e[idx], a_hi[idx], b_hi[idx]
  ii, al, bl = i_s[:, None], a_lo[:, None], b_lo[:, None]

  def valid_b(i, j, a, b):  # positives inside a valid (not discarded) rule, else −1
    return jnp.where(inside & (i <= j) & (a >= 1) & (b <= n_p - 1), b, -1)

  best = jnp.maximum(jnp.maximum(
      valid_b(ii, jj, ah - al, bh - bl),
      valid_b(jnp.maximum(ii, i_l), jj, ah - jnp.maximum(al, a_l), bh - jnp.maximum(bl, b_l))),
      valid_b(ii, jnp.minimum(jj, j_r), jnp.minimum(ah, a_r) - al, jnp.minimum(bh, b_r) - bl))
  best = jnp.max(best, axis=0)  # [k]: best valid positive count with k negatives inside
  eps = jnp.where(best >= 0, _rule_eps(k / n_q, (n_p - best) / n_p, delta), -jnp.inf)
  # Perfect separation: the hull of the positives holds no negative.
  hull_neg = _count(cq, cp[-1], "right") - _count(fq, fp_[0], "left")
  return jnp.where(hull_neg == 0, jnp.inf, jnp.max(eps))


def _median(x: jax.Array) -> jax.Array:
  """Median of a sorted f32[n] (the mean of the two middle values when n is even)."""
  n = x.shape[0]
  return 0.5 * (x[(n - 1) // 2] + x[n // 2])


def _example_eps(r: jax.Array, u: jax.Array, settings: EpsilonSettings) -> jax.Array:
  """ε of one example from sorted f32[N_r] retrained and f32[N_u] unlearned confidences."""
  lo, hi = jnp.minimum(r[0], u[0]), jnp.maximum(r[-1], u[-1])
  pooled = jnp.sort(jnp.concatenate([r, u]))
  fr, cr, g = _grid_index(r, lo, hi, pooled, settings.grid_per_unit)
  fu, cu, _ = _grid_index(u, lo, hi, pooled, settings.grid_per_unit)
  d = settings.delta
  single_r, single_u = _single_eps(fr, fu, d), _single_eps(fu, fr, d)  # positive = r / u
  inter_r, inter_u = _interval_eps(fr, cr, fu, cu, g, d), _interval_eps(fu, cu, fr, cr, g, d)
  range_r, range_u = r[-1] - r[0], u[-1] - u[0]
  if settings.orientation == "both":
    eps = jnp.max(jnp.stack([single_r, single_u, inter_r, inter_u]))
  else:  # scorer: thresholds favour the larger median, intervals the peakier side; ties: both
    med_r, med_u = _median(r), _median(u)
    single = jnp.where(med_r > med_u, single_r,
                       jnp.where(med_u > med_r, single_u, jnp.maximum(single_r, single_u)))
    inter = jnp.where(range_r < range_u, inter_r,
                      jnp.where(range_u < range_r, inter_u, jnp.maximum(inter_r, inter_u)))
    eps = jnp.maximum(single, inter)
  eps = jnp.maximum(eps, 0.0)  # no surviving rule: no evidence of a difference
  largest, smallest = jnp.maximum(range_r, range_u), jnp.minimum(range_r, range_u)
  point_mass = (largest > 0) & (smallest < settings.point_mass_ratio * largest)
  eps = jnp.where(point_mass, jnp.inf, eps)
  eps = jnp.where(hi > lo, eps, 0.0)  # every value equal: indistinguishable
  return jnp.minimum(eps, settings.cap)


@functools.partial(jax.jit, static_argnames=("settings",))
def _epsilons(r: jax.Array, u: jax.Array, settings: EpsilonSettings) -> jax.Array:
  """f32[C, N_r], f32[C, N_u] (rows sorted) → f32[C] ε: one example at a time on CPU (faster
  there than vmap), all C at once on an accelerator."""
  batch = 1 if jax.default_backend() == "cpu" else r.shape[0]
  return jax.lax.map(lambda ru: _example_eps(ru[0], ru[1], settings), (r, u), batch_size=batch)


def epsilon_per_example(retrained: ArrayLike, unlearned: ArrayLike,
                        settings: EpsilonSettings = EpsilonSettings()) -> np.ndarray:
  """f32[N_r, S] retrained and f32[N_u, S] unlearned confidences → f32[S] ε_s in [0, cap]
  (METHODS §5b). Symmetric in its two arguments."""
  r, u = np.asarray(retrained, np.float32), np.asarray(unlearned, np.float32)
  if r.ndim != 2 or u.ndim != 2 or r.shape[1] != u.shape[1] or 0 in r.shape[:1] + u.shape[:1]:
    raise ValueError(f"epsilon_per_example: needs [N_r, S] and [N_u, S] with N >= 1, got "
                     f"{r.shape} and {u.shape}")
  if not (np.isfinite(r).all() and np.isfinite(u).all()):
    raise ValueError("epsilon_per_example: confidences must be finite")
  s, c = r.shape[1], settings.chunk
  if s == 0:
    return np.zeros(0, np.float32)
  # Batches of a fixed size compile once per (N_r, N_u, settings), whatever S; the last batch
  # is padded with copies of the last example.
  pad = np.r_[np.arange(s), np.full(-s % c, s - 1)]
  r, u = np.sort(r.T[pad], 1), np.sort(u.T[pad], 1)
  out = [_epsilons(jnp.asarray(r[i:i + c]), jnp.asarray(u[i:i + c]), settings)
         for i in range(0, pad.size, c)]
  return np.concatenate([np.asarray(o) for o in out])[:s]


def epsilon_points(eps: ArrayLike, settings: EpsilonSettings = EpsilonSettings()) -> np.ndarray:
  """f32[S] ε → f32[S] points: bin n (n = 1 for [0, w)) is worth 2 / 2^n; 0 from the end of
  the last whole bin (METHODS §5b)."""
  e = np.asarray(eps, np.float64)
  n = np.floor(np.maximum(e, 0.0) / settings.bin_width)  # bin number − 1
  n = np.where(np.isfinite(n), n, settings.num_bins)
  return np.where(n < settings.num_bins, 2.0 ** -np.minimum(n, 1023), 0.0).astype(np.float32)


def forgetting_quality(eps: ArrayLike, settings: EpsilonSettings = EpsilonSettings()) -> float:
  """Forgetting quality F = mean points over f32[S] ε of the forget set; nan if S = 0."""
  p = epsilon_points(eps, settings)
  return float(p.mean()) if p.size else float("nan")


def final_score(forget_quality: float, ra_u: ArrayLike, ra_r: ArrayLike, ta_u: ArrayLike,
                ta_r: ArrayLike) -> float:
  """F × (RA_U / RA_R) × (TA_U / TA_R); each accuracy a scalar or f32[N] per model (averaged),
  in any one unit (METHODS §5b)."""
  ra_u, ra_r, ta_u, ta_r = (float(np.mean(np.asarray(a, np.float64)))
                            for a in (ra_u, ra_r, ta_u, ta_r))
  if ra_r <= 0 or ta_r <= 0:
    raise ValueError(f"final_score: the retrained accuracies must be > 0, got RA_R = {ra_r} and "
                     f"TA_R = {ta_r}")
  return float(forget_quality * (ra_u / ra_r) * (ta_u / ta_r))
