"""A run's rows read the way the field reads them (METHODS §5b), from scored ensembles.

Every row (the gold ensemble, M_o, each method) is a set of scored models: one model, or the
members of an ensemble. :func:`summarize` turns one into the row's entries:

- the §5 numbers as the mean over its members, with ``spread`` (std over members);
- with a gold ensemble (G ≥ 2): ``vs_gold`` (each member against every reference gold member;
  ``gap``, ``agreement``, ``act_dist_*`` become those means) and ``floors_away`` against the
  gold-vs-gold ``floor`` of the run;
- ``avg_gap`` (SalUn) against the reference gold members' mean, ``rte`` and ``too_slow``;
- with ``experiment.epsilon = N``: the per-example ``epsilon`` score of its N members against the
  N reference gold members (members 0 … N−1); the gold row's is the held-out half (members
  N … 2N−1) scored as if it were a method, M_o's is M_o itself N times.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tmu_jax.evaluation import epsilon as eps_lib, floor as floor_lib, summary
from tmu_jax.evaluation.settings import Evaluation

ACCURACIES = ("acc_test", "acc_retain", "acc_forget", "mia", "zrf")
ALIGNMENT = {"gap": "gap", "agreement": "agreement", "act_l2": "act_dist_l2",
             "act_l1": "act_dist_l1"}


@dataclasses.dataclass
class Scored:
  """Scored models of one row: per-member score dicts and logits on D_f f32[M, S, K]."""
  scores: list[dict[str, Any]]
  logits_forget: np.ndarray

  def values(self, key: str) -> np.ndarray:
    return np.asarray([s[key] for s in self.scores], np.float64)

  def repeat(self, n: int) -> "Scored":
    """The same model counted n times (M_o as an 'unlearning method' that does nothing)."""
    return Scored(self.scores * n, np.repeat(self.logits_forget[:1], n, axis=0))


@dataclasses.dataclass
class GoldSide:
  """The run's gold ensemble scored, its floor, and which members are the reference."""
  scored: Scored
  labels: np.ndarray  # int[S] D_f labels
  reference: slice  # the members methods are scored against
  heldout: slice | None  # the ε "retrain" half
  floor: dict[str, floor_lib.Spread] | None
  epsilon_n: int
  settings: eps_lib.EpsilonSettings | None
  gold_train_s: float

  def ref_scores(self) -> list[dict[str, Any]]:
    return self.scored.scores[self.reference]

  def ref_logits(self) -> np.ndarray:
    return self.scored.logits_forget[self.reference]


def gold_side(scored: Scored, labels: np.ndarray, epsilon_n: int, evaluation: Evaluation,
              gold_train_s: float) -> GoldSide:
  """Splits G gold members into the reference and (with ε) the held-out half; the floor."""
  g = len(scored.scores)
  n = epsilon_n
  reference = slice(0, n) if n else slice(0, g)
  heldout = slice(n, 2 * n) if n else None
  floor = floor_lib.noise_floor(scored.logits_forget, labels) if g >= 2 else None
  settings = evaluation.epsilon_settings(n) if n else None
  return GoldSide(scored, labels, reference, heldout, floor, n, settings, gold_train_s)


def _json(x: float) -> float | None:
  return float(x) if math.isfinite(x) else None


def _spread_dict(sp: floor_lib.Spread) -> dict[str, Any]:
  return dict(mean=_json(sp.mean), std=_json(sp.std), n=sp.n)


def confidences(scored: Scored, labels: np.ndarray) -> np.ndarray:
  """f32[M, S] logit-scaled true-label confidences of a row's members (METHODS §5b)."""
  return np.asarray(eps_lib.logit_confidence(scored.logits_forget, labels[None]))


def epsilon_entry(unlearned: Scored, gold: GoldSide) -> dict[str, Any]:
  """The ε score of ``unlearned`` (N members) against the N reference gold members."""
  s = gold.settings
  ref = Scored(gold.ref_scores(), gold.ref_logits())
  e = eps_lib.epsilon_per_example(confidences(ref, gold.labels),
                                  confidences(unlearned, gold.labels), s)
  f = eps_lib.forgetting_quality(e, s)
  ra_u, ta_u = unlearned.values("acc_retain"), unlearned.values("acc_test")
  ra_r, ta_r = ref.values("acc_retain"), ref.values("acc_test")
  return dict(forget_quality=f, final_score=eps_lib.final_score(f, ra_u, ra_r, ta_u, ta_r),
              ra_ratio=float(ra_u.mean() / ra_r.mean()),
              ta_ratio=float(ta_u.mean() / ta_r.mean()), n=len(unlearned.scores),
              eps=[round(float(v), 4) for v in e], mean_eps=float(np.mean(e)))


def summarize(row: dict[str, Any], scored: Scored, gold: GoldSide, *,
              epsilon_from: Scored | None = None, time_s: float | None = None,
              rte_limit: float = 0.2, compare: bool = True) -> dict[str, Any]:
  """``row`` (the single model's entries) with the ensemble entries of the module docstring.

  ``compare = False`` (the reference gold members themselves): only the means and spreads,
  and the alignment metrics set to the floor's means; nothing is compared with gold."""
  out = dict(row, members=len(scored.scores))
  spread = {}
  for k in ACCURACIES:
    if all(k in s for s in scored.scores):
      v = scored.values(k)
      out[k] = float(v.mean())
      spread[k] = _json(float(v.std(ddof=1))) if v.size > 1 else None
  if spread:
    out["spread"] = spread
  if not compare:
    if gold.floor is not None:
      out.update({name: gold.floor[k].mean for k, name in ALIGNMENT.items()})
    return out
  if len(gold.scored.scores) >= 2:
    vs = floor_lib.method_vs_gold(scored.logits_forget, gold.ref_logits(), gold.labels)
    out["vs_gold"] = {k: _spread_dict(v) for k, v in vs.items()}
    for k, name in ALIGNMENT.items():
      out[name] = vs[k].mean
    out["floors_away"] = {k: _json(v) for k, v in
                          floor_lib.compare_to_floor(vs, gold.floor).items()}
  gold_scores = gold.ref_scores()
  if all(all(k in s for k in summary.KEYS) for s in scored.scores + gold_scores):
    parts = summary.gaps(scored.scores, gold_scores)
    out["avg_gap"] = float(np.mean(list(parts.values())))
    out["avg_gap_parts"] = parts
  if time_s is not None and gold.gold_train_s > 0:
    out["rte"] = summary.rte(time_s, gold.gold_train_s)
    out["too_slow"] = summary.too_slow(out["rte"], rte_limit)
  if epsilon_from is not None and gold.settings is not None:
    out["epsilon"] = epsilon_entry(epsilon_from, gold)
  return out


def floor_entry(gold: GoldSide) -> dict[str, Any] | None:
  """The run's ``floor``: {metric: {mean, std, n}} over gold pairs (None with one gold)."""
  if gold.floor is None:
    return None
  return {k: _spread_dict(v) for k, v in gold.floor.items()}


def settings_entry(gold: GoldSide) -> dict[str, Any] | None:
  s = gold.settings
  if s is None:
    return None
  return dict(n=gold.epsilon_n, grid_per_unit=s.grid_per_unit, delta=s.delta,
              bin_width=s.bin_width, max_epsilon=s.max_epsilon, cap=s.cap,
              point_mass_ratio=s.point_mass_ratio)

