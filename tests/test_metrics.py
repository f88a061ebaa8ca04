"""Metrics on hand-computed cases (METHODS §5)."""

import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import metrics

LN2 = np.log(2.0)


def test_correct_and_accuracy():
  # argmax rows: 0, 1, 0 vs labels 0, 1, 1 → [T, T, F] → 2/3 = 66.67%.
  logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
  np.testing.assert_array_equal(metrics.correct(logits, [0, 1, 1]), [True, True, False])
  assert metrics.accuracy(logits, [0, 1, 1]) == pytest.approx(200 / 3)
  assert metrics.accuracy(jnp.asarray(logits), jnp.array([0, 1, 1])) == pytest.approx(200 / 3)
  # int predictions [1, 1] vs [1, 0] → 50%.
  assert metrics.accuracy(np.array([1, 1]), [1, 0]) == 50.0
  assert isinstance(metrics.accuracy(logits, [0, 1, 1]), float)
  assert np.isnan(metrics.accuracy(np.zeros((0, 2)), np.zeros(0, int)))
  with pytest.raises(ValueError, match="same shape"):
    metrics.correct(logits, [0, 1])


def test_gap_agreement_label_accuracy():
  # Δ = |93 − 82| = 11 and |70 − 82| = 12: the sign does not matter.
  assert metrics.gap(93.0, 82.0) == 11.0 and metrics.gap(70.0, 82.0) == 12.0
  # [T,F,T,T] vs [T,T,T,F]: positions 0 and 2 match → 2/4 = 50%.
  assert metrics.agreement([True, False, True, True], [True, True, True, False]) == 50.0
  # Same counts (3 correct each) but shifted: [T,T,T,F] vs [F,T,T,T] → gap 0, agreement 50.
  assert metrics.agreement([1, 1, 1, 0], [0, 1, 1, 1]) == 50.0
  # predicted easy [T,F,F,T,T] vs gold correct [T,F,T,T,F] → 3 of 5 match = 60%.
  assert metrics.label_accuracy(np.array([1, 0, 0, 1, 1], bool),
                                np.array([1, 0, 1, 1, 0], bool)) == pytest.approx(60.0)
  assert np.isnan(metrics.agreement([], []))
  with pytest.raises(ValueError, match="same shape"):
    metrics.agreement([True, False], [True])


def test_activation_distance():
  # Three samples. softmax of ln-probabilities is those probabilities.
  #   row 0: p = q = (0.5, 0.5)           → L2 0,           L1 0
  #   row 1: p = (1, 0), q = (0, 1)       → L2 √2,          L1 2
  #   row 2: p = (0.75, 0.25), q = (0.25, 0.75): diff (0.5, −0.5) → L2 √0.5, L1 1
  # means: L2 = (0 + √2 + √0.5)/3 = 1.5·√2/3 = √2/2 ≈ 0.7071; L1 = (0 + 2 + 1)/3 = 1.
  u = np.log(np.array([[0.5, 0.5], [1.0, 1e-30], [0.75, 0.25]]))
  g = np.log(np.array([[0.5, 0.5], [1e-30, 1.0], [0.25, 0.75]]))
  assert metrics.activation_distance(u, g, ord=2) == pytest.approx(np.sqrt(2) / 2, rel=1e-5)
  assert metrics.activation_distance(u, g, ord=1) == pytest.approx(1.0, rel=1e-5)
  # Softmax is shift invariant: adding 7 to every logit of u changes nothing.
  assert metrics.activation_distance(u + 7.0, g, ord=1) == pytest.approx(1.0, rel=1e-5)
  with pytest.raises(ValueError, match="same shape"):
    metrics.activation_distance(u, g[:2])


def test_per_sample_ce():
  # −ln 0.75 ≈ 0.2877 for label 1 of (0.25, 0.75); −ln 0.5 = ln 2 for the uniform row.
  logits = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
  ce = metrics.per_sample_ce(logits, np.array([1, 0]))
  assert ce.shape == (2,) and ce.dtype == np.float32
  np.testing.assert_allclose(ce, [-np.log(0.75), LN2], rtol=1e-5)


