"""The training engine: no recompiles, weighted losses, relabeling, checkpoints and resume."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import checkpoints, engine
from tmu_jax.models import get_model


def _problem(n=90, seed=0):
  """A separable 3-class toy problem: class = brightest third of a 4x4 image."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.integers(0, 60, (n, 4, 4, 1)).astype(np.uint8)
  images[np.arange(n), labels, 0, 0] = 250
  return jnp.asarray(images), jnp.asarray(labels)


def _state(lr=0.1, total=100, seed=0):
  model = get_model("mlp", 3, hidden=(16,))
  tx = engine.make_optimizer("sgd", lr, momentum=0.9, weight_decay=5e-4, schedule="step",
                             total_steps=total)
  return engine.create_train_state(jax.random.key(seed), model, (4, 4, 1), tx)


def test_fit_learns_and_step_compiles_once():
  x, y = _problem()
  stream = engine.Stream(dict(image=x, label=y), 32)  # 90 = 2×32 + 26: a padded last batch
  spec = engine.StepSpec(num_classes=3)
  before = engine.train_step._cache_size()
  state, info = engine.fit(_state(), stream, epochs=15, key=jax.random.key(1), spec=spec,
                           verbose=False)
  assert engine.train_step._cache_size() - before <= 1  # one program for all 45 steps
  assert info["steps"] == 45
  assert engine.evaluate(state, x, y) > 95.0


def test_step_traced_once_across_batches():
  x, y = _problem()
  streams = (engine.Stream(dict(image=x, label=y), 32),)
  step = jax.jit(chex.assert_max_traces(engine._train_step, n=1), static_argnames=("spec",))
  state, key = _state(), jax.random.key(0)
  for epoch in range(2):
    idx, valid, steps = engine.epoch_indices(key, streams, epoch)
    for i in range(steps):
      state, _ = step(state, (streams[0].data,), idx, valid, jnp.int32(i), jnp.int32(epoch),
                      key, None, spec=engine.StepSpec(num_classes=3))


def test_negative_weights_ascend():
  x, y = _problem()
  # A short pretraining: a saturated model would give −CE a vanishing gradient (FINDINGS.md).
  state, _ = engine.fit(_state(), engine.Stream(dict(image=x, label=y), 32), epochs=3,
                        key=jax.random.key(1), spec=engine.StepSpec(num_classes=3),
                        verbose=False)
  before = engine.evaluate(state, x, y)
  assert before > 80
  weight = -jnp.ones(x.shape[0])
  state = engine.with_optimizer(state, engine.make_optimizer("sgd", 0.1))
  state, _ = engine.fit(state, engine.Stream(dict(image=x, label=y, weight=weight), 32),
                        epochs=3, key=jax.random.key(2), spec=engine.StepSpec(num_classes=3),
                        verbose=False)
  assert engine.evaluate(state, x, y) < before - 30


def test_fit_continues_from_state_step():
  x, y = _problem()
  stream = engine.Stream(dict(image=x, label=y), 32)
  state, _ = engine.fit(_state(), stream, epochs=1, key=jax.random.key(1), verbose=False)
  state, info = engine.fit(state, stream, epochs=2, key=jax.random.key(1), verbose=False)
  assert info["steps"] == 6 and int(state.step) == 9


def test_relabel_never_true_label_and_fixed_within_epoch():
  spec = engine.StepSpec(num_classes=3)
  labels = jnp.arange(60) % 3
  data = dict(image=jnp.zeros((60, 1)), label=labels, relabel=jnp.ones(60, bool))
  idx = (jnp.arange(60).reshape(2, 30),)
  valid = jnp.ones((2, 30))
  key = jax.random.key(0)
  b0 = engine._batch(spec, (data,), idx, valid, jnp.int32(0), key, jnp.int32(0))
  b0_again = engine._batch(spec, (data,), idx, valid, jnp.int32(0), key, jnp.int32(0))
  b1 = engine._batch(spec, (data,), idx, valid, jnp.int32(0), key, jnp.int32(1))
  assert not np.any(np.asarray(b0["label"]) == np.asarray(labels[:30]))
  np.testing.assert_array_equal(b0["label"], b0_again["label"])
  assert not np.array_equal(b0["label"], b1["label"])  # redrawn each epoch


