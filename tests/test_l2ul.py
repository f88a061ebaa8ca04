"""L2UL (METHODS §3): MAS importance against a hand-computed gradient, the inverted importance,
the anchor penalty, the forget losses, and the loop on the session's tiny real M_o (k = 16
training images of T drawn uniformly, the configs/l2ul_fashion_mnist.py settings): the exact
stop step, one host sync per chunk, one compiled update across a λ/lr grid, relabel mode, the
oracle case, collapse and NaN reporting, the registered method, and bring-your-own-model.

Pinned step counts hold for the tiny problem of tests/conftest.py (its data, split and M_o):
a change there moves them, and the invariant next to each pin says what must still hold.
Targeted L2 PGD and the target draw are pinned in tests/test_attacks.py.
"""

import dataclasses
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import l2ul_fashion_mnist
from tmu_jax import data as data_lib, schema, train
from tmu_jax.errors import ConfigError
from tmu_jax.experiment import runs
from tmu_jax.methods import l2ul, registry
from tmu_jax.methods.l2ul import loop as l2ul_loop
from tmu_jax.methods.l2ul.losses import ForgetLoss
from tmu_jax.methods.l2ul.mas import (Penalty, invert_importance, mas_importance, mas_penalty,
                                      representation_penalty)
from tmu_jax.train import loop as train_loop

K = 16
# The configs/l2ul_fashion_mnist.py section: forget_loss "complement", λ = 0.3, lr 1e-3.
CONFIG = schema.parse(l2ul.L2UL, l2ul_fashion_mnist.get_config().methods.l2ul, "methods.l2ul")


