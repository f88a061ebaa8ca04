"""Per-example ε, forgetting quality and final score on hand-computed cases (METHODS §5b)."""

import math

import numpy as np
import pytest

from tmu_jax.evaluation import epsilon as E

D = 1e-5  # the scorer's δ


def _log_odds(logits, labels):
  """float64 reference: log(p_y / (1 − p_y)) from the softmax."""
  z = np.asarray(logits, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  py = np.take_along_axis(p, np.asarray(labels)[..., None], -1)[..., 0]
  return np.log(py / (1 - py))


def test_logit_confidence_equals_log_odds():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 4)) * 2  # [N models, S, K]; labels [S] broadcast
  labels = np.array([0, 1, 2, 3, 1])
  got = E.logit_confidence(logits, labels)
  assert got.shape == (3, 5) and got.dtype == np.float32
  np.testing.assert_allclose(got, _log_odds(logits, np.broadcast_to(labels, (3, 5))),
                             rtol=1e-5, atol=1e-5)


def test_logit_confidence_is_finite_on_extreme_logits():
  logits = np.array([[50.0, -50.0, 0.0], [50.0, -50.0, 0.0], [50.0, 50.0, -50.0]])
  got = E.logit_confidence(logits, [0, 1, 0])
  # 50 − log(e^-50 + e^0) = 50 − 2e-22; −50 − log(e^50 + 1) = −100 − 2e-22; 50 − 50 = 0 (e^-100
  # is below float32's resolution of 1).
  np.testing.assert_allclose(got, [50.0, -100.0, 0.0], atol=1e-5)
  assert np.isfinite(got).all()
  with pytest.raises(ValueError, match="K >= 2"):
    E.logit_confidence(np.zeros((2, 1)), [0, 0])


def test_rule_epsilon_cases():
  got = E.rule_epsilon([0.0, 0.0, 0.5, 0.25, 0.25, 1.0], [0.0, 0.5, 0.0, 0.25, 0.5, 1.0])
  want = [math.inf, -math.inf, -math.inf,  # both zero; exactly one zero: discarded
          math.log((0.75 - D) / 0.25),  # both terms equal
          math.log((0.5 - D) / 0.25),  # max(log(.74999/.5), log(.49999/.25))
          0.0]  # both logs of −δ: no evidence, 0
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_identical_distributions_score_zero_and_full_points():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, 10)) * 3
  eps = E.epsilon_per_example(x, x)
  np.testing.assert_array_equal(eps, np.zeros(10))
  assert E.forgetting_quality(eps) == 1.0


def test_disjoint_distributions_hit_the_cap_and_zero_points():
  rng = np.random.default_rng(2)
  r = rng.normal(size=(8, 6))
  u = rng.normal(size=(8, 6)) + 10
  eps = E.epsilon_per_example(r, u)
  np.testing.assert_array_equal(eps, np.full(6, 50.0))  # the scorer's cap
  assert E.forgetting_quality(eps) == 0.0
  np.testing.assert_array_equal(E.epsilon_per_example(r, u, E.EpsilonSettings(cap=math.inf)),
                                np.full(6, np.inf))


def test_hand_case_interval_family_and_discarded_rules():
  # Retrained r = 0, 1, 2.4, 5; unlearned u = 2, 2.2, 2.6, 3 (N = 4 per side).
  # Medians 1.7 < 2.4: u is positive for thresholds ("x >= t"): t = 2.2 → FPR 2/4, FNR 1/4;
  # t = 2.6 → FPR 1/4, FNR 2/4; both give log((0.5 − δ)/0.25) = 0.693; t <= 2 holds all of u
  # (FNR 0, FPR >= 1/2) and is discarded, not ∞.
  # Ranges 1 < 5: u is positive for intervals: [2, 2.6] holds 3 u and 2.4 → FPR 1/4, FNR 1/4 →
  # log((0.75 − δ)/0.25) = 1.0986. [2, 3] holds all u and 2.4: FPR 1/4, FNR 0 → discarded;
  # counted, it would be ∞ and the example would get the cap.
  r, u = np.array([[0.0], [1.0], [2.4], [5.0]]), np.array([[2.0], [2.2], [2.6], [3.0]])
  assert E.epsilon_per_example(r, u)[0] == pytest.approx(math.log((0.75 - D) / 0.25), rel=1e-6)
  assert E.rule_epsilon([0.25], [0.0])[0] == -math.inf
  # Grid of 1 per unit: 0, 1.25, 2.5, 3.75, 5. 2, 2.2 and 2.4 share a cell, so the best rules
  # are x >= 2.5 (FPR 1/4, FNR 2/4) and [1.25, 2.5] (FPR 1/4, FNR 2/4): log((0.5 − δ)/0.25).
  assert E.epsilon_per_example(r, u, E.EpsilonSettings(grid_per_unit=1.0))[0] == (
      pytest.approx(math.log((0.5 - D) / 0.25), rel=1e-6))


