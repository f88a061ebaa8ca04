"""PGD stays in its ball and in [0, 1], raises the loss / hits its target; target draws."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tmu_jax import attacks


def _linear(seed=0, d=16, k=4):
  w = jax.random.normal(jax.random.key(seed), (d, k))
  return lambda x: x.reshape(x.shape[0], -1) @ w


def _x(n=32, seed=1):
  return jax.random.uniform(jax.random.key(seed), (n, 4, 4, 1))


def test_linf_in_ball_and_raises_loss():
  f, x = _linear(), _x()
  y = jnp.argmax(f(x), -1)
  adv = attacks.pgd_linf(f, x, y, jax.random.key(2), eps=0.05, step_size=0.0125, steps=10)
  assert float(jnp.max(jnp.abs(adv - x))) <= 0.05 + 1e-6
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(f(z), y).mean()
  assert float(ce(adv)) > float(ce(x))


def test_disabled_attack_returns_input():
  f, x = _linear(), _x()
  y = jnp.zeros(x.shape[0], jnp.int32)
  assert attacks.pgd_linf(f, x, y, jax.random.key(0), eps=0.0, step_size=0.1, steps=5) is x
  af = attacks.adversarial_feature(f, x, y, jax.random.key(0), eps=0.0, steps=5,
                                   subtract_entropy=True)
  np.testing.assert_allclose(af, 0.0, atol=1e-6)
  af = attacks.adversarial_feature(f, x, y, jax.random.key(0), eps=0.1, steps=5,
                                   subtract_entropy=True)
  assert float(af.mean()) > 0


def test_l2_in_ball_and_hits_target():
  f, x = _linear(), _x()
  targets = attacks.random_targets(jax.random.key(3), jnp.argmax(f(x), -1), 4)
  adv = attacks.pgd_l2(f, x, targets, jax.random.key(4), eps=3.0, step_size=0.1, steps=100)
  norms = jnp.sqrt(jnp.sum((adv - x).reshape(x.shape[0], -1) ** 2, -1))
  assert float(norms.max()) <= 3.0 + 1e-4
  assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  assert float(jnp.mean(jnp.argmax(f(adv), -1) == targets)) >= 0.9


@pytest.mark.parametrize("k", [2, 3, 10, 100])
def test_random_targets_never_true_label(k):
  y = jnp.arange(5000) % k
  t = attacks.random_targets(jax.random.key(k), y, k)
  assert not bool(jnp.any(t == y))
  assert int(t.min()) >= 0 and int(t.max()) < k
  if k <= 10:  # every other class is drawn
    for c in range(k):
      assert set(np.asarray(t[y == c]).tolist()) == set(range(k)) - {c}


def test_l2ul_set_shapes_labels_and_single_compile():
  f = _linear()
  x = _x(3)
  y = jnp.array([0, 1, 2])
  fn = jax.jit(chex.assert_max_traces(
      lambda xf, yf, key: attacks.l2ul_adversarial_set(f, xf, yf, key, num_classes=4,
                                                       num_adv=5, steps=10), n=1))
  xa, ya = fn(x, y, jax.random.key(0))
  assert xa.shape == (15, 4, 4, 1) and ya.shape == (15,)
  assert not bool(jnp.any(ya == jnp.repeat(y, 5)))
  xb, yb = fn(x, y, jax.random.key(0))
  np.testing.assert_array_equal(xa, xb)  # deterministic for a fixed key
  fn(_x(3, seed=9), y, jax.random.key(1))  # a second batch: no retrace
