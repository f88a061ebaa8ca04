"""L2UL (METHODS §3): MAS importance against a hand-computed gradient, the inverted importance,
the anchor penalty, the stop rule, relabel mode, collapse reporting, bring-your-own-model, and the
registered cases inside the experiment (instance scenario, k sweep, continual rounds).

Targeted L2 PGD (hits its target, stays in the ball and in [0, 1]) and the target draw (never y,
for any number of classes) are pinned in tests/test_attacks.py.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import l2ul_fashion_mnist
from tmu_jax import data as data_lib, engine, experiment
from tmu_jax.methods import l2ul
from tmu_jax.models import get_model

FMNIST = "/usr/share/datasets/fashion-mnist"
needs_data = pytest.mark.skipif(not os.path.isdir(FMNIST),
                                reason="apt-get install dataset-fashion-mnist")


class Linear(nn.Module):
  """logits = W·flatten(x) + b: a model whose MAS gradient is known in closed form."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_mas_matches_hand_computed_gradient():
  model = Linear()
  x = jax.random.uniform(jax.random.key(0), (5, 2, 2, 1))
  variables = model.init(jax.random.key(1), x)
  omega = l2ul.mas_importance(model.apply, variables, x, chunk=2)  # 5 = 2+2+1: a padded chunk
  w, b = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
  flat = np.asarray(x).reshape(5, -1)
  logits = flat @ np.asarray(w) + np.asarray(b)
  unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)  # ∂‖l‖/∂l
  want_w = np.mean(np.abs(flat[:, :, None] * unit[:, None, :]), axis=0)  # ∂l_j/∂W_ij = x_i
  want_b = np.mean(np.abs(unit), axis=0)
  np.testing.assert_allclose(omega["Dense_0"]["kernel"], want_w, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(omega["Dense_0"]["bias"], want_b, rtol=1e-5, atol=1e-7)


def test_invert_importance_and_constant_tensor():
  omega = dict(a=jnp.array([0.0, 1.0, 3.0]), const=jnp.full((2, 2), 0.7), zero=jnp.zeros(4))
  inv = l2ul.invert_importance(omega)
  np.testing.assert_allclose(inv["a"], [1.0, 2 / 3, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(inv["const"], np.ones((2, 2)))  # never NaN
  np.testing.assert_array_equal(inv["zero"], np.ones(4))


def test_mas_penalty_value():
  params = dict(w=jnp.array([1.0, 2.0]), b=jnp.array([0.5]))
  aux = dict(omega=dict(w=jnp.array([1.0, 0.5]), b=jnp.array([2.0])),
             anchor=dict(w=jnp.array([0.0, 0.0]), b=jnp.array([0.0])), lam=jnp.float32(3.0))
  # 3 · (1·1 + 0.5·4 + 2·0.25) / 2 = 5.25
  assert float(l2ul.mas_penalty(params, aux)) == pytest.approx(5.25)


def test_bad_settings_fail_clearly():
  with pytest.raises(ValueError, match="case 'bogus'"):
    l2ul.check_settings(l2ul.Settings(case="bogus"))
  with pytest.raises(ValueError, match="forget_loss"):
    l2ul.check_settings(l2ul.Settings(forget_loss="x"))


# ----------------------------------------------------------------------------- on real data


@pytest.fixture(scope="module")
def tiny():
  """An MLP 784-64-10 trained with weight decay on 2000 Fashion-MNIST images (a few seconds)."""
  ds = data_lib.load_idx("fashion_mnist", FMNIST)
  idx = data_lib.balanced_subset(ds.train_labels, 10, 2400, 0)
  x, y = jnp.asarray(ds.train_images[idx]), jnp.asarray(ds.train_labels[idx])
  model = get_model("mlp", 10, (0.286,), (0.353,), hidden=(64,))
  tx = engine.make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4, schedule="step",
                             total_steps=20 * 16)
  state = engine.create_train_state(jax.random.key(0), model, (28, 28, 1), tx)
  state, _ = engine.fit(state, engine.Stream(dict(image=x[:2000], label=y[:2000]), 128),
                        epochs=20, key=jax.random.key(1), spec=engine.StepSpec(), verbose=False)
  pred = jnp.argmax(engine.predict(state.apply_fn, state.variables, x[:2000])[0], -1)
  forget = np.flatnonzero(np.asarray(pred == y[:2000]))[:4]  # 4 correctly classified images
  return model, state, x, y, forget


def _acc(apply_fn, variables, x, y):
  return float(100 * jnp.mean(jnp.argmax(apply_fn(variables, data_lib.to_float(x))[0], -1) == y))


@needs_data
def test_stop_rule_stops_at_first_step_with_zero_forget_accuracy(tiny):
  model, state, x, y, forget = tiny
  kw = dict(num_classes=10, key=jax.random.key(3), case="naive", forget_loss="complement",
            lr=1e-3)
  _, info = l2ul.unlearn_instances(model.apply, state.variables, x[forget], y[forget],
                                   max_steps=500, **kw)
  n = info["steps"]
  assert info["stopped"] == "forgotten" and info["forget_acc"] == 0.0 and n > 1
  # The same run one step shorter has not forgotten yet: the loop did not overshoot.
  v, before = l2ul.unlearn_instances(model.apply, state.variables, x[forget], y[forget],
                                     max_steps=n - 1, **kw)
  assert before["stopped"] == "max_steps" and before["forget_acc"] > 0.0
  assert _acc(model.apply, v, x[forget], y[forget]) > 0.0


@needs_data
def test_bring_your_own_model_l2ul_forgets_and_keeps_the_rest(tiny):
  model, state, x, y, forget = tiny
  held_x, held_y = x[2000:], y[2000:]
  before = _acc(model.apply, state.variables, held_x, held_y)
  variables, info = l2ul.unlearn_instances(
      model.apply, state.variables, x[forget], y[forget], num_classes=10,
      key=jax.random.key(4), num_adv=8, adv_steps=30, lam=0.1, forget_loss="complement",
      max_steps=400)
  assert info["stopped"] == "forgotten" and not info["collapsed"], info
  assert _acc(model.apply, variables, x[forget], y[forget]) == 0.0
  assert _acc(model.apply, variables, held_x, held_y) > before - 15.0
  assert info["adv_target_rate"] > 80.0 and info["mas_time_s"] >= 0.0
  # The caller's variables are untouched (the engine donates only its own copy).
  assert _acc(model.apply, state.variables, x[forget], y[forget]) == 100.0


@needs_data
def test_relabel_mode_reaches_every_requested_label(tiny):
  model, state, x, y, forget = tiny
  new = (y[forget] + 1 + jnp.arange(4)) % 10
  new = jnp.where(new == y[forget], (new + 1) % 10, new)
  variables, info = l2ul.unlearn_instances(
      model.apply, state.variables, x[forget], y[forget], num_classes=10, mode="relabel",
      new_labels=new, key=jax.random.key(5), num_adv=8, adv_steps=30, lam=0.1, lr=1e-3,
      max_steps=600)
  assert info["stopped"] == "relabelled" and info["relabel_acc"] == 100.0, info
  pred = jnp.argmax(model.apply(variables, data_lib.to_float(x[forget]))[0], -1)
  np.testing.assert_array_equal(pred, new)


@needs_data
def test_collapse_is_reported_not_silent(tiny):
  model, state, x, y, forget = tiny
  # One requested label for every forget image at a huge lr: the request is met, but by a model
  # that now predicts that class for (nearly) everything, which must be reported.
  new = jnp.where(y[forget] == 3, 4, 3)
  _, info = l2ul.unlearn_instances(model.apply, state.variables, x[forget], y[forget],
                                   num_classes=10, key=jax.random.key(6), case="naive",
                                   mode="relabel", new_labels=new, lr=2.0, max_steps=50,
                                   x_probe=x[2000:], collapse_every=1)
  assert info["collapsed"] and info["note"].startswith("collapsed: predicts class "), info


# ----------------------------------------------------------------------------- experiment


def tiny_config(arg=""):
  c = l2ul_fashion_mnist.get_config("smoke" + ("," + arg if arg else ""))
  c.data.train_subset = 2000
  c.model.kwargs.hidden = (64,)
  c.train.epochs = 10
  c.verbose = False
  c.experiment.methods = ("l2ul_naive", "l2ul_adv", "l2ul", "l2ul_oracle")
  for name in c.experiment.methods:
    c.methods[name].forget_loss = "complement"
    c.methods[name].max_steps = 300
    c.methods[name].lam = 0.1
  return c


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """One model cache for the experiment tests: M_o is trained once."""
  return str(tmp_path_factory.mktemp("l2ul_cache"))


@needs_data
def test_registered_cases_in_the_experiment(tmp_path, cache):
  c = tiny_config()
  c.cache_dir = cache
  c.experiment.forget_sizes = (1, 4)
  c.experiment.gold = False
  c.experiment.methods = ("l2ul",)
  results = experiment.run(c, str(tmp_path))
  runs = results["runs"]
  assert [r["k"] for r in runs] == [1, 4] and all(r["scenario"] == "instance" for r in runs)
  for r in runs:
    for name, m in r["methods"].items():
      assert not m.get("failed"), (name, m)
      assert m["steps"] >= 1 and m["stopped"] in ("forgotten", "max_steps", "collapsed")
      if m["stopped"] == "forgotten":
        assert m["acc_forget"] == 0.0
  report = (tmp_path / "report.md").read_text()
  assert "## L2UL: k × case" in report and (tmp_path / "plots" / "l2ul_k.png").exists()


@needs_data
def test_continual_rounds_and_relabel(tmp_path, cache):
  c = tiny_config("continual")
  c.cache_dir = cache
  c.experiment.rounds = 2
  c.experiment.methods = ("l2ul_adv", "l2ul_oracle")
  runs = experiment.run(c, str(tmp_path))["runs"]
  assert [r["round"] for r in runs] == [1, 2]
  for name in c.experiment.methods:
    last = runs[-1]["methods"][name]
    assert not last.get("failed"), last
    assert len(last["acc_forget_rounds"]) == 2 and last["acc_forget_rounds"][-1] == 0.0
    assert last["acc_test"] > 50.0  # oracle and +adv keep the model
  assert (tmp_path / "plots" / "l2ul_continual.png").exists()
  c = tiny_config("relabel")
  c.cache_dir = cache
  c.experiment.gold = False
  c.experiment.methods = ("l2ul",)
  c.methods.l2ul.max_steps = 600
  m = experiment.run(c, str(tmp_path / "relabel"))["runs"][0]["methods"]["l2ul"]
  assert m["relabel_acc"] == 100.0 and m["stopped"] == "relabelled"
