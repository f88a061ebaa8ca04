"""Noise floor, method-vs-gold, Avg. Gap and RTE on hand-computed cases (METHODS §5b)."""

import math

import numpy as np
import pytest

from tmu_jax import metrics
from tmu_jax.evaluation import floor as F
from tmu_jax.evaluation import summary

LABELS = np.array([0, 1, 0, 1])
# Three gold models on 4 samples, K = 2, given as probabilities (logits = log p, so the softmax
# gives them back). Predictions: g0 [0,1,0,1] (acc 100), g1 [0,1,1,1] (75), g2 [1,1,0,0] (50).
PROBS = np.array([
    [[.8, .2], [.2, .8], [.8, .2], [.2, .8]],
    [[.8, .2], [.2, .8], [.4, .6], [.2, .8]],
    [[.4, .6], [.2, .8], [.8, .2], [.6, .4]],
])
GOLD = np.log(PROBS)
R = 0.4 * math.sqrt(2)  # ‖(.4, −.4)‖₂: the L2 distance of one differing sample (L1: 0.8)


def test_noise_floor_by_hand():
  # Pairs (0,1), (0,2), (1,2): gap 25, 50, 25; agreement 75, 50, 25 (g1 vs g2 agree on sample 1
  # only); differing samples 1, 2, 3 → L2 R/4, 2R/4, 3R/4 and L1 .8/4, 1.6/4, 2.4/4.
  floor = F.noise_floor(GOLD, LABELS)
  want = {"gap": [25, 50, 25], "agreement": [75, 50, 25], "act_l2": [R / 4, R / 2, 3 * R / 4],
          "act_l1": [.2, .4, .6]}
  for name, values in want.items():
    assert floor[name].n == 3
    np.testing.assert_allclose(floor[name].values, values, rtol=1e-5)
    assert floor[name].mean == pytest.approx(np.mean(values), rel=1e-5)
    assert floor[name].std == pytest.approx(np.std(values, ddof=1), rel=1e-5)
  assert floor["gap"].mean == pytest.approx(100 / 3) and floor["agreement"].std == (
      pytest.approx(25.0))


def test_pairs_agree_with_tmu_jax_metrics():
  rng = np.random.default_rng(0)
  gold = rng.normal(size=(4, 30, 5)) * 2
  labels = rng.integers(0, 5, 30)
  cross = F.cross_metrics(gold, gold, labels)
  for i in range(4):
    for j in range(4):
      ci, cj = metrics.correct(gold[i], labels), metrics.correct(gold[j], labels)
      assert cross["gap"][i, j] == pytest.approx(metrics.gap(metrics.accuracy(gold[i], labels),
                                                             metrics.accuracy(gold[j], labels)))
      assert cross["agreement"][i, j] == pytest.approx(metrics.agreement(ci, cj))
      for name, order in (("act_l2", 2), ("act_l1", 1)):
        assert cross[name][i, j] == pytest.approx(
            metrics.activation_distance(gold[i], gold[j], ord=order), abs=1e-6)


def test_halves_mode():
  # G = 3: first half {g0} against {g1, g2}: gap 25 and 50.
  floor = F.noise_floor(GOLD, LABELS, mode="halves")
  np.testing.assert_allclose(floor["gap"].values, [25, 50])
  np.testing.assert_allclose(floor["act_l1"].values, [.2, .4], rtol=1e-5)
  with pytest.raises(ValueError, match="mode"):
    F.noise_floor(GOLD, LABELS, mode="loo")
  with pytest.raises(ValueError, match="at least 2"):
    F.noise_floor(GOLD[:1], LABELS)


