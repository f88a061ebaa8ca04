"""tmu_jax.unlearn runs every registered method on a model the user built and trained."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tmu_jax
from tmu_jax import methods
from tmu_jax.errors import ConfigError


class UserNet(nn.Module):
  """A user's own classifier: returns logits only, has no ``train`` argument."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(64)(x.reshape((x.shape[0], -1))))
    return nn.Dense(4)(h)


def _data(n, key):
  """Four linearly separable classes of 8×8 grey images in [0, 1] with per-class means."""
  k_y, k_x = jax.random.split(key)
  y = jax.random.randint(k_y, (n,), 0, 4)
  means = jnp.linspace(0.2, 0.8, 4)[y][:, None, None, None]
  x = jnp.clip(means + 0.05 * jax.random.normal(k_x, (n, 8, 8, 1)), 0, 1)
  pattern = jnp.zeros((4, 8, 8, 1)).at[jnp.arange(4), jnp.arange(4) * 2].set(1.0)
  return np.asarray(jnp.clip(x + 0.5 * pattern[y], 0, 1)), np.asarray(y)


@pytest.fixture(scope="module")
def user_model():
  """The user's model, trained on (retain ∪ forget) by the user's own optax loop."""
  net = UserNet()
  x, y = _data(600, jax.random.key(0))
  variables = net.init(jax.random.key(1), jnp.asarray(x[:1]))
  tx = optax.sgd(0.1, momentum=0.9)
  opt = tx.init(variables["params"])

  @jax.jit
  def step(params, opt, xb, yb):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        net.apply({"params": p}, xb), yb).mean()
    g = jax.grad(loss)(params)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt

  params = variables["params"]
  for i in range(200):
    sl = slice((i * 50) % 600, (i * 50) % 600 + 50)
    params, opt = step(params, opt, x[sl], y[sl])
  forget = (x[:20][y[:20] == 1][:8], y[:20][y[:20] == 1][:8])
  retain = (x[20:500], y[20:500])
  x_pool, y_pool = _data(400, jax.random.key(2))
  pool = (x_pool[y_pool == 1], y_pool[y_pool == 1])
  return net, {"params": params}, forget, retain, pool


QUICK = dict(finetune=dict(epochs=1), random_label=dict(epochs=1), salun=dict(epochs=1),
             bad_teacher=dict(epochs=1), scrub=dict(epochs=1, msteps=1),
             neg_grad=dict(max_steps=20), neg_grad_plus=dict(max_steps=20),
             l2ul=dict(num_adv=4, adv_steps=10, max_steps=50),
             tmu=dict(n_twins=1, twin=dict(epochs=1), clf=dict(epochs=5), cf=dict(epochs=1),
                      unlearn=dict(epochs=1)),
             tmu_plus=dict(n_twins=2, twin=dict(epochs=1), clf=dict(epochs=5),
                           cf=dict(epochs=1), unlearn=dict(epochs=2)))


USER_METHODS = [m for m in methods.available() if "gold" not in methods.get(m).needs]


@pytest.mark.parametrize("method", USER_METHODS)
def test_every_method_on_a_user_model(user_model, method):
  """Each registered method runs on the user's model and returns variables of the same tree
  with finite weights that differ from the input (something was unlearned)."""
  net, variables, forget, retain, pool = user_model
  new, info = tmu_jax.unlearn(net, variables, forget=forget, retain=retain, pool=pool,
                              method=method, settings=QUICK[method], key=jax.random.key(3))
  assert jax.tree.structure(new) == jax.tree.structure(variables)
  leaves = jax.tree.leaves(new["params"])
  assert all(bool(jnp.all(jnp.isfinite(l))) for l in leaves)
  moved = sum(float(jnp.sum(jnp.abs(a - b))) for a, b in
              zip(leaves, jax.tree.leaves(variables["params"])))
  assert moved > 0 and info["steps"] > 0 and info["method"] == method


def test_l2ul_forgets_with_only_the_forget_set(user_model):
  """L2UL needs nothing but the forget set: every forget image ends misclassified."""
  net, variables, forget, _, _ = user_model
  new, info = tmu_jax.unlearn(net, variables, forget=forget, method="l2ul",
                              settings=dict(num_adv=4, adv_steps=10, max_steps=500, lr=0.05,
                                            forget_loss="complement"))
  pred = np.asarray(jnp.argmax(net.apply(new, jnp.asarray(forget[0])), -1))
  assert info["stopped"] == "forgotten" and np.all(pred != forget[1])


def test_missing_data_is_one_clear_error(user_model):
  """A method that needs D_r or the pool says so before any work."""
  net, variables, forget, retain, _ = user_model
  with pytest.raises(ConfigError, match="needs retain"):
    tmu_jax.unlearn(net, variables, forget=forget, method="finetune")
  with pytest.raises(ConfigError, match="needs pool"):
    tmu_jax.unlearn(net, variables, forget=forget, retain=retain, method="tmu")
  with pytest.raises(ConfigError, match="needs the gold model's answers"):
    tmu_jax.unlearn(net, variables, forget=forget, retain=retain, method="tmu_plus_oracle")
  with pytest.raises(ConfigError, match="unknown method"):
    tmu_jax.unlearn(net, variables, forget=forget, method="bogus")
  with pytest.raises(ConfigError, match="epochs"):
    tmu_jax.unlearn(net, variables, forget=forget, retain=retain, method="finetune",
                    settings=dict(epochs=0))


def test_apply_function_alone_cannot_make_fresh_networks(user_model):
  """Bad Teacher initialises a random teacher: an apply function alone is refused clearly."""
  net, variables, forget, retain, _ = user_model
  with pytest.raises(ConfigError, match="linen Module"):
    tmu_jax.unlearn(lambda v, x, **kw: net.apply(v, x), variables, forget=forget,
                    retain=retain, method="bad_teacher", eval_kwargs={})