class Linear(nn.Module):
  """logits = W·flatten(x) + b: a model whose MAS gradient is known in closed form."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    h = x.reshape((x.shape[0], -1))
    return nn.Dense(3)(h), h


def test_mas_matches_hand_computed_gradient():
  """Ω = mean_x |∂‖f(x)‖₂/∂θ| equals the closed form of a linear model (padded last chunk)."""
  model = Linear()
  x = jax.random.uniform(jax.random.key(0), (5, 2, 2, 1))
  variables = model.init(jax.random.key(1), x)
  omega = mas_importance(model, variables, x, chunk=2)  # 5 = 2 + 2 + 1: a padded chunk
  w, b = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
  flat = np.asarray(x).reshape(5, -1)
  logits = flat @ np.asarray(w) + np.asarray(b)
  unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)  # ∂‖l‖/∂l
  want_w = np.mean(np.abs(flat[:, :, None] * unit[:, None, :]), axis=0)  # ∂l_j/∂W_ij = x_i
  want_b = np.mean(np.abs(unit), axis=0)
  np.testing.assert_allclose(omega["Dense_0"]["kernel"], want_w, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(omega["Dense_0"]["bias"], want_b, rtol=1e-5, atol=1e-7)


def test_invert_importance_and_constant_tensor():
  """Ω' = 1 − min-max(Ω) per tensor; a constant (or zero) tensor gives ones, never NaN."""
  omega = dict(a=jnp.array([0.0, 1.0, 3.0]), const=jnp.full((2, 2), 0.7), zero=jnp.zeros(4))
  inv = invert_importance(omega)
  np.testing.assert_allclose(inv["a"], [1.0, 2 / 3, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(inv["const"], np.ones((2, 2)))
  np.testing.assert_array_equal(inv["zero"], np.ones(4))


def test_invert_importance_layer_and_global_groups():
  """``layer``: one min-max over a module's kernel and bias; ``global``: over every tensor."""
  omega = dict(Dense_0=dict(kernel=jnp.array([0.0, 2.0]), bias=jnp.array([4.0])),
               Dense_1=dict(kernel=jnp.array([1.0, 3.0]), bias=jnp.array([2.0])))
  layer = invert_importance(omega, "layer")
  np.testing.assert_allclose(layer["Dense_0"]["kernel"], [1.0, 0.5], rtol=1e-6)  # span [0, 4]
  np.testing.assert_allclose(layer["Dense_0"]["bias"], [0.0], atol=1e-7)
  np.testing.assert_allclose(layer["Dense_1"]["kernel"], [1.0, 0.0], atol=1e-7)  # span [1, 3]
  np.testing.assert_allclose(layer["Dense_1"]["bias"], [0.5], rtol=1e-6)
  glob = invert_importance(omega, "global")  # span [0, 4] everywhere
  np.testing.assert_allclose(glob["Dense_1"]["kernel"], [0.75, 0.25], rtol=1e-6)
  np.testing.assert_allclose(glob["Dense_1"]["bias"], [0.5], rtol=1e-6)
  tensor = invert_importance(omega, "tensor")
  np.testing.assert_array_equal(tensor["Dense_0"]["bias"], [1.0])  # a 1-element tensor
  with pytest.raises(ValueError, match="mas_norm 'x'"):
    invert_importance(omega, "x")


def test_representation_penalty_value():
  """rep_lam · mean ‖h_θ − h_o‖²: zero at M_o, by hand after a bias shift (Linear's h = x)."""
  model = Linear()
  x = jax.random.uniform(jax.random.key(0), (4, 2, 2, 1))
  variables = model.init(jax.random.key(1), x)
  h = model.apply(variables, x)[1]
  aux = dict(rep_x=x, rep_h=h + 0.5, rep_lam=jnp.float32(2.0))  # h_o = h + 0.5 on 4 features
  # 2 · mean over rows of 4 · 0.25 = 2.0
  assert float(representation_penalty(model, variables["params"], aux)) == pytest.approx(2.0)
  both = dict(aux, omega=jax.tree.map(jnp.ones_like, variables["params"]),
              anchor=variables["params"], lam=jnp.float32(1.0))
  assert float(Penalty(model, mas=True, rep=True)(variables["params"], both)) == pytest.approx(2.0)
  assert float(Penalty(model, mas=True, rep=False)(variables["params"], both)) == 0.0


def test_mas_penalty_value():
  """R = λ·Σ Ω'·(θ − θ_o)²/2 by hand."""
  params = dict(w=jnp.array([1.0, 2.0]), b=jnp.array([0.5]))
  aux = dict(omega=dict(w=jnp.array([1.0, 0.5]), b=jnp.array([2.0])),
             anchor=dict(w=jnp.array([0.0, 1.0]), b=jnp.array([0.0])), lam=jnp.float32(3.0))
  # 3 · (1·1 + 0.5·1 + 2·0.25) / 2 = 3.0
  assert float(mas_penalty(params, aux)) == pytest.approx(3.0)


def test_forget_loss_kinds():
  """Each kind's value on ascent rows, CE elsewhere; complement moves where −CE's gradient is 0."""
  logits = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
  batch = dict(label=jnp.array([0, 0, 2]), weight=jnp.array([-1.0, -1.0, 1.0]))
  z = np.asarray(logits, np.float64)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  ce = -logp[np.arange(3), [0, 0, 2]]
  complement = np.log(1 - np.exp(logp[np.arange(2), 0]))  # log(1 − p_y) on the ascent rows
  np.testing.assert_allclose(ForgetLoss("ce")(logits, batch), ce, rtol=1e-5)
  # Row 1 is no longer predicted as y: ce_correct stops pushing it.
  np.testing.assert_allclose(ForgetLoss("ce_correct")(logits, batch), [ce[0], 0.0, ce[2]],
                             rtol=1e-5)
  np.testing.assert_allclose(ForgetLoss("complement")(logits, batch), [*complement, ce[2]],
                             rtol=1e-5)
  # complement_correct: the complement term only where y is still predicted (row 0).
  np.testing.assert_allclose(ForgetLoss("complement_correct")(logits, batch),
                             [complement[0], 0.0, ce[2]], rtol=1e-5)
  # A saturated row (p_y = 1 in float32): the engine's loss is weight · ℓ = −ℓ.
  sat = dict(label=jnp.array([0]), weight=jnp.array([-1.0]))
  saturated = jnp.array([[200.0, 0.0, 0.0]])
  grad = lambda kind: jax.grad(lambda l: -ForgetLoss(kind)(l, sat)[0])(saturated)
  np.testing.assert_array_equal(grad("ce"), 0.0)
  np.testing.assert_allclose(grad("complement"), [[1.0, -0.5, -0.5]], atol=1e-6)
  with pytest.raises(ValueError, match="forget_loss 'x' is not valid"):
    ForgetLoss("x")(logits, batch)


def test_bad_settings_and_inputs_fail_clearly():
  """Bad settings are ConfigErrors naming the field; bad inputs ValueErrors, before any work."""
  with pytest.raises(ConfigError, match="methods.l2ul.case = 'bogus'"):
    schema.parse(l2ul.L2UL, dict(case="bogus"), "methods.l2ul")
  model = Linear()
  x = jnp.zeros((2, 2, 2, 1))
  variables = model.init(jax.random.key(0), x)
  y = jnp.zeros(2, jnp.int32)
  kw = dict(num_classes=3, key=jax.random.key(0))
  with pytest.raises(ConfigError, match="unlearn_instances.forget_loss = 'x'"):
    l2ul.unlearn_instances(model.apply, variables, x, y, forget_loss="x", **kw)
  with pytest.raises(ConfigError, match="unlearn_instances.lambda is not a setting"):
    l2ul.unlearn_instances(model.apply, variables, x, y, **{"lambda": 1.0}, **kw)
  with pytest.raises(ValueError, match="only params and batch_stats"):
    l2ul.unlearn_instances(model.apply, dict(variables, cache={}), x, y, **kw)
  state = train.from_variables(variables)
  go = lambda s=CONFIG, **extra: l2ul.unlearn_state(model, state, x, y, jax.random.key(0), s,
                                                    num_classes=3, **extra)
  with pytest.raises(ValueError, match="mode 'bogus'"):
    go(mode="bogus")
  with pytest.raises(ValueError, match="relabel mode needs new_labels"):
    go(mode="relabel")
  with pytest.raises(ValueError, match="'oracle' needs retain"):
    go(dataclasses.replace(CONFIG, case="oracle"))


# ----------------------------------------------------------------------------- on the tiny M_o


@dataclasses.dataclass
class Forget:
  """The instance scenario on the tiny problem: D_f = 16 images of T, D_r = T \\ D_f."""
  index: np.ndarray
  x: jax.Array
  y: jax.Array
  probe: jax.Array
  problem: object


@pytest.fixture(scope="module")
def forget(tiny) -> Forget:
  """16 training images of T drawn uniformly (fixed seed), and the problem with that split."""
  p = tiny.problem
  index = np.sort(np.random.default_rng(0).choice(p.train_portion, K, replace=False))
  split = p.split._replace(forget=index, retain=np.setdiff1d(p.train_portion, index))
  problem = dataclasses.replace(p, split=split)
  x, y = problem.take(index)
  return Forget(index, x, y, l2ul.probe_images(problem, CONFIG.probe_size), problem)


def _unlearn(tiny, f: Forget, *, mode: str = "misclassify", new_labels=None, **settings):
  """unlearn_state from the tiny M_o on ``f`` (key 0, the test probe) with CONFIG's settings
  updated by ``settings``."""
  s = dataclasses.replace(CONFIG, **settings)
  return l2ul.unlearn_state(tiny.models.scorer.model, tiny.original, f.x, f.y, jax.random.key(0),
                            s, num_classes=tiny.problem.num_classes, mode=mode,
                            new_labels=new_labels, probe=f.probe)


def _pred(tiny, variables, x) -> np.ndarray:
  return np.asarray(jnp.argmax(train.logits(tiny.models.scorer.model, variables, x), -1))


def _forget_acc(tiny, state, f: Forget) -> float:
  return float(100 * np.mean(_pred(tiny, state.variables, f.x) == np.asarray(f.y)))


# The configs/l2ul_fashion_mnist.py case l2ul forgets the 16 images after exactly this many steps.
FORGOTTEN_AT = 546


def test_stop_rule_stops_at_the_first_step_with_zero_forget_accuracy(tiny, forget):
  """Pinned: "forgotten" after exactly FORGOTTEN_AT steps; at N − 1 steps D_f is not forgotten."""
  state, info = _unlearn(tiny, forget)
  assert (info["stopped"], info["steps"], info["forget_acc"]) == ("forgotten", FORGOTTEN_AT, 0.0)
  assert int(state.step) == FORGOTTEN_AT and _forget_acc(tiny, state, forget) == 0.0
  before, info = _unlearn(tiny, forget, max_steps=FORGOTTEN_AT - 1)
  assert (info["stopped"], info["steps"]) == ("max_steps", FORGOTTEN_AT - 1)
  assert info["forget_acc"] == _forget_acc(tiny, before, forget) > 0.0
  assert _forget_acc(tiny, tiny.original, forget) == 100.0  # M_o itself is untouched


def test_one_host_sync_per_chunk(tiny, forget, chunk_calls):
  """The stop rule is in the graph: fit calls the compiled chunk ceil(steps / 25) times."""
  _, info = _unlearn(tiny, forget)  # stops inside the 22nd chunk
  assert info["steps"] == FORGOTTEN_AT
  assert chunk_calls == [25] * math.ceil(FORGOTTEN_AT / 25) == [25] * 22
  chunk_calls.clear()
  _, info = _unlearn(tiny, forget, max_steps=60)  # the budget ends inside the 3rd chunk
  assert info["steps"] == 60 and len(chunk_calls) == 3


def test_lambda_lr_grid_compiles_the_update_and_the_adversarial_set_once(tiny, forget, monkeypatch):
  """λ (aux data), lr (optimizer state), eps/step (traced) never retrace; a static change does."""
  chex.clear_trace_counter()
  # fit's compiled chunk, as a fresh program whose every trace chex counts (donation aside).
  once = jax.jit(chex.assert_max_traces(train_loop._chunk, n=1), static_argnames=("spec", "plan"))
  monkeypatch.setattr(train_loop, "_chunk_jit", once)
  adv, mas = l2ul_loop.adversarial_set, mas_importance
  _unlearn(tiny, forget, max_steps=30)
  sizes = adv._cache_size(), mas._cache_size()
  seen = set()
  for lam in (0.1, 0.3, 1.0):
    for lr in (1e-3, 3e-3):
      state, info = _unlearn(tiny, forget, lam=lam, lr=lr, max_steps=30)
      assert info["steps"] == 30
      assert float(train.optim.hyperparams(state.opt_state)["learning_rate"]) == pytest.approx(lr)
      seen.add(tuple(np.asarray(jax.tree.leaves(state.params)[0]).ravel()[:4]))
  _unlearn(tiny, forget, eps=2.0, adv_step=0.05, max_steps=30)
  assert (adv._cache_size(), mas._cache_size()) == sizes
  assert len(seen) == 6  # six different runs, one compiled chunk
  # Negative control: another forget loss is another StepSpec, hence a second trace.
  with pytest.raises(AssertionError, match="traced > 1 times"):
    _unlearn(tiny, forget, forget_loss="ce", max_steps=30)


def test_levers_run_and_move_the_result(tiny, forget):
  """Issue 11's levers on the tiny problem: each changes the path (none is silently ignored).
  The anchors and MAS groupings still forget all 16 images; the per-instance stop does not
  within the 1000 steps: a forgotten row is no longer pushed, drifts back to y, and the rows
  take turns (docs/l2ul.md)."""
  base, _ = _unlearn(tiny, forget)
  kernel = lambda st: np.asarray(st.params["Dense_0"]["kernel"])
  steps = {}
  for name, settings in dict(rep=dict(rep_lam=1e-3), layer=dict(mas_norm="layer"),
                             glob=dict(mas_norm="global")).items():
    state, info = _unlearn(tiny, forget, **settings)
    assert info["stopped"] == "forgotten" and _forget_acc(tiny, state, forget) == 0.0, name
    assert not np.array_equal(kernel(state), kernel(base)), name
    steps[name] = info["steps"]
  # λ = 0.3's anchor is weak next to the forget loss: per-layer groups keep the stop step.
  assert steps == dict(rep=660, layer=FORGOTTEN_AT, glob=734)
  state, info = _unlearn(tiny, forget, forget_loss="complement_correct")
  assert (info["stopped"], info["steps"]) == ("max_steps", 1000)
  assert 0.0 < info["forget_acc"] == _forget_acc(tiny, state, forget) < 50.0
  _, info = _unlearn(tiny, forget, rep_lam=1.0, case="naive")  # no adversarial set: no anchor
  _, naive = _unlearn(tiny, forget, case="naive")
  assert info["steps"] == naive["steps"]


def test_relabel_mode_reaches_every_requested_label(tiny, forget):
  """Relabel (λ = 0.1 as in the relabel config, lr 1e-2): every image at its requested label."""
  new = l2ul.requested_labels(forget.problem, forget.index)
  assert not np.any(np.asarray(new) == np.asarray(forget.y))
  state, info = _unlearn(tiny, forget, mode="relabel", new_labels=new, lam=0.1, lr=1e-2)
  assert (info["stopped"], info["steps"], info["relabel_acc"]) == ("relabelled", 66, 100.0)
  np.testing.assert_array_equal(_pred(tiny, state.variables, forget.x), new)


def test_collapse_is_detected_in_the_loop_and_reported(tiny, forget):
  """One requested label for all at lr 1: the in-graph check stops at the collapse, with a note."""
  new = jnp.where(forget.y == 3, 4, 3)
  state, info = _unlearn(tiny, forget, mode="relabel", new_labels=new, lr=1.0, collapse_every=1)
  assert (info["stopped"], info["steps"], info["collapsed"]) == ("collapsed", 7, True)
  top = np.bincount(_pred(tiny, state.variables, forget.probe), minlength=10)
  assert top.max() / forget.probe.shape[0] >= CONFIG.collapse_share
  assert info["note"] == (f"collapsed: predicts class {top.argmax()} for "
                          f"{100 * top.max() / forget.probe.shape[0]:.0f}% of probe images after "
                          f"7 steps")


def test_nan_loss_raises_and_the_experiment_reports_it(tiny, forget):
  """A diverging run (λ = 1e20) raises NonFiniteLoss; the experiment records a failed entry."""
  with pytest.raises(train.NonFiniteLoss, match="l2ul_l2ul: the loss became nan by step"):
    _unlearn(tiny, forget, lam=1e20)
  config = l2ul_fashion_mnist.get_config()
  config.methods.l2ul.lam = 1e20
  state, out, result = runs.apply_method(config, forget.problem, tiny.models, tiny.original,
                                         "l2ul", jax.random.key(0), {})
  assert state is None and result is None and out["failed"]
  assert out["note"].startswith("collapsed: l2ul_l2ul: the loss became nan")


def test_registered_cases_match_the_loop_and_oracle_keeps_the_rest(tiny, forget):
  """Registered l2ul is the loop's run; l2ul_oracle forgets and keeps the test accuracy."""
  config = l2ul_fashion_mnist.get_config()
  ctx = dataclasses.replace(tiny.context(jax.random.key(0)), problem=forget.problem)
  info, s = runs.settings_of(config, "l2ul")
  assert s == CONFIG and info is registry.get("l2ul")
  plain = info.fn(ctx, s)
  assert (plain.stopped, plain.steps) == ("forgotten", FORGOTTEN_AT)
  assert plain.report["adv_target_rate"] > 90.0 and not plain.report["collapsed"]
  info, s = runs.settings_of(config, "l2ul_oracle")
  assert s.case == "oracle"
  oracle = info.fn(ctx, dataclasses.replace(s, lr=1e-2))
  assert (oracle.stopped, oracle.steps) == ("forgotten", 77)
  assert _forget_acc(tiny, oracle.state, forget) == 0.0
  p = forget.problem
  acc = lambda st: train.accuracy(tiny.models.scorer.model, st.variables, p.x_test, p.y_test)
  # D_r itself keeps the model (82.7 -> 81.3 here); L2UL without it loses more (-> 66.5).
  assert acc(oracle.state) > acc(tiny.original) - 2.0
  assert acc(oracle.state) > acc(plain.state) + 5.0


class UserNet(nn.Module):
  """A user's own linen classifier returning logits only (the tiny M_o's architecture)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = (x - 0.286) / 0.353
    h = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
    return nn.Dense(10)(h)


def test_unlearn_instances_on_a_user_linen_model(tiny, forget):
  """README's snippet on a user-built module: forgets 4 images, keeps the rest and the input."""
  net = UserNet()
  variables = {"params": tiny.original.params}
  x_f, y_f = forget.x[:4], forget.y[:4]
  p = tiny.problem
  acc = lambda v, x, y: float(100 * jnp.mean(
      jnp.argmax(net.apply(v, data_lib.to_float(x)), -1) == y))
  before = acc(variables, p.x_test, p.y_test)
  assert acc(variables, x_f, y_f) == 100.0
  new, info = l2ul.unlearn_instances(net.apply, variables, x_f, y_f, num_classes=10,
                                     key=jax.random.key(2), num_adv=8, max_steps=300,
                                     forget_loss="complement", lam=0.3)
  assert (info["stopped"], info["steps"], info["forget_acc"]) == ("forgotten", 35, 0.0), info
  assert not info["collapsed"] and info["adv_target_rate"] == 100.0
  assert acc(new, x_f, y_f) == 0.0
  after = acc(new, p.x_test, p.y_test)
  assert after > before - 10.0, (before, after)  # 82.7 -> 77.0 on the tiny M_o
  assert set(new) == {"params"}
  assert acc(variables, x_f, y_f) == 100.0  # the caller's variables are untouched


def test_release_runs_on_without_mas_only_when_the_cap_leaves_rows(tiny, forget):
  """release_steps (case l2ul): a run whose step cap ends with forget rows left goes on, from
  the state at the cap, with the MAS anchor's λ = 0, until the request holds; a run that
  forgets within the cap, or another case, never releases. λ = 30 holds the rows at the cap."""
  held, info = _unlearn(tiny, forget, lam=30.0, max_steps=300)
  assert (info["stopped"], info["released_steps"]) == ("max_steps", 0)
  assert info["forget_acc"] > 0.0
  state, info = _unlearn(tiny, forget, lam=30.0, max_steps=300, release_steps=2000)
  assert info["stopped"] == "forgotten" and info["forget_acc"] == 0.0
  assert 0 < info["released_steps"] < 2000
  assert info["steps"] == 300 + info["released_steps"] == int(state.step)
  assert _forget_acc(tiny, state, forget) == 0.0
  _, info = _unlearn(tiny, forget, release_steps=2000)  # forgets within the cap
  assert (info["steps"], info["released_steps"]) == (FORGOTTEN_AT, 0)
  _, info = _unlearn(tiny, forget, case="adv", max_steps=5, release_steps=2000)
  assert (info["stopped"], info["released_steps"]) == ("max_steps", 0)
