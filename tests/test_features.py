"""NF against a brute-force reference, AF at eps = 0, standardisation, twin sizing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import engine, features
from tmu_jax.methods import tmu
from tmu_jax.models import get_model


def _brute(q, r, k):
  d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
  return np.sort(d, axis=1)[:, :min(k, r.shape[0])].mean(1)


@pytest.mark.parametrize("n,m,qc,rc", [
    (10, 37, 4, 8),  # both padded, several chunks each
    (8, 16, 8, 16),  # exact chunk edges
    (5, 3, 4, 4),  # fewer references than k
    (33, 100, 512, 4096),  # one chunk each (defaults)
])
def test_nearest_distance_matches_brute_force(n, m, qc, rc):
  rng = np.random.default_rng(n * m)
  q = rng.normal(size=(n, 6)).astype(np.float32)
  r = rng.normal(size=(m, 6)).astype(np.float32)
  got = features.nearest_distance(jnp.asarray(q), jnp.asarray(r), k=5, query_chunk=qc,
                                  ref_chunk=rc)
  np.testing.assert_allclose(got, _brute(q, r, 5), rtol=1e-4, atol=1e-4)


def test_af_zero_when_attack_disabled():
  model = get_model("mlp", 4, hidden=(8,))
  state = engine.create_train_state(jax.random.key(0), model, (4, 4, 1),
                                    engine.make_optimizer("sgd", 0.1))
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  y = jnp.arange(6) % 4
  af0 = features.af_feature(state, x, y, jax.random.key(2), eps=0.0, steps=10)
  logits, _ = engine.predict(state.apply_fn, state.variables, x)
  p = jax.nn.softmax(logits)
  entropy = -jnp.sum(p * jnp.log(p), -1)
  # eps = 0: x_adv = x, so −Σ p log p(x_adv) is the clean entropy (KL part exactly 0).
  np.testing.assert_allclose(af0, entropy, rtol=1e-5)
  af = features.af_feature(state, x, y, jax.random.key(2), eps=0.3, steps=10)
  assert np.all(np.asarray(af) >= np.asarray(entropy) - 1e-5)
  assert float(jnp.mean(af - entropy)) > 0


def test_standardizer_uses_twin_statistics():
  twin = np.array([[0.0, 10.0], [2.0, 30.0]])
  s = features.Standardizer.fit(twin)
  np.testing.assert_allclose(s(twin), [[-1, -1], [1, 1]])
  np.testing.assert_allclose(s(np.array([[1.0, 20.0]])), [[0, 0]])


def test_twin_size_rule():
  # |D_t| = round(|D_f|·(|D_r| + |D_f|)/|D_r|)  (TMU Eq. 3)
  assert tmu.twin_size(100, 47900) == 100
  assert tmu.twin_size(4000, 44000) == 4364  # 4000·48000/44000 = 4363.6
  assert tmu.twin_size(10, 10) == 20


def test_predict_easy_twin_rate_matches_count():
  p = np.array([0.9, 0.8, 0.95, 0.7, 0.99])
  pred = tmu.predict_easy(p, "twin_rate", 0.4)
  np.testing.assert_array_equal(pred, [True, False, True, False, True])
  np.testing.assert_array_equal(tmu.predict_easy(p, "half", 0.4), [True] * 5)
