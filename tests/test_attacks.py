"""PGD stays in its ball and in [0, 1], raises the loss / hits its target, compiles once; a key
per example makes each L∞ start independent of the batch; target draws never return the label;
L2UL's adversarial set (chunked through tmu_jax.batched: any chunk gives the same set); TMU's AF.

Tiny problems on 8x8x1 images: a fixed random linear model and the registry's 64-32-10 MLP.
On this CPU every new program costs 0.05-2 s to compile, so each test runs one jitted program
and checks its outputs with numpy.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tmu_jax import attacks, models

SHAPE = (8, 8, 1)


def _images(n: int, seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).uniform(size=(n,) + SHAPE).astype(np.float32)


@functools.cache
def _linear(k: int = 4):
  """A fixed random linear classifier f32[B, 8, 8, 1] -> f32[B, k]."""
  w = jnp.asarray(np.random.default_rng(0).standard_normal((int(np.prod(SHAPE)), k)),
                  jnp.float32)
  return lambda x: x.reshape(x.shape[0], -1) @ w


@functools.cache
def _mlp():
  """The registry's MLP 64-32-10 with fixed N(0, 0.3²) weights (``model.init`` compiles for ~4 s
  on this CPU, so the weights are filled in with numpy as in test_models)."""
  model = models.get_model("mlp", 10, hidden=(32,))
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + SHAPE))
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), abstract)
  return lambda x: model.apply(variables, x)[0]


def _ce(logits_fn, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y)


def _l2(v):
  return np.sqrt(np.sum(np.square(v.reshape(v.shape[0], -1)), axis=1))


def _numpy(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def test_linf_in_ball_raises_loss_compiles_once_deterministic():
  f = _mlp()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(x, key):
    y = jnp.argmax(f(x), -1)
    t = (y + 1) % 10
    up = attacks.pgd_linf(f, x, y, key, eps=0.1, step_size=0.025, steps=10)
    down = attacks.pgd_linf(f, x, t, key, eps=0.1, step_size=0.025, steps=10, targeted=True)
    return up, down, _ce(f, x, y), _ce(f, up, y), _ce(f, x, t), _ce(f, down, t)

  x = _images(64)
  up, down, ce_y, ce_y_adv, ce_t, ce_t_adv = _numpy(run(x, jax.random.key(2)))
  for adv in (up, down):
    assert np.abs(adv - x).max() <= 0.1 + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
  assert ce_y_adv.mean() > ce_y.mean() + 0.1  # untargeted: CE(y) up
  assert ce_t_adv.mean() < ce_t.mean() - 0.1  # targeted: CE(target) down
  again = _numpy(run(x, jax.random.key(2)))
  np.testing.assert_array_equal(again[0], up)  # same key, same result
  other = _numpy(run(_images(64, seed=7), jax.random.key(3)))  # a second batch: no retrace
  assert not np.array_equal(other[0], up)


def test_linf_per_example_keys_do_not_depend_on_the_batch():
  """With a key per example, each start and PGD result depends on its own key, not the batch."""
  f = _mlp()

  @jax.jit
  def run(x, keys):
    y = jnp.argmax(f(x), -1)
    init = attacks.linf_init(0.1)
    pgd = lambda xs, ys, ks: attacks.pgd_linf(f, xs, ys, ks, eps=0.1, step_size=0.025, steps=5)
    return (init(keys, x), init(keys[3:], x[3:]), init(keys[0], x),
            attacks.linf_init(0.1, random_start=False)(keys, x), pgd(x, y, keys),
            pgd(x[3:], y[3:], keys[3:]))

  x, keys = _images(8), jax.random.split(jax.random.key(4), 8)
  whole, part, one_key, still, adv, adv_part = _numpy(run(x, keys))
  np.testing.assert_array_equal(part, whole[3:])
  np.testing.assert_array_equal(adv_part, adv[3:])
  np.testing.assert_array_equal(still, x)
  for start in (whole, one_key):
    assert np.abs(start - x).max() <= 0.1 + 1e-6 and np.abs(start - x).max() > 0.09
  assert not np.allclose(whole, one_key)  # per-example keys are not the batch key's draw
  assert len({row.tobytes() for row in whole - x}) == 8  # every example its own noise
  assert np.abs(adv - x).max() <= 0.1 + 1e-6


def test_disabled_attacks_return_input_exactly():
  f, x = _mlp(), jnp.asarray(_images(8))
  y = jnp.zeros(8, jnp.int32)
  key = jax.random.key(0)
  for attack in (attacks.pgd_linf, attacks.pgd_l2):
    np.testing.assert_array_equal(attack(f, x, y, key, eps=0.0, step_size=0.1, steps=5), x)
    np.testing.assert_array_equal(attack(f, x, y, key, eps=0.5, step_size=0.1, steps=0), x)
  xa, ya = attacks.l2ul_adversarial_set(f, x[:2], y[:2], key, num_classes=10, num_adv=3,
                                        steps=0)
  np.testing.assert_array_equal(xa, jnp.repeat(x[:2], 3, axis=0))
  assert not np.any(np.asarray(ya) == 0)


def test_bad_arguments_fail_clearly():
  f, x, y, key = _mlp(), jnp.asarray(_images(2)), jnp.zeros(2, jnp.int32), jax.random.key(0)
  with pytest.raises(ValueError, match="eps must be >= 0"):
    attacks.pgd_l2(f, x, y, key, eps=-1.0, step_size=0.1, steps=1)
  with pytest.raises(ValueError, match="steps must be >= 0"):
    attacks.pgd_linf(f, x, y, key, eps=0.1, step_size=0.1, steps=-1)
  with pytest.raises(TypeError, match="steps must be a Python int"):
    jax.jit(lambda s: attacks.pgd_linf(f, x, y, key, eps=0.1, step_size=0.1, steps=s))(3)
  with pytest.raises(ValueError, match=r"take \[0\]"):
    jax.eval_shape(lambda z: attacks.pgd_linf(lambda v: (f(v), v), z, y, key, eps=0.1,
                                              step_size=0.1, steps=1), x)
  with pytest.raises(ValueError, match="num_classes must be >= 2"):
    attacks.random_targets(key, y, 1)
  with pytest.raises(ValueError, match="does not match"):
    attacks.l2ul_adversarial_set(f, x, y[:1], key, num_classes=10, num_adv=2)


def test_l2_projection_and_random_start():

  @jax.jit
  def run(x, noise, key):
    far = attacks.l2_project(1.5)(x + 3.0 * noise, x)
    still = attacks.l2_project(1.5)(x, x)
    start = attacks.l2_init(2.0)(key, x)
    return far, still, start

  x = _images(4000, seed=2)
  noise = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
  far, still, start = _numpy(run(x, noise, jax.random.key(1)))
  assert _l2(far - x).max() <= 1.5 + 1e-4
  assert far.min() >= 0.0 and far.max() <= 1.0
  np.testing.assert_array_equal(still, x)  # zero δ: no NaN, unchanged
  # Uniform by volume in the ball: (‖δ‖/eps)^d ~ U[0, 1] for d = 64 pixels.
  u = (_l2(start - x) / 2.0) ** 64
  assert u.max() <= 1.0 + 1e-4
  assert abs(u.mean() - 0.5) < 0.03 and abs(np.median(u) - 0.5) < 0.05


def test_l2_targeted_in_ball_hits_target_and_zero_gradient_is_safe():
  f = _linear()
  flat = lambda z: jnp.zeros((z.shape[0], 3)) + 0.0 * jnp.sum(z)  # input gradient exactly 0

  @jax.jit
  def run(x, key):
    k_target, k_attack = jax.random.split(key)
    targets = attacks.random_targets(k_target, jnp.argmax(f(x), -1), 4)
    adv = attacks.pgd_l2(f, x, targets, k_attack, eps=3.0, step_size=0.1, steps=100)
    still = attacks.pgd_l2(flat, x, targets, key, eps=1.0, step_size=0.1, steps=3,
                           random_start=False)
    return targets, adv, jnp.argmax(f(adv), -1), still

  x = _images(64)
  targets, adv, pred, still = _numpy(run(x, jax.random.key(3)))
  assert _l2(adv - x).max() <= 3.0 + 1e-4
  assert adv.min() >= 0.0 and adv.max() <= 1.0
  assert np.mean(pred == targets) >= 0.9
  np.testing.assert_array_equal(still, x)


@pytest.mark.parametrize("k", [2, 3, 10, 100])
def test_random_targets_uniform_over_other_classes(k):
  y = np.arange(99 * 100 * 40) % k  # one length for every k: one compiled draw
  per_pair = y.size / (k * (k - 1))  # expected draws of each (label, other class) pair
  t = np.asarray(attacks.random_targets(jax.random.key(k), jnp.asarray(y), k))
  assert t.dtype == np.int32 and t.shape == y.shape
  assert not np.any(t == y)
  assert t.min() >= 0 and t.max() < k
  counts = np.bincount(y * k + t, minlength=k * k).reshape(k, k)
  off = counts[~np.eye(k, dtype=bool)]
  assert off.min() > 0  # every other class is drawn for every label
  z = (off - per_pair) / np.sqrt(per_pair)  # ~N(0, 1) per pair if uniform
  assert np.abs(z).max() < 5.5


def test_l2ul_set_shapes_labels_single_compile_and_chunks():
  f = _linear()
  kw = dict(num_classes=4, num_adv=5, eps=1.0, steps=10)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(xf, yf, key):
    whole = attacks.l2ul_adversarial_set(f, xf, yf, key, **kw)
    chunks = attacks.l2ul_adversarial_set(f, xf, yf, key, chunk_size=4, **kw)  # last padded
    big = attacks.l2ul_adversarial_set(f, xf, yf, key, chunk_size=100, **kw)  # one chunk
    return whole, chunks, big

  x, y = _images(3), np.array([0, 1, 2], np.int32)
  (xa, ya), (xc, yc), (xg, yg) = _numpy(run(x, y, jax.random.key(0)))
  assert xa.shape == (15,) + SHAPE and xa.dtype == np.float32
  assert ya.shape == (15,) and ya.dtype == np.int32
  assert not np.any(ya == np.repeat(y, 5))
  assert _l2(xa - np.repeat(x, 5, axis=0)).max() <= 1.0 + 1e-4
  assert xa.min() >= 0.0 and xa.max() <= 1.0
  # Chunking draws the same targets and starts, so it makes the same set.
  np.testing.assert_array_equal(yc, ya)
  np.testing.assert_allclose(xc, xa, atol=1e-5)
  np.testing.assert_array_equal(yg, ya)
  np.testing.assert_allclose(xg, xa, atol=1e-5)
  (xb, yb), _, _ = _numpy(run(x, y, jax.random.key(0)))
  np.testing.assert_array_equal(xb, xa)  # deterministic for a fixed key
  np.testing.assert_array_equal(yb, ya)
  run(_images(3, seed=9), y, jax.random.key(1))  # a second batch: no retrace


def test_adversarial_feature():
  f = _mlp()

  @jax.jit
  def run(x, key):
    y = jnp.argmax(f(x), -1)
    af = functools.partial(attacks.adversarial_feature, f, x, y, key, steps=5)
    logp = jax.nn.log_softmax(f(x))
    entropy = -jnp.sum(jnp.exp(logp) * logp, -1)
    return (af(eps=0.0, subtract_entropy=True), af(eps=0.0), af(eps=0.1, subtract_entropy=True),
            af(eps=0.1), entropy)

  kl0, ce0, kl, ce, entropy = _numpy(run(_images(32), jax.random.key(0)))
  # Attack disabled: the KL form is exactly 0, the paper's formula is the clean entropy.
  np.testing.assert_array_equal(kl0, 0.0)
  np.testing.assert_allclose(ce0, entropy, rtol=1e-5)
  assert kl.shape == ce.shape == (32,)
  assert kl.min() >= -1e-6 and kl.mean() > 0
  np.testing.assert_allclose(ce - kl, entropy, rtol=1e-4, atol=1e-5)
