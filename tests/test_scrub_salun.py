"""SCRUB and SalUn (METHODS §4) on the session's tiny real problem (conftest ``tiny``), each at
its configured settings: SCRUB's max pass has a zero gradient where student = teacher (this MLP
has no BatchNorm or dropout), so at its defaults it does not unlearn; SalUn's mask keeps the
requested share of weights under one global threshold and freezes the rest bit for bit."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tmu_jax import data as data_lib, rng, train
from tmu_jax.experiment import runs
from tmu_jax.methods import salun, scrub

N_FORGET, N_RETAIN = 30, 1970


def method_key(tiny, name):
  """The key run_method gives method ``name``."""
  return rng.named(rng.seed_key(tiny.problem.seed), f"method/{name}")


def correct_counts(tiny, state):
  """(correct on D_f, correct on D_r) of ``state``."""
  acc = tiny.models.scorer.accuracies(state)
  return (round(acc["acc_forget"] * N_FORGET / 100), round(acc["acc_retain"] * N_RETAIN / 100))


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_saliency_mask_global_threshold():
  """One threshold over all tensors: a tensor may keep any share of its weights."""
  grads = dict(a=jnp.array([0.1, -5.0, 0.2, 3.0]), b=jnp.array([[-0.05, 0.3], [4.0, 0.0]]))
  mask = salun.saliency_mask(grads, 0.5)  # 8 weights, keep 4: |g| in {5, 4, 3, 0.3}
  np.testing.assert_array_equal(mask["a"], [0, 1, 0, 1])
  np.testing.assert_array_equal(mask["b"], [[0, 1], [1, 0]])
  assert float(sum(jnp.sum(m) for m in jax.tree.leaves(salun.saliency_mask(grads, 1.0)))) == 8


def test_scrub_loss_terms(tiny):
  """Student = teacher: the KL term is 0, so the loss is γ·CE alone (and 0 for the max pass)."""
  ctx = tiny.context()
  x, y = tiny.problem.take(tiny.problem.split.forget[:4])
  images = data_lib.to_float(x)
  logits = ctx.logits(tiny.original, x)
  batch, aux = dict(input=images, label=y), dict(teacher=tiny.original.variables)
  ce = np.asarray(train.cross_entropy(logits, dict(label=y)))
  np.testing.assert_allclose(scrub.ScrubLoss(ctx.model, 4.0, 0.99, 0.001)(logits, batch, aux),
                             0.99 * ce, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scrub.ScrubLoss(ctx.model, 4.0, 0.0, 1.0)(logits, batch, aux), 0.0,
                             atol=1e-5)
  other = logits + jnp.array([3.0] + [0.0] * 9)  # a student that differs: KL > 0
  assert np.all(np.asarray(scrub.ScrubLoss(ctx.model, 4.0, 0.0, 1.0)(other, batch, aux)) > 0.01)


def test_scrub_max_pass_gradient_is_zero_at_the_teacher(tiny):
  """∇θ KL(teacher ‖ student) on D_f at student = teacher = M_o is 0 (round-off), not CE's size."""
  ctx = tiny.context()
  x, y = tiny.problem.take(tiny.problem.split.forget)
  images = data_lib.to_float(x)
  batch, aux = dict(input=images, label=y), dict(teacher=tiny.original.variables)

  def grad_max(loss):
    def objective(params):
      logits, _ = ctx.model.apply({"params": params}, images, train=False)
      return jnp.mean(loss(logits, batch, aux))
    grads = jax.jit(jax.grad(objective))(tiny.original.params)
    return max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))

  assert grad_max(scrub.ScrubLoss(ctx.model, 4.0, 0.0, 1.0)) < 1e-6  # the max pass: −KL
  assert grad_max(scrub.ScrubLoss(ctx.model, 4.0, 1.0, 0.0)) > 0.1  # CE on the same data


def test_scrub_max_pass_has_a_gradient_on_a_batchnorm_network():
  """With BatchNorm (All-CNN-C) the train-mode student normalises with its batch's statistics
  and the eval-mode teacher with the running ones, so at student = teacher the max pass's KL is
  positive and its gradient is not 0: the network where SCRUB can act (configs ``scrub_bn``)."""
  from tmu_jax import models  # pylint: disable=import-outside-toplevel
  model = models.get_model("allcnn", 10, width=4)
  images = jnp.asarray(np.random.default_rng(0).random((8, 12, 12, 1)), jnp.float32)
  variables = model.init(jax.random.key(0), images)
  # Running statistics that differ from this batch's, as after training on other data.
  variables = dict(variables, batch_stats=jax.tree.map(lambda v: v + 0.5,
                                                       variables["batch_stats"]))
  batch = dict(input=images, label=jnp.zeros(8, jnp.int32))
  kl = scrub.ScrubLoss(model, 4.0, 0.0, 1.0)

  def objective(params):
    (logits, _), _ = model.apply(dict(variables, params=params), images, train=True,
                                 mutable=["batch_stats"])
    return jnp.mean(kl(logits, batch, dict(teacher=variables)))

  value, grads = jax.jit(jax.value_and_grad(objective))(variables["params"])
  # Measured: KL 0.206, largest gradient entry 0.306 (the MLP's: < 1e-6, test above).
  assert float(value) > 0.02
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 0.03