def test_streams_concatenate_and_cycle():
  a = dict(image=jnp.zeros((10, 1)), label=jnp.zeros(10, jnp.int32))
  b = dict(image=jnp.ones((3, 1)), label=jnp.ones(3, jnp.int32))
  streams = (engine.Stream(a, 5), engine.Stream(b, 2))
  idx, valid, steps = engine.epoch_indices(jax.random.key(0), streams, 0)
  assert steps == 2 and idx[1].shape == (2, 2)
  batch = engine._batch(engine.StepSpec(), (a, b), idx, valid, jnp.int32(1), jax.random.key(0),
                        jnp.int32(0))
  np.testing.assert_array_equal(batch["label"], [0, 0, 0, 0, 0, 1, 1])


def test_checkpoint_round_trip(tmp_path):
  x, y = _problem()
  state, _ = engine.fit(_state(), engine.Stream(dict(image=x, label=y), 32), epochs=2,
                        key=jax.random.key(1), spec=engine.StepSpec(num_classes=3),
                        verbose=False)
  with checkpoints.Checkpointer(str(tmp_path / "ck")) as ck:
    ck.save(state)
  with checkpoints.Checkpointer(str(tmp_path / "ck")) as ck:
    restored = ck.restore(_state(seed=5))
  chex.assert_trees_all_equal(restored.params, state.params)
  chex.assert_trees_all_equal(restored.opt_state, state.opt_state)
  assert int(restored.step) == int(state.step)


class _Interrupt:
  """A stop_fn that raises KeyboardInterrupt once at ``step`` (mid-epoch)."""

  def __init__(self, step):
    self.step = step

  def __call__(self, state):
    if int(state.step) == self.step:
      raise KeyboardInterrupt
    return False


def test_resume_after_interrupt_matches_uninterrupted(tmp_path):
  x, y = _problem()
  stream = engine.Stream(dict(image=x, label=y), 32)
  spec = engine.StepSpec(num_classes=3, augment=True, pad=1)
  kw = dict(epochs=4, key=jax.random.key(7), spec=spec, verbose=False)
  straight, _ = engine.fit(_state(total=12), stream, **kw)
  ck = checkpoints.Checkpointer(str(tmp_path / "run"))
  with pytest.raises(KeyboardInterrupt):
    engine.fit(_state(total=12), stream, checkpointer=ck, stop_fn=_Interrupt(5), **kw)
  ck = checkpoints.Checkpointer(str(tmp_path / "run"))
  assert ck.latest_step() == 5
  resumed, info = engine.fit(_state(total=12), stream, checkpointer=ck, **kw)
  ck.close()
  assert info["steps"] == 7
  chex.assert_trees_all_equal(resumed.params, straight.params)


def test_nan_loss_raises():
  x, y = _problem()
  state = _state(lr=1e30)
  with pytest.raises(engine.NonFiniteLoss):
    engine.fit(state, engine.Stream(dict(image=x, label=y), 32), epochs=3,
               key=jax.random.key(0), spec=engine.StepSpec(num_classes=3), verbose=False)


def test_data_parallel_matches_single_device():
  """Batch-sharded data parallel on 4 forced CPU devices equals one device."""
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from tmu_jax import engine
      from tmu_jax.models import get_model
      assert len(jax.devices()) == 4
      rng = np.random.default_rng(0)
      x = jnp.asarray(rng.integers(0, 255, (64, 4, 4, 1)).astype(np.uint8))
      y = jnp.asarray(rng.integers(0, 3, 64).astype(np.int32))
      def run(mesh):
        model = get_model("mlp", 3, hidden=(16,))
        tx = engine.make_optimizer("sgd", 0.1, momentum=0.9)
        st = engine.create_train_state(jax.random.key(0), model, (4, 4, 1), tx)
        spec = engine.StepSpec(num_classes=3, mesh=mesh)
        st, _ = engine.fit(st, engine.Stream(dict(image=x, label=y), 16), epochs=2,
                           key=jax.random.key(1), spec=spec, verbose=False)
        return jax.device_get(st.params)
      single, multi = run(None), run(engine.make_mesh(4))
      for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
      print("OK")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]