def test_js_divergence():
  # Disjoint one-hots: m = (½, ½), KL(p‖m) = 1·ln(1/½) = ln 2 each → JS = ln 2.
  # Identical rows → JS = 0.
  # p = (1, 0), q = (½, ½): m = (¾, ¼); KL(p‖m) = ln(4/3); KL(q‖m) = ½ln(2/3) + ½ln 2
  #   → JS = ½ln(4/3) + ¼ln(2/3) + ¼ln 2 = ½ln(4/3) + ¼ln(4/3) = ¾ln(4/3) ≈ 0.2158.
  p = np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
  q = np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
  js = metrics.js_divergence(p, q)
  np.testing.assert_allclose(js, [LN2, 0.0, 0.75 * np.log(4 / 3)], atol=1e-6)
  np.testing.assert_allclose(metrics.js_divergence(q, p), js, atol=1e-7)  # symmetric


def test_zrf():
  # Identical to the random teacher → JS 0 → ZRF 1.
  logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  assert metrics.zrf(logits, logits) == pytest.approx(1.0)
  # Row 0 disjoint one-hots (JS ln 2), row 1 identical (JS 0) → ZRF = 1 − ln2/2 ≈ 0.6534.
  u = np.array([[100.0, 0.0], [0.0, 0.0]])
  r = np.array([[0.0, 100.0], [0.0, 0.0]])
  assert metrics.zrf(u, r) == pytest.approx(1 - LN2 / 2, abs=1e-5)
  assert 0.0 <= metrics.zrf(u, r) <= 1.0


def test_membership_inference_separable():
  # Members' loss ~0 and non-members' ~5: any fitted boundary lies between them.
  rng = np.random.default_rng(0)
  members = rng.uniform(0.0, 0.1, 200)
  nonmembers = rng.uniform(4.0, 6.0, 300)
  assert metrics.membership_inference(members, nonmembers, np.zeros(10)) == 100.0
  assert metrics.membership_inference(members, nonmembers, np.full(10, 5.0)) == 0.0
  # one of each → 50%.
  assert metrics.membership_inference(members, nonmembers, np.array([0.0, 5.0])) == 50.0
  # Exactly-zero member losses (a memorized model in float32) stay finite.
  assert metrics.membership_inference(np.zeros(50), nonmembers, np.zeros(3)) == 100.0


def test_membership_inference_overlapping_unbalanced():
  # Members ~ N(0, 1), non-members ~ N(2, 1): with balanced class weights the Bayes boundary is
  # the midpoint 1 (the fit lands at ≈0.92 on this draw), even with 10× more non-members; an
  # unweighted fit moves it by ln(10)/2 toward 0 (≈ −0.11 here) and would score 0%.
  rng = np.random.default_rng(1)
  members = rng.normal(0.0, 1.0, 400)
  nonmembers = rng.normal(2.0, 1.0, 4000)
  query = np.array([0.0, 0.3, 0.6, 1.4, 1.7, 2.0])  # three below 1, three above → 50%
  assert metrics.membership_inference(members, nonmembers, query) == 50.0
  assert metrics.membership_inference(jnp.asarray(members), jnp.asarray(nonmembers),
                                      jnp.asarray(query), steps=20) == 50.0
  assert np.isnan(metrics.membership_inference(members, nonmembers, np.zeros(0)))
  with pytest.raises(ValueError, match="non-members"):
    metrics.membership_inference(members, np.zeros(0), query)


def test_roc_auc_midranks_ties_and_degenerate_cases():
  """AUC by hand: 3 positives, 2 negatives; a cross-class tie counts ½; one class → nan."""
  scores = np.array([0.9, 0.4, 0.4, 0.1, 0.7])
  positive = np.array([True, True, False, False, True])
  # pairs (pos > neg): 0.9 beats both, 0.7 beats both, 0.4 ties 0.4 (½) and beats 0.1 → 5.5 / 6
  assert metrics.roc_auc(scores, positive) == pytest.approx(5.5 / 6)
  assert metrics.roc_auc(-scores, positive) == pytest.approx(0.5 / 6)
  assert metrics.roc_auc(np.zeros(5), positive) == 0.5  # all tied
  assert np.isnan(metrics.roc_auc(scores, np.ones(5, bool)))
  with pytest.raises(ValueError, match="same shape"):
    metrics.roc_auc(scores, positive[:4])
  # Equal to the pairwise definition on random data with many ties.
  rng = np.random.default_rng(0)
  s, p = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3
  pairwise = ((s[p][:, None] > s[~p][None]).mean() + 0.5 * (s[p][:, None] == s[~p][None]).mean())
  assert metrics.roc_auc(s, p) == pytest.approx(pairwise, abs=1e-12)