def test_scrub_at_configured_settings(tiny, monkeypatch):
  """SCRUB's defaults: passes max, min, max, min, min; the first max pass moves the student only
  by weight decay (zero KL gradient), and SCRUB ends where M_o was on D_f (28/30)."""
  info, settings = runs.settings_of(tiny.config, "scrub")
  assert settings == scrub.Scrub()  # the configured section is the settings' defaults
  passes, fit = [], train.fit

  def spy(state, streams, **kw):
    state, out = fit(state, streams, **kw)
    passes.append((kw["name"], out["steps"], leaves(state.params)))  # host copies: donated next
    return state, out

  monkeypatch.setattr(train, "fit", spy)
  result = info.fn(tiny.context(key=method_key(tiny, "scrub")), settings)
  assert [(name, steps) for name, steps, _ in passes] == [
      ("scrub_max", 1), ("scrub_min", 16), ("scrub_max", 1), ("scrub_min", 16), ("scrub_min", 16)]
  assert result.steps == 50 and result.report == dict(max_steps_taken=2)

  # After the first max pass (one SGD step from M_o): exactly the step a zero gradient gives.
  opt = settings.optimizer_for(50)
  tx = train.optim.transform(opt.family, opt)
  params = tiny.original.params
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  expected = leaves(optax.apply_updates(params, updates))
  for got, want, p_o in zip(passes[0][2], expected, leaves(params)):
    # Within 2 ulp (the KL round-off, ~1e-7, times lr moves a few weights across a rounding
    # boundary); a CE-sized gradient (0.1) would move weights by lr·0.1 = 5e-5.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    np.testing.assert_allclose(got, p_o, rtol=1e-6, atol=1e-9)  # weight decay: lr·wd = 2.5e-7
  assert correct_counts(tiny, result.state) == (28, 1951)  # D_f as M_o had it: nothing unlearnt


def salun_mask(tiny, fraction):
  """SalUn's mask recomputed from the D_f gradient at M_o."""
  x_f, y_f = tiny.problem.take(tiny.problem.split.forget)
  grads = salun.forget_gradient(tiny.models.scorer.model, tiny.original.variables, x_f, y_f,
                                min(256, N_FORGET))
  return salun.saliency_mask(grads, fraction)


def test_salun_freezes_masked_out_weights(tiny):
  """Masked-out weights stay bit-identical to M_o's; the kept share is mask_fraction within one
  weight, and almost every kept weight moves; D_f drops from 28/30 to 25/30."""
  info, settings = runs.settings_of(tiny.config, "salun")
  result = info.fn(tiny.context(key=method_key(tiny, "salun")), settings)
  mask = leaves(salun_mask(tiny, settings.mask_fraction))
  total = sum(m.size for m in mask)
  kept = int(sum(m.sum() for m in mask))
  assert abs(kept - settings.mask_fraction * total) <= 1
  assert result.report["mask_kept"] == pytest.approx(100.0 * kept / total)
  moved = 0
  for m, after, before in zip(mask, leaves(result.state.params), leaves(tiny.original.params)):
    np.testing.assert_array_equal(after[m == 0], before[m == 0])
    moved += int(np.sum(after[m == 1] != before[m == 1]))
  assert moved >= 0.99 * kept
  assert (result.steps, result.stopped) == (80, "")
  assert correct_counts(tiny, result.state) == (25, 1951)


def test_salun_same_key_bit_identical(tiny):
  """Two SalUn runs with the same key give bit-identical parameters."""
  info, settings = runs.settings_of(tiny.config, "salun")
  settings = dataclasses.replace(settings, epochs=2)  # 32 steps: the same compiled chunk
  a, b = (info.fn(tiny.context(key=method_key(tiny, "salun")), settings) for _ in range(2))
  for x, y in zip(leaves(a.state.params), leaves(b.state.params)):
    np.testing.assert_array_equal(x, y)