def test_hand_case_thresholds():
  # r = 0, 1, 2, 3; u = 1.5, 2.5, 3.5, 4.5. u positive (median 3 > 1.5). x >= 2.5: TP 3, FP 1
  # → FPR 1/4, FNR 1/4 → log((0.75 − δ)/0.25). x >= 1 holds all of u and 3/4 of r (discarded).
  r, u = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[1.5], [2.5], [3.5], [4.5]])
  assert E.epsilon_per_example(r, u)[0] == pytest.approx(math.log((0.75 - D) / 0.25), rel=1e-6)


def _brute(r, u, grid, orientation):
  """Independent reference: every threshold and every interval on the grid, by comparisons."""

  def family(p, q):
    single = max(E.rule_epsilon([np.mean(q >= t)], [np.mean(p < t)], D)[0] for t in grid)
    inter = max(E.rule_epsilon([np.mean((q >= lo) & (q <= hi))],
                               [1 - np.mean((p >= lo) & (p <= hi))], D)[0]
                for i, lo in enumerate(grid) for hi in grid[i:])
    return single, inter

  sr, ir = family(r, u)
  su, iu = family(u, r)
  if orientation == "both":
    return max(sr, su, ir, iu, 0.0)
  mr, mu, dr, du = np.median(r), np.median(u), np.ptp(r), np.ptp(u)
  single = sr if mr > mu else su if mu > mr else max(sr, su)
  inter = ir if dr < du else iu if du < dr else max(ir, iu)
  return max(single, inter, 0.0)


