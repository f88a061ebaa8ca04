"""Metrics on hand-computed cases (METHODS §5)."""

import numpy as np
import pytest

from tmu_jax import metrics


def test_accuracy_and_correct():
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
  assert metrics.accuracy(logits, [0, 1, 1]) == pytest.approx(200 / 3)
  assert metrics.accuracy(np.array([1, 1]), [1, 0]) == 50.0
  assert np.isnan(metrics.accuracy(np.zeros((0, 2)), np.zeros(0, int)))


def test_gap_and_agreement():
  assert metrics.gap(93.0, 82.0) == 11.0 and metrics.gap(70.0, 82.0) == 12.0
  # [T,F,T,T] vs [T,T,T,F]: positions 0 and 2 match → 50%.
  assert metrics.agreement([True, False, True, True], [True, True, True, False]) == 50.0
  assert metrics.label_accuracy([True, False], [True, False]) == 100.0


def test_activation_distance():
  # Equal logits in each row → uniform softmax; one-hot-ish rows via large logits.
  u = np.array([[0.0, 0.0], [100.0, 0.0]])
  g = np.array([[0.0, 0.0], [0.0, 100.0]])
  # row 0: distance 0; row 1: p=(1,0), q=(0,1): L2 = √2, L1 = 2 → means √2/2 and 1.
  assert metrics.activation_distance(u, g, 2) == pytest.approx(np.sqrt(2) / 2, rel=1e-5)
  assert metrics.activation_distance(u, g, 1) == pytest.approx(1.0, rel=1e-5)


def test_per_sample_ce():
  logits = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
  np.testing.assert_allclose(metrics.per_sample_ce(logits, np.array([1, 0])),
                             [-np.log(0.75), np.log(2)], rtol=1e-5)


def test_js_and_zrf():
  p = np.array([[1.0, 0.0], [0.5, 0.5]])
  q = np.array([[0.0, 1.0], [0.5, 0.5]])
  np.testing.assert_allclose(metrics.js_divergence(p, q), [np.log(2), 0.0], atol=1e-6)
  logits = np.array([[1.0, 2.0, 3.0]])
  assert metrics.zrf(logits, logits) == pytest.approx(1.0)  # identical to the random teacher
  far = metrics.zrf(np.array([[100.0, 0.0]]), np.array([[0.0, 100.0]]))
  assert far == pytest.approx(1 - np.log(2), abs=1e-5)


def test_membership_inference():
  rng = np.random.default_rng(0)
  members = rng.uniform(0.0, 0.1, 200)  # low loss: trained on
  nonmembers = rng.uniform(4.0, 6.0, 300)
  assert metrics.membership_inference(members, nonmembers, np.zeros(10)) == 100.0
  assert metrics.membership_inference(members, nonmembers, np.full(10, 5.0)) == 0.0
  half = metrics.membership_inference(members, nonmembers, np.array([0.0, 5.0]))
  assert half == 50.0