def test_method_vs_gold_and_floors_away():
  # Method = g0: against g0, g1, g2 gap 0, 25, 50; agreement 100, 75, 50; L1 0, .2, .4.
  got = F.method_vs_gold(GOLD[0], GOLD, LABELS)
  np.testing.assert_allclose(got["gap"].values, [0, 25, 50])
  np.testing.assert_allclose(got["agreement"].values, [100, 75, 50])
  np.testing.assert_allclose(got["act_l1"].values, [0, .2, .4], atol=1e-6)
  assert got["gap"].mean == pytest.approx(25.0) and got["gap"].std == pytest.approx(25.0)
  floor = F.noise_floor(GOLD, LABELS)
  # gap: (25 − 100/3) / 14.434 = −0.577 (closer to gold than two golds are); agreement: higher
  # is better, (50 − 75) / 25 = −1; L1: (0.2 − 0.4) / 0.2 = −1.
  away = F.compare_to_floor(got, floor)
  assert away["gap"] == pytest.approx(-1 / math.sqrt(3), rel=1e-5)
  assert away["agreement"] == pytest.approx(-1.0, rel=1e-5)
  assert away["act_l1"] == pytest.approx(-1.0, rel=1e-4)
  # Two method runs [g0, g1] against 3 gold members: 6 pairs.
  two = F.method_vs_gold(GOLD[:2], GOLD, LABELS)
  np.testing.assert_allclose(two["gap"].values, [0, 25, 50, 25, 0, 25])


def test_floors_away_cases():
  assert F.floors_away(40.0, 30.0, 5.0, higher_is_better=False) == 2.0  # 2 floors worse
  assert F.floors_away(40.0, 30.0, 5.0, higher_is_better=True) == -2.0  # better than gold-gold
  assert F.floors_away(30.0, 30.0, 0.0, False) == 0.0
  assert F.floors_away(31.0, 30.0, 0.0, False) == math.inf
  assert math.isnan(F.floors_away(31.0, 30.0, float("nan"), False))


def test_avg_gap_by_hand():
  method = {"acc_forget": 90.0, "acc_retain": 99.0, "acc_test": 93.0, "mia": 80.0}
  gold = [{"acc_forget": 70.0, "acc_retain": 100.0, "acc_test": 94.0, "mia": 40.0},
          {"acc_forget": 74.0, "acc_retain": 98.0, "acc_test": 92.0, "mia": 44.0}]
  # Gold ensemble mean: 72, 99, 93, 42. |ΔUA| = |10 − 28| = 18, |ΔRA| = 0, |ΔTA| = 0,
  # |ΔMIA| = 38 → Avg. Gap = 56 / 4 = 14.
  assert summary.gaps(method, gold) == {"ua": 18.0, "ra": 0.0, "ta": 0.0, "mia": 38.0}
  assert summary.avg_gap(method, gold) == 14.0
  as_lists = {k: [g[k] for g in gold] for k in gold[0]}  # a dict of per-run lists
  assert summary.avg_gap(method, as_lists) == 14.0
  assert summary.avg_gap(method, gold[0]) == pytest.approx((20 + 1 + 1 + 40) / 4)
  with pytest.raises(KeyError, match="mia"):
    summary.avg_gap({"acc_forget": 1, "acc_retain": 1, "acc_test": 1}, gold)


def test_rte_and_too_slow():
  assert summary.rte(30.0, 600.0) == 0.05 and not summary.too_slow(0.05)
  assert summary.rte(150.0, 600.0) == 0.25 and summary.too_slow(0.25)
  assert not summary.too_slow(0.2)  # "slower than 20%" rejects strictly above
  assert summary.too_slow(0.25, limit=0.5) is False
  with pytest.raises(ValueError, match="> 0"):
    summary.rte(1.0, 0.0)


def test_sign_test_exact_values():
  """Two-sided exact sign test: 5 of 5 positive gives 2/32; 3 of 4 gives 2·5/16; ties are
  dropped; no nonzero difference gives 1; the sign of every difference flipped changes nothing."""
  from tmu_jax.evaluation.paired import sign_test
  assert sign_test(np.ones(5)) == 2 / 32
  assert sign_test(np.array([1.0, 2.0, 0.5, -1.0])) == 0.625
  assert sign_test(np.array([1.0, 2.0, 0.5, -1.0, 0.0, 0.0])) == 0.625
  assert sign_test(np.zeros(3)) == 1.0
  assert sign_test(-np.array([1.0, 2.0, 0.5, -1.0])) == 0.625