@pytest.mark.parametrize("grid,orientation", [(None, "scorer"), (3.0, "scorer"), (3.0, "both")])
def test_matches_brute_force_over_the_grid(grid, orientation):
  rng = np.random.default_rng(3)
  s = 12
  if grid is None:  # ties and shared values (a 0.5 lattice) for the exact grid
    r = rng.integers(0, 6, (5, s)) * 0.5
    u = (rng.integers(0, 6, (6, s)) + rng.integers(0, 3, s)) * 0.5
  else:  # continuous values for the uniform grid
    r = rng.normal(size=(5, s)).astype(np.float32)
    u = (rng.normal(size=(6, s)) * rng.uniform(0.3, 2, s) + rng.uniform(-2, 2, s)).astype(
        np.float32)
  got = E.epsilon_per_example(r, u, E.EpsilonSettings(grid_per_unit=grid,
                                                      orientation=orientation,
                                                      point_mass_ratio=0.0))
  want = []
  for i in range(s):
    x, y = np.float32(r[:, i]), np.float32(u[:, i])
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    if grid is None:
      g = np.unique(np.concatenate([x, y]))
    else:  # the module's grid: max(⌈range · density⌉, 2) points over [lo, hi]
      n = max(int(np.ceil(np.float32(hi - lo) * grid)), 2)
      h = np.float32(hi - lo) / np.float32(n - 1)
      g = np.array([lo + np.float32(k) * h for k in range(n - 1)] + [hi], np.float32)
    want.append(min(_brute(x, y, g, orientation), 50.0) if hi > lo else 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("orientation", ["scorer", "both"])
def test_swapping_the_two_sides_changes_nothing(orientation):
  rng = np.random.default_rng(4)
  r = rng.normal(size=(8, 40)) * rng.uniform(0.2, 3, 40)
  u = rng.normal(size=(8, 40)) * rng.uniform(0.2, 3, 40) + rng.normal(size=40)
  r[:, :5] = np.round(r[:, :5])  # ties, equal medians and equal ranges
  u[:, :5] = np.round(u[:, :5])
  u[:, 3] = r[::-1, 3]  # the same values in another order: equal median and range
  u[:, 4] = np.r_[r[:4, 4], r[:4, 4]]  # half of the values, twice: often the same range
  settings = E.EpsilonSettings(orientation=orientation)
  np.testing.assert_array_equal(E.epsilon_per_example(r, u, settings),
                                E.epsilon_per_example(u, r, settings))


def test_swapping_unequal_model_counts():
  rng = np.random.default_rng(5)
  r = np.round(rng.normal(size=(5, 30)) * 2) / 2  # N_r = 5, N_u = 6, ties on a 0.5 lattice
  u = np.round(rng.normal(size=(6, 30)) * 2) / 2
  settings = E.EpsilonSettings(grid_per_unit=None, point_mass_ratio=0.0)  # as the brute test
  np.testing.assert_array_equal(E.epsilon_per_example(r, u, settings),
                                E.epsilon_per_example(u, r, settings))


def test_point_mass_guard():
  r = np.linspace(-2.0, 2.0, 8)[:, None].repeat(4, 1)  # range 4
  u = np.zeros((8, 4))
  u[:, 0] = 1.0 + np.linspace(0, 0.039, 8)  # range 0.039 < 1% of 4: cap
  u[:, 1] = 1.0  # a point mass (range 0): cap
  u[:, 2] = 0.27 + np.linspace(0, 0.041, 8)  # 0.041 >= 1%: scored by the rules
  u[:, 3] = r[:, 3]  # identical
  eps = E.epsilon_per_example(r, u)
  np.testing.assert_array_equal(eps[[0, 1, 3]], [50.0, 50.0, 0.0])
  # r's 0.2857 lies inside u[:, 2]'s span (between its 3rd and 4th values): an interval with 7 of
  # u holds it (FPR 1/8, FNR 1/8), one holding all of u is discarded.
  assert eps[2] == pytest.approx(math.log((7 / 8 - D) / (1 / 8)), rel=1e-6)
  # Two point masses (the scorer's 0/0): equal → 0, apart → perfectly separated → cap.
  same, apart = np.full((8, 1), 3.0), np.full((8, 1), 4.0)
  assert E.epsilon_per_example(same, same)[0] == 0.0
  assert E.epsilon_per_example(same, apart)[0] == 50.0
  # Without the guard the rules score u[:, 1] (1.0 lies between r's values, 4/8 above 1.0):
  # x >= 1 holds all of u and 2/8 of r → discarded; the interval [1, 1] holds all of u and no r
  # → perfect separation → cap anyway.
  assert E.epsilon_per_example(r[:, 1:2], u[:, 1:2],
                               E.EpsilonSettings(point_mass_ratio=0.0))[0] == 50.0


def test_points_bins_and_forgetting_quality():
  eps = [0.0, 0.49, 0.5, 1.2, 6.4, 6.5, 50.0, math.inf]
  # Bins of 0.5: [0, .5) → 2/2 = 1, [.5, 1) → 1/2, [1, 1.5) → 1/4, [6, 6.5) (bin 13) → 2/2^13;
  # 6.5 and beyond (the PDF's end for N = 512) → 0.
  want = [1.0, 1.0, 0.5, 0.25, 2.0 / 2**13, 0.0, 0.0, 0.0]
  np.testing.assert_allclose(E.epsilon_points(eps), want)
  assert E.forgetting_quality(eps) == pytest.approx(sum(want) / 8)
  assert E.EpsilonSettings().num_bins == 13
  # Scorer's end for N = 512 (⌈ln 511⌉ = 7): [6.5, 7) is bin 14, worth 2/2^14.
  assert E.epsilon_points([6.7], E.settings_for(512, "scorer"))[0] == pytest.approx(2.0 / 2**14)
  assert math.isnan(E.forgetting_quality([]))


def test_max_epsilon_for():
  assert E.max_epsilon_for(512) == 6.5 and E.max_epsilon_for(512, rule="scorer") == 7.0
  assert E.max_epsilon_for(64) == 4.5 and E.max_epsilon_for(64, rule="scorer") == 5.0  # ln 63
  assert E.settings_for(64, delta=1e-4) == E.EpsilonSettings(max_epsilon=4.5, delta=1e-4)


def test_final_score():
  # 0.5 × (90 / 100) × (mean(80, 82) / 90) = 0.5 × 0.9 × 0.9 = 0.405.
  assert E.final_score(0.5, 90.0, 100.0, [80.0, 82.0], [90.0, 90.0]) == pytest.approx(0.405)
  with pytest.raises(ValueError, match="> 0"):
    E.final_score(0.5, 90.0, 0.0, 80.0, 90.0)


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"\[N_r, S\]"):
    E.epsilon_per_example(np.zeros((4, 3)), np.zeros((4, 2)))
  with pytest.raises(ValueError, match="finite"):
    E.epsilon_per_example(np.full((4, 2), np.nan), np.zeros((4, 2)))
  with pytest.raises(ValueError, match="orientation"):
    E.EpsilonSettings(orientation="median")
  assert E.epsilon_per_example(np.zeros((4, 0)), np.zeros((3, 0))).shape == (0,)


def test_512_models_per_side():
  # The challenge's size: every example separable (cap) or identical (0).
  rng = np.random.default_rng(5)
  r = rng.normal(size=(512, 4))
  u = np.concatenate([r[:, :2], r[:, 2:] + 20], 1)
  np.testing.assert_array_equal(E.epsilon_per_example(r, u), [0.0, 0.0, 50.0, 50.0])
