"""The training engine (tmu_jax.train): compiled chunks equal single steps, in-graph stop rules, one
host sync per chunk, one compilation per optimizer family, streams, weights, relabeling,
checkpoints and resume, optimizers, predict, data parallel.

Most tests share one problem, one StepSpec and one reference trajectory (a Python loop of
``apply_update``), so that the few compiled programs are built once per session.
"""

import contextlib
import functools
import importlib.util
import math
import os
import signal
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tmu_jax import checkpoints, train
from tmu_jax.errors import RunFault, Terminated
from tmu_jax.models import get_model
from tmu_jax.progress import Progress
from tmu_jax.train import loop, optim
from tmu_jax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 3  # classes
SHAPE = (4, 4, 1)
N, B = 90, 32  # 90 = 2×32 + 26: a partial last batch; 3 steps per epoch
EPOCHS = 10
STEPS = EPOCHS * 3
KEY = jax.random.key(1)
MODEL = get_model("mlp", K, hidden=(16,))
OPT = train.Optimizer(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
                      total_steps=STEPS)
SPEC = train.StepSpec(model=MODEL, optimizer=OPT.family, num_classes=K)
LAYOUT = step_lib.Layout((N,), (B,))


def _problem(n=N, seed=0):
  """A separable 3-class toy problem: class = the row of a bright pixel of a 4x4 image."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, K, n).astype(np.int32)
  images = rng.integers(0, 60, (n,) + SHAPE).astype(np.uint8)
  images[np.arange(n), labels, 0, 0] = 250
  return jnp.asarray(images), jnp.asarray(labels)


X, Y = _problem()
DATA = dict(image=X, label=Y)


def _stream():
  return train.Stream(DATA, B)


@functools.cache
def _init(model, seed):
  return jax.device_get(train.init_variables(jax.random.key(seed), model, SHAPE))


def _fresh(opt=OPT, seed=0, model=MODEL):
  """A new state, as train.new_state(key(seed), model, SHAPE, opt) makes it (fit donates its
  input, so every run starts from its own)."""
  variables = jax.tree.map(jnp.asarray, _init(model, seed))
  return train.from_variables(variables, optim.init(opt, variables["params"]))


def _assert_same(a, b):
  """Same tree structure and bit-identical leaves."""
  chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))


def _max_diff(a, b):
  a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


@jax.jit
@chex.assert_max_traces(n=1)
def _loop_step(state, data, s):
  """Step ``s`` of a run of SPEC on stream ``data``, as a plain Python loop would make it: the
  epoch's indices, the batch, and apply_update with the key fold_in(KEY, s); also the batch."""
  spe = LAYOUT.steps_per_epoch
  epoch, i = s // spe, s % spe
  idx = step_lib.epoch_indices(KEY, LAYOUT, epoch)
  batch = step_lib.gather_batch(SPEC, LAYOUT, (data,), idx, i, KEY, epoch)
  return step_lib.apply_update(SPEC, state, batch, jax.random.fold_in(KEY, s), None) + (batch,)


@functools.cache
def _run():
  """The states after 0..STEPS steps, and the metrics and batch of every step, of the loop."""
  state = _fresh()
  states, metrics, batches = [jax.device_get(state)], [], []
  for s in range(STEPS):
    state, m, batch = _loop_step(state, DATA, jnp.int32(s))
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
    batches.append(batch)
  return states, metrics, batches


def _trajectory():
  """The states after 0..STEPS steps and the metrics of every step of the Python loop."""
  return _run()[:2]


# Eager: cheaper here than compiling each layout's program.
_indices, _gather = step_lib.epoch_indices, step_lib.gather_batch


@contextlib.contextmanager
def _compiles():
  """The names of the programs XLA compiles inside the block."""
  names = []

  def listen(event, duration, **kwargs):
    del duration
    if event == "/jax/core/compile/backend_compile_duration":
      names.append(kwargs.get("fun_name"))

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


# ----------------------------------------------------------------------------- chunks = steps


@pytest.mark.parametrize("chunk", [1, 7, 25])
def test_fit_chunks_equal_python_loop_of_apply_update(chunk):
  """fit in compiled chunks of 1, 7 (crossing epoch boundaries) and 25 steps gives the state of
  a Python loop of apply_update bit for bit, and the last step's metrics."""
  states, metrics = _trajectory()
  state, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY,
                          chunk_steps=chunk, verbose=False)
  _assert_same(state, states[STEPS])
  assert int(state.step) == STEPS
  assert (info["steps"], info["stop_code"], info["stopped_early"]) == (STEPS, 0, False)
  assert info["loss"] == float(metrics[-1]["loss"])
  assert info["accuracy"] == float(metrics[-1]["accuracy"])


@pytest.mark.parametrize("chunk,calls", [(1, [1] * 30), (7, [7] * 5), (25, [25] * 2)])
def test_one_host_sync_per_chunk(chunk, calls, chunk_calls):
  """A run of N steps calls the compiled chunk ceil(N / chunk_steps) times."""
  train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, chunk_steps=chunk,
            verbose=False)
  assert chunk_calls == calls and len(calls) == math.ceil(STEPS / chunk)


def test_max_steps_caps_the_run():
  """max_steps ends the run at exactly that step (the state of the loop at step 5)."""
  states, _ = _trajectory()
  state, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, max_steps=5,
                          chunk_steps=1, verbose=False)
  _assert_same(state, states[5])
  assert info["steps"] == 5 and not info["stopped_early"]


def test_fit_continues_from_the_state_step():
  """A second fit counts its epochs from the state's step: 1 epoch then 2 epochs = 9 steps."""
  state, _ = train.fit(_fresh(), _stream(), spec=SPEC, epochs=1, key=KEY, chunk_steps=1,
                       verbose=False)
  state, info = train.fit(state, _stream(), spec=SPEC, epochs=2, key=KEY, chunk_steps=1,
                          verbose=False)
  assert info["steps"] == 6 and int(state.step) == 9


# ----------------------------------------------------------------------------- old engine


def _old_engine(monkeypatch, tmp_path):
  """tmu_jax/engine.py as it was before the redesign, imported from git history."""
  try:
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                                    timeout=60)
    rev = git("log", "--diff-filter=D", "--format=%H", "-1", "--", "tmu_jax/engine.py")
    src = git("show", f"{rev.stdout.strip()}^:tmu_jax/engine.py") if rev.stdout.strip() else rev
  except (OSError, subprocess.SubprocessError):
    pytest.skip("no git")
  if not rev.stdout.strip() or src.returncode != 0:
    pytest.skip("the old engine is not in this checkout's history")
  path = tmp_path / "old_engine.py"
  path.write_text(src.stdout)
  spec = importlib.util.spec_from_file_location("old_engine", path)
  module = importlib.util.module_from_spec(spec)
  monkeypatch.setitem(sys.modules, "old_engine", module)
  spec.loader.exec_module(module)
  return module


def test_new_engine_equals_old_engine(monkeypatch, tmp_path):
  """SGD with momentum, coupled weight decay and the step schedule over 30 steps: the new
  engine's params equal the old engine's bit for bit (max |Δ| = 0), and so does the last loss."""
  old = _old_engine(monkeypatch, tmp_path)
  new, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, verbose=False)
  tx = old.make_optimizer("sgd", OPT.lr, momentum=OPT.momentum, weight_decay=OPT.weight_decay,
                          schedule="step", total_steps=STEPS)
  state = old.create_train_state(jax.random.key(0), MODEL, SHAPE, tx)
  ref, ref_info = old.fit(state, old.Stream(DATA, B), spec=old.StepSpec(num_classes=K),
                          epochs=EPOCHS, key=KEY, verbose=False)
  assert _max_diff(new.params, ref.params) == 0.0
  assert info["steps"] == ref_info["steps"] == STEPS
  assert info["loss"] == ref_info["loss"]


# ----------------------------------------------------------------------------- stop rules


def _rule_fn(spec, variables, aux, step):
  """1 once the step count reaches aux['at']; 2 once Σθ² of the output layer reaches
  aux['norm']; else 0."""
  del spec
  norm = _output_norm(variables["params"])
  return jnp.where(step >= aux["at"], 1, jnp.where(norm >= aux["norm"], 2, 0)).astype(jnp.int32)


def _output_norm(params):
  return sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(params["Dense_1"]))


def _aux(at=10 ** 6, norm=np.inf):
  return dict(at=jnp.int32(at), norm=jnp.float32(norm))


# Checked before the first step and after every even step (one compiled program for all).
RULE = train.StopRule(_rule_fn, every=2, check_start=True)


@pytest.mark.parametrize("at,stop,calls", [(6, 6, 1), (5, 6, 1), (7, 8, 2), (12, 12, 2)])
def test_stop_rule_on_the_step_count(at, stop, calls, chunk_calls):
  """A rule true from step ``at``, checked after even steps only, stops at the first even step
  ≥ at: mid chunk (6), not at an odd step (5 → 6), across a chunk end (7 → 8) or at an epoch
  start in the second chunk (12). The state is exactly the loop's at that step (no more steps
  run in the chunk), with the rule's code, after ``calls`` chunk calls of 7 steps."""
  states, _ = _trajectory()
  state, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY,
                          aux=_aux(at=at), stop=RULE, chunk_steps=7, verbose=False)
  _assert_same(state, states[stop])
  assert (info["steps"], info["stop_code"], info["stopped_early"]) == (stop, 1, True)
  assert len(chunk_calls) == calls


def test_stop_rule_on_the_params():
  """A rule on a condition of the params stops at the first checked (even) step where it holds,
  found on the loop's trajectory, with that step's state and the rule's code."""
  states, _ = _trajectory()
  norms = [float(_output_norm(s.params)) for s in states]
  k = next(t for t in range(6, STEPS, 2) if norms[t] > max(norms[:t]))
  threshold = (norms[k] + max(norms[:k])) / 2
  assert norms[k] - threshold > 1e-5 * norms[k]  # far from the rounding of the in-graph sum
  state, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY,
                          aux=_aux(norm=threshold), stop=RULE, chunk_steps=7, verbose=False)
  _assert_same(state, states[k])
  assert (info["steps"], info["stop_code"], info["stopped_early"]) == (k, 2, True)


def test_check_start_stops_before_any_step(chunk_calls):
  """With check_start, a rule that holds at the start stops before the first step: the initial
  state, 0 steps, one chunk call."""
  state, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY,
                          aux=_aux(at=0), stop=RULE, chunk_steps=7, verbose=False)
  _assert_same(state, _fresh())
  assert (info["steps"], info["stop_code"], info["stopped_early"]) == (0, 1, True)
  assert chunk_calls == [7]


def test_rule_that_never_fires_runs_to_the_end():
  """A rule that stays 0 changes nothing: the loop's final state, stop_code 0."""
  states, _ = _trajectory()
  state, info = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, aux=_aux(),
                          stop=RULE, chunk_steps=7, verbose=False)
  _assert_same(state, states[STEPS])
  assert (info["steps"], info["stop_code"], info["stopped_early"]) == (STEPS, 0, False)


def test_nan_loss_raises_nonfinite_loss():
  """A diverging run raises NonFiniteLoss (a RunFault) at the first chunk's end."""
  opt = train.Optimizer(lr=1e30, momentum=0.9, weight_decay=5e-4, schedule="step",
                        total_steps=STEPS)
  with pytest.raises(train.NonFiniteLoss, match=r"^train: the loss became nan by step 7$") as e:
    train.fit(_fresh(opt), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, chunk_steps=7,
              verbose=False)
  assert isinstance(e.value, RunFault)


# ----------------------------------------------------------------------------- one compilation


def test_optimizer_values_do_not_retrace():
  """lr, momentum, weight decay and schedule length are state: stepping states of a grid of
  them reuses the one trace of the update (chex.assert_max_traces(n=1) on _loop_step), fit
  compiles no new chunk program, and the values act (lr 0 leaves the params unchanged)."""
  _trajectory()  # the one trace of _loop_step
  train.fit(_fresh(), _stream(), spec=SPEC, epochs=1, key=KEY, chunk_steps=1, verbose=False)
  finals = []
  for lr, momentum, wd, total in [(0.0, 0.9, 5e-4, 30), (0.05, 0.5, 0.0, 10),
                                  (0.3, 0.9, 1e-3, 100)]:
    opt = train.Optimizer(lr=lr, momentum=momentum, weight_decay=wd, schedule="step",
                          total_steps=total)
    assert opt.family == OPT.family
    state = start = _fresh(opt)
    for s in range(3):
      state, _, _ = _loop_step(state, DATA, jnp.int32(s))
    assert optim.hyperparams(state.opt_state) == dict(
        learning_rate=np.float32(lr), momentum=np.float32(momentum),
        weight_decay=np.float32(wd), total_steps=total)
    if lr == 0.0:
      _assert_same(state.params, start.params)
    finals.append(jax.device_get(state.params))
    with _compiles() as compiled:
      train.fit(_fresh(opt), _stream(), spec=SPEC, epochs=1, key=KEY, chunk_steps=1,
                verbose=False)
    assert "jit(_chunk)" not in compiled
  assert _max_diff(finals[1], finals[2]) > 0


def test_committed_start_shares_the_program():
  """A state committed to a device (as a checkpoint restore or a mesh gives) trains with the
  same compiled chunk as an uncommitted one, and to the same state."""
  states, _ = _trajectory()
  train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, chunk_steps=7, verbose=False)
  with _compiles() as compiled:
    state, _ = train.fit(jax.device_put(_fresh(), jax.devices()[0]), _stream(), spec=SPEC,
                         epochs=EPOCHS, key=KEY, chunk_steps=7, verbose=False)
  assert "jit(_chunk)" not in compiled
  _assert_same(state, states[STEPS])


def test_equal_models_give_equal_step_specs():
  """Two separately built equal models and equal optimizer families give equal StepSpecs with
  equal hashes (the compiled update is keyed by value, never by identity)."""
  m1 = get_model("mlp", 10, (0.5,), (0.5,), hidden=(16,))
  m2 = get_model("mlp", 10, (0.5,), (0.5,), hidden=(16,))
  s1 = train.StepSpec(model=m1, optimizer=train.Optimizer(lr=0.1).family)
  s2 = train.StepSpec(model=m2, optimizer=train.Optimizer(lr=0.7, weight_decay=1e-3,
                                                          total_steps=9).family)
  assert m1 is not m2 and s1 == s2 and hash(s1) == hash(s2)
  assert s1 != s1.replace(optimizer=train.Optimizer(momentum=0.0).family)
  assert s1 != train.StepSpec(model=get_model("mlp", 10, hidden=(8,)))


# ----------------------------------------------------------------------------- batches


# Two streams, as L2UL / NegGrad+ / random-label methods mix them: stream 0 (the epoch) with
# weights, relabel flags and a key stream 1 lacks; stream 1 (7 rows, cycled) ascends and relabels.
W0 = jnp.asarray(1.0 + np.arange(N) % 3, jnp.float32)
FLAGS0 = jnp.asarray(np.arange(N) % 4 != 0)
TWO = (dict(DATA, weight=W0, relabel=FLAGS0, soft=jnp.ones((N, K))),
       dict(image=X[:7], label=Y[:7], weight=-jnp.ones(7), relabel=jnp.ones(7, bool)))
TWO_LAYOUT = step_lib.Layout((N, 7), (B, 4))


def _two_batch(i, epoch):
  idx = _indices(KEY, TWO_LAYOUT, jnp.int32(epoch))
  return idx, _gather(SPEC, TWO_LAYOUT, TWO, idx, jnp.int32(i), KEY, jnp.int32(epoch))


def test_epoch_indices_and_the_masked_last_batch():
  """Each stream's epoch rows are a permutation of it followed by the next one's start; the
  batch is stream 0's rows then stream 1's, with only the keys both have; stream 0's wrapped
  rows in the last batch get weight 0 (times its own weights)."""
  assert train.steps_per_epoch(tuple(train.Stream(d, b) for d, b in zip(TWO, (B, 4)))) == 3
  idx, batch = _two_batch(2, 0)
  assert idx[0].shape == (3, B) and idx[1].shape == (3, 4) and idx[0].dtype == jnp.int32
  for rows, n in zip(idx, (N, 7)):
    flat = np.asarray(rows).ravel()
    assert sorted(flat[:n]) == list(range(n))
    assert len(set(flat[n:2 * n])) == len(flat[n:2 * n])  # the next permutation's start
  assert set(batch) == {"image", "label", "weight"}
  rows = np.concatenate([np.asarray(idx[0][2]), np.asarray(idx[1][2])])
  np.testing.assert_array_equal(batch["image"], np.concatenate([X[idx[0][2]], X[:7][idx[1][2]]]))
  valid = np.array([1.0] * 26 + [0.0] * 6, np.float32)
  np.testing.assert_array_equal(batch["weight"],
                                np.concatenate([np.asarray(W0)[rows[:B]] * valid, -np.ones(4)]))
  _, first = _two_batch(0, 0)
  np.testing.assert_array_equal(first["weight"][:B], np.asarray(W0)[np.asarray(idx[0][0])])
  idx1, _ = _two_batch(0, 1)
  assert not np.array_equal(idx[0], idx1[0])  # a new permutation every epoch


def test_small_stream_rows_are_one_op_with_the_unrolled_values():
  """A 7-example stream over a 50-step epoch needs 22 permutations: its rows are the 22
  fold_in-keyed permutations concatenated (values pinned against the per-permutation form), and
  the graph holds as many sorts as a 2-permutation stream's (one vmapped op, not 22 unrolled:
  unrolled, a 100-image forget stream took 35 s to compile)."""
  rows = step_lib._stream_rows(KEY, 7, 3, 50)
  want = np.concatenate([np.asarray(jax.random.permutation(jax.random.fold_in(KEY, r), 7))
                         for r in range(22)])[:150].reshape(50, 3)
  np.testing.assert_array_equal(rows, want)
  sorts = lambda steps: str(jax.make_jaxpr(
      lambda k: step_lib._stream_rows(k, 7, 3, steps))(KEY)).count(" sort[")
  assert sorts(50) == sorts(4) >= 1


SGD0 = train.Optimizer(lr=0.1, momentum=0.0)  # plain SGD: the update is −lr·g
SPEC0 = train.StepSpec(model=MODEL, optimizer=SGD0.family, num_classes=K)
_update = jax.jit(step_lib.apply_update, static_argnums=0)


def _ce(params, images, labels):
  logits, _ = MODEL.apply({"params": params}, images.astype(jnp.float32) / 255.0)
  return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def test_padded_rows_do_not_count():
  """The loss of an epoch's last batch (26 real rows, 6 wrapped) is the mean over its real rows
  and its accuracy counts them only."""
  states, metrics = _trajectory()
  batch, m = _run()[2][2], metrics[2]  # step 2: the last of epoch 0
  real = np.asarray(batch["weight"]) == 1
  assert real.sum() == 26 and np.all(np.asarray(batch["weight"])[~real] == 0)
  x, y = batch["image"][real], batch["label"][real]
  params = states[2].params
  np.testing.assert_allclose(m["loss"], _ce(params, x, y).mean(), rtol=1e-6)
  logits, _ = MODEL.apply({"params": params}, x.astype(jnp.float32) / 255.0)
  assert float(m["accuracy"]) == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)),
                                               abs=1e-7)


def test_weights_scale_the_loss_and_negative_weights_ascend():
  """Loss = Σwℓ / Σ|w|: weights 2 equal the plain mean bit for bit, weights −1 negate it, ∓1 give
  L2UL's (Σ_r ℓ − Σ_f ℓ)/B; a −1 step moves the params by minus the descent step and raises the
  loss."""
  state = _fresh(SGD0)
  x, y = X[:B], Y[:B]
  ce = _ce(state.params, x, y)
  loss = lambda w: _update(SPEC0, state, dict(image=x, label=y, weight=w), KEY, None)
  ones = jnp.ones(B)
  descent, m1 = loss(ones)
  _, m2 = loss(2 * ones)
  ascent, m_neg = loss(-ones)
  sign = np.where(np.arange(B) < 8, -1.0, 1.0).astype(np.float32)
  _, m_mix = loss(jnp.asarray(sign))
  np.testing.assert_allclose(m1["loss"], ce.mean(), rtol=1e-6)
  assert float(m2["loss"]) == float(m1["loss"])
  assert float(m_neg["loss"]) == -float(m1["loss"])
  np.testing.assert_allclose(m_mix["loss"], (ce[8:].sum() - ce[:8].sum()) / B, rtol=1e-5)
  up = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), ascent.params, state.params)
  down = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), descent.params, state.params)
  chex.assert_trees_all_close(up, jax.tree.map(np.negative, down), atol=1e-7, rtol=0)
  assert _ce(ascent.params, x, y).mean() > ce.mean() > _ce(descent.params, x, y).mean()


def test_relabel_never_the_true_label_and_fixed_within_an_epoch():
  """relabel draws a label ≠ y per example, keyed by (stream, epoch, example): the same within an
  epoch (even for a row drawn twice), new the next epoch, untouched where the flag is off; the
  draw is (y + randint(fold_in(fold_in(fold_in(key, 1 + s), epoch), row), 1, K)) % K."""
  y = np.asarray(Y)
  seen = {}  # (stream, row) -> label drawn in epoch 0
  for i in range(3):
    idx, batch = _two_batch(i, 0)
    for s, (rows, label) in enumerate([(idx[0][i], batch["label"][:B]),
                                       (idx[1][i], batch["label"][B:])]):
      rows, label = np.asarray(rows), np.asarray(label)
      on = np.asarray(TWO[s]["relabel"])[rows]
      assert np.all(label[on] != y[rows][on]) and np.all(label[~on] == y[rows][~on])
      rkey = jax.random.fold_in(jax.random.fold_in(KEY, 1 + s), 0)
      shift = np.asarray(jax.vmap(lambda r: jax.random.randint(jax.random.fold_in(rkey, r), (),
                                                               1, K))(jnp.asarray(rows)))
      np.testing.assert_array_equal(label, np.where(on, (y[rows] + shift) % K, y[rows]))
      for r, l in zip(rows, label):
        assert seen.setdefault((s, r), l) == l
  assert len([r for s, r in seen if s == 1]) == 7  # 12 draws of 7 rows: repeats kept their label
  _, again = _two_batch(0, 0)
  _, later = _two_batch(0, 1)
  np.testing.assert_array_equal(again["label"], _two_batch(0, 0)[1]["label"])
  idx1 = _indices(KEY, TWO_LAYOUT, jnp.int32(1))
  flags, labels = np.asarray(FLAGS0), np.asarray(later["label"])
  redrawn = [labels[j] != seen[(0, r)] for j, r in enumerate(np.asarray(idx1[0][0])) if flags[r]]
  assert any(redrawn)  # a new draw each epoch


def test_new_batches_equal_old_engine_batches(monkeypatch, tmp_path):
  """The two streams' batches over two epochs (indices, redrawn labels, weights with the last
  batch's mask, common keys) equal the old engine's."""
  old = _old_engine(monkeypatch, tmp_path)
  old_streams = (old.Stream(TWO[0], B), old.Stream(TWO[1], 4))
  for epoch in range(2):
    old_idx, valid, steps = old.epoch_indices(KEY, old_streams, epoch)
    assert steps == 3
    for i in range(steps):
      idx, new = _two_batch(i, epoch)
      chex.assert_trees_all_equal(idx, old_idx)
      ref = old._batch(old.StepSpec(num_classes=K), TWO, old_idx, valid, jnp.int32(i), KEY,
                      jnp.int32(epoch))
      chex.assert_trees_all_equal(new, ref)


# ----------------------------------------------------------------------------- optimizers


def test_step_schedule_equals_optax_piecewise_constant():
  """'step' is optax.piecewise_constant_schedule(lr, {⌊T/2⌋: 0.1, ⌊3T/4⌋: 0.1}) at every step,
  for T = 3, 4, 10, 97, 1000."""
  lr = jnp.float32(0.1)
  counts = jnp.arange(1003)
  for total in (3, 4, 10, 97, 1000):
    ours = optim._schedule("step", lr, jnp.int32(total))(counts)
    ref = optax.piecewise_constant_schedule(lr, {int(0.5 * total): 0.1,
                                                 int(0.75 * total): 0.1})(counts)
    np.testing.assert_array_equal(ours, ref)


def test_step_schedule_applies_both_drops_when_they_coincide():
  """For T = 2 both boundaries are step 1 and both ÷10 apply (PyTorch MultiStepLR's repeated
  milestones); a dict keyed by boundary, as the old engine built, kept only one."""
  ours = optim._schedule("step", jnp.float32(1.0), jnp.int32(2))(jnp.arange(3))
  tenth = np.float32(0.1)
  np.testing.assert_array_equal(ours, [np.float32(1.0), tenth * tenth, tenth * tenth])


def test_cosine_schedule_equals_optax_cosine_decay():
  """'cosine' is optax.cosine_decay_schedule(lr, T) (the old engine's) to 3e-8 at lr 0.1 (the
  products are grouped differently)."""
  lr, total = jnp.float32(0.1), 37
  counts = jnp.arange(total + 3)
  ours = optim._schedule("cosine", lr, jnp.int32(total))(counts)
  np.testing.assert_allclose(ours, optax.cosine_decay_schedule(lr, total)(counts), rtol=0,
                             atol=3e-8)
  assert float(ours[0]) == pytest.approx(0.1) and float(ours[-1]) == 0.0


def test_hyperparams_reads_the_stored_values():
  """hyperparams() returns the values of the Optimizer, for plain and masked families, as
  strong-typed arrays (as a checkpoint restores them)."""
  params = {"w": jnp.zeros(3)}
  for masked in (False, True):
    opt = train.Optimizer(lr=0.05, momentum=0.8, weight_decay=1e-3, schedule="cosine",
                          total_steps=77, masked=masked)
    hp = optim.hyperparams(optim.init(opt, params))
    assert hp == dict(learning_rate=np.float32(0.05), momentum=np.float32(0.8),
                      weight_decay=np.float32(1e-3), total_steps=77)
    assert {k: (v.dtype, v.weak_type) for k, v in hp.items()} == dict(
        learning_rate=(jnp.float32, False), momentum=(jnp.float32, False),
        weight_decay=(jnp.float32, False), total_steps=(jnp.int32, False))


def _replay(spec, state):
  """``state`` stepped by apply_update of ``spec`` on the Python loop's 30 batches and keys."""
  batches = _run()[2]
  for s, batch in enumerate(batches):
    state, _ = _update(spec, state, batch, jax.random.fold_in(KEY, s), None)
  return state


def test_masked_family_moves_only_unmasked_weights():
  """Optimizer(masked=True) with a 0/1 mask: masked weights stay bit-identical through 30 steps
  of momentum SGD with weight decay, every unmasked kernel weight moves; an all-ones mask gives
  the unmasked run's params to 1 ulp (the extra multiply changes XLA's fusion)."""
  states, _ = _trajectory()
  opt = train.Optimizer(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
                        total_steps=STEPS, masked=True)
  spec = SPEC.replace(optimizer=opt.family)
  ones = _replay(spec, _fresh(opt))
  chex.assert_trees_all_close(ones.params, states[STEPS].params, atol=1e-7, rtol=2e-7)
  start = _fresh(opt)
  rng = np.random.default_rng(0)
  mask = jax.tree.map(lambda p: jnp.asarray(rng.integers(0, 2, p.shape)), start.params)
  init = jax.device_get(start.params)
  state = _replay(spec, start.replace(opt_state=optim.with_mask(start.opt_state, mask)))
  for p0, p, m in zip(jax.tree.leaves(init), jax.tree.leaves(jax.device_get(state.params)),
                      jax.tree.leaves(jax.device_get(mask))):
    np.testing.assert_array_equal(p[m == 0], p0[m == 0])
    if p0.ndim == 2:  # kernels start non-zero, so weight decay alone moves them
      assert np.all(p[m == 1] != p0[m == 1])


def test_adam_family_equals_optax_adam():
  """The adam family (with coupled weight decay) follows a hand loop of plain optax.adam on the
  same 30 batches to 1e-6."""
  opt = train.Optimizer(name="adam", lr=0.01, weight_decay=1e-4)
  state = _replay(SPEC.replace(optimizer=opt.family), _fresh(opt))
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(0.01))

  @jax.jit
  def hand(params, opt_state, batch):
    def loss(p):
      logits, _ = MODEL.apply({"params": p}, batch["image"].astype(jnp.float32) / 255.0)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
      return jnp.sum(batch["weight"] * ce) / jnp.sum(batch["weight"])
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params = _fresh(opt).params
  opt_state = tx.init(params)
  for batch in _run()[2]:
    params, opt_state = hand(params, opt_state, batch)
  chex.assert_trees_all_close(state.params, params, atol=1e-6, rtol=0)
  assert _max_diff(state.params, _fresh(opt).params) > 1e-2


# ----------------------------------------------------------------------------- predict


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_predict_in_chunks_equals_one_apply(batch_size):
  """predict in chunks of 1, 7 (N = 90 not a multiple) and 1000 (> N) equals one
  model.apply, logits and features, to 1e-6 relative (measured 3e-7: chunked matmuls)."""
  variables = {"params": _trajectory()[0][STEPS].params}
  logits, features = train.predict(MODEL, variables, X, batch_size)
  ref_logits, ref_features = MODEL.apply(variables, X.astype(jnp.float32) / 255.0)
  assert logits.shape == (N, K) and features.shape == (N, 16)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(features, ref_features, rtol=1e-6, atol=1e-6)


def test_accuracy_is_the_percentage_of_correct_argmax():
  """accuracy = 100 · mean(argmax logits = label); logits() is predict's first output."""
  variables = {"params": _trajectory()[0][3].params}
  out = train.logits(MODEL, variables, X, 1000)
  np.testing.assert_array_equal(out, train.predict(MODEL, variables, X, 1000)[0])
  flipped = (Y + (jnp.arange(N) % 2)) % K  # half the labels made wrong
  for labels in (Y, flipped):
    expected = 100.0 * float(np.mean(np.argmax(np.asarray(out), -1) == np.asarray(labels)))
    assert train.accuracy(MODEL, variables, X, labels, 1000) == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- checkpoints


class _BNNet(nn.Module):
  """Dense → BatchNorm → ReLU → Dense: a tiny model with batch statistics (the MLP's shapes)."""

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(16)(x.reshape((x.shape[0], -1)))
    f = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    return nn.Dense(K)(f), f


BN_OPT = train.Optimizer(lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="step",
                         total_steps=12)
BN_SPEC = train.StepSpec(model=_BNNet(), optimizer=BN_OPT.family, num_classes=K, augment=True,
                         pad=1)


def test_checkpoint_round_trip(tmp_path):
  """Checkpointer.save then restore into a differently initialised state gives back every
  array of the state."""
  state, _ = train.fit(_fresh(), _stream(), spec=SPEC, epochs=EPOCHS, key=KEY, verbose=False)
  with checkpoints.Checkpointer(str(tmp_path / "ck")) as ck:
    ck.save(state)
  with checkpoints.Checkpointer(str(tmp_path / "ck")) as ck:
    restored = ck.restore(_fresh(seed=5))
  _assert_same(restored, state)


class _SigtermAtFirstChunk(Progress):
  """Progress that sends this process SIGTERM at its first update (the first chunk's end)."""

  def update(self, step, metrics=None, force=False):
    if not getattr(self, "sent", False):
      self.sent = True
      signal.raise_signal(signal.SIGTERM)
    super().update(step, metrics, force)


def test_resume_after_sigterm_is_bit_identical(tmp_path, monkeypatch):
  """BatchNorm and augmentation, 12 steps in chunks of 4: a run stopped by SIGTERM after step 4
  (mid epoch) saves a checkpoint and re-raises; a new fit resumes from it, runs the last 8 steps
  without compiling anything new and ends with the uninterrupted run's state bit for bit
  (params, batch statistics, optimizer state, step); a finished checkpoint resumes to 0 steps.
  The training time carries over: each resumed fit reports the seconds its checkpoint recorded
  plus its own (RTE's denominator must not restart at 0 after an interruption)."""
  kw = dict(spec=BN_SPEC, epochs=4, key=jax.random.key(7), chunk_steps=4, verbose=False)
  fresh = lambda: _fresh(BN_OPT, model=_BNNet())
  straight, _ = train.fit(fresh(), _stream(), **kw)
  assert _max_diff(straight.batch_stats, fresh().batch_stats) > 0  # BN ran in train mode

  handler = signal.getsignal(signal.SIGTERM)
  with monkeypatch.context() as m:
    m.setattr(loop, "Progress", _SigtermAtFirstChunk)
    with pytest.raises(Terminated):
      train.fit(fresh(), _stream(), checkpointer=checkpoints.Checkpointer(str(tmp_path)), **kw)
  assert signal.getsignal(signal.SIGTERM) is handler  # fit put the caller's handler back

  with checkpoints.Checkpointer(str(tmp_path)) as ck:
    assert ck.latest_step() == 4
    before = ck.elapsed(4)
    assert before > 0 and ck.elapsed(3) == 0.0
    with _compiles() as compiled:  # a restored state (committed, int32) hits the same program
      resumed, info = train.fit(fresh(), _stream(), checkpointer=ck, **kw)
    assert "jit(_chunk)" not in compiled
  assert info["steps"] == 8
  assert info["resumed_seconds"] == before and info["seconds"] > before
  _assert_same(resumed, straight)
  with checkpoints.Checkpointer(str(tmp_path)) as ck:
    final = ck.elapsed(12)
    again, info = train.fit(fresh(), _stream(), checkpointer=ck, **kw)
  assert info["steps"] == 0
  assert final > before and info["resumed_seconds"] == final and info["seconds"] >= final
  _assert_same(again, straight)


def _ctrl_c_in_chunk(m, at_call: int, times: int) -> None:
  """Patches the compiled chunk so that ``times`` Ctrl-Cs arrive during call ``at_call``
  (1-based), after its donated inputs were consumed, as a real Ctrl-C mid-chunk would."""
  real, calls = loop._chunk_jit, []

  def chunk(*args, **kw):
    out = real(*args, **kw)
    calls.append(1)
    if len(calls) == at_call:
      for _ in range(times):
        signal.raise_signal(signal.SIGINT)
    return out
  m.setattr(loop, "_chunk_jit", chunk)


def test_ctrl_c_mid_chunk_stops_at_its_end_and_twice_stops_at_once(tmp_path, monkeypatch,
                                                                     capsys):
  """A Ctrl-C that arrives inside a chunk call (its state already donated) no longer loses the
  state: the chunk finishes, fit saves at its end (step 4) and raises KeyboardInterrupt, and
  resuming ends bit for bit where an uninterrupted run does. Two Ctrl-Cs stop at once, inside
  the chunk: with the state donated there is nothing whole to save, so fit says the last
  checkpoint stands (none yet) instead of crashing on deleted arrays. The caller's SIGINT
  handler is put back each time."""
  kw = dict(spec=BN_SPEC, epochs=4, key=jax.random.key(7), chunk_steps=4, verbose=False)
  fresh = lambda: _fresh(BN_OPT, model=_BNNet())
  straight, _ = train.fit(fresh(), _stream(), **kw)
  handler = signal.getsignal(signal.SIGINT)

  with monkeypatch.context() as m:
    _ctrl_c_in_chunk(m, at_call=1, times=1)
    with pytest.raises(KeyboardInterrupt, match="Ctrl-C"):
      train.fit(fresh(), _stream(), checkpointer=checkpoints.Checkpointer(str(tmp_path / "a")),
                **kw)
  assert signal.getsignal(signal.SIGINT) is handler
  assert "stopping at the end of this chunk" in capsys.readouterr().out
  with checkpoints.Checkpointer(str(tmp_path / "a")) as ck:
    assert ck.latest_step() == 4
    resumed, info = train.fit(fresh(), _stream(), checkpointer=ck, **kw)
  assert info["steps"] == 8
  _assert_same(resumed, straight)

  with monkeypatch.context() as m:
    _ctrl_c_in_chunk(m, at_call=1, times=2)
    with pytest.raises(KeyboardInterrupt):
      train.fit(fresh(), _stream(), checkpointer=checkpoints.Checkpointer(str(tmp_path / "b")),
                **kw)
  assert signal.getsignal(signal.SIGINT) is handler
  assert "the last checkpoint" in capsys.readouterr().out
  with checkpoints.Checkpointer(str(tmp_path / "b")) as ck:
    assert ck.latest_step() is None


class _CtrlCAtLastSave(checkpoints.Checkpointer):
  """A Checkpointer that gets a Ctrl-C during its save of step 12 (the last one)."""

  def save(self, state, force=False, seconds=None):
    super().save(state, force=force, seconds=seconds)
    if int(jax.device_get(state.step)) == 12 and not getattr(self, "sent", False):
      self.sent = True
      signal.raise_signal(signal.SIGINT)


def test_ctrl_c_during_the_last_save_still_stops(tmp_path):
  """A Ctrl-C that lands while the last chunk's state is being saved is not lost: fit raises
  KeyboardInterrupt (the caller then does not mark the model done) with step 12 saved."""
  kw = dict(spec=BN_SPEC, epochs=4, key=jax.random.key(7), chunk_steps=4, verbose=False)
  with pytest.raises(KeyboardInterrupt):
    train.fit(_fresh(BN_OPT, model=_BNNet()), _stream(),
              checkpointer=_CtrlCAtLastSave(str(tmp_path)), **kw)
  with checkpoints.Checkpointer(str(tmp_path)) as ck:
    assert ck.latest_step() == 12


# ----------------------------------------------------------------------------- data parallel


_DP_SCRIPT = """
import sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
import test_train as t
from tmu_jax import train
assert len(jax.devices()) == 4
mesh = train.make_mesh(4)
assert mesh.axis_names == ("models", "data") and mesh.devices.size == 4
state, info = train.fit(t._fresh(), t._stream(), spec=t.SPEC.replace(mesh=mesh), epochs=t.EPOCHS,
                        key=t.KEY, verbose=False)
assert info["steps"] == t.STEPS, info
assert all(len(a.sharding.device_set) == 4 for a in jax.tree.leaves(state.params))
leaves = [np.asarray(a) for a in jax.tree.leaves(state.params)]
np.savez(sys.argv[2], *leaves)
"""


@pytest.fixture(scope="module", autouse=True)
def _data_parallel_run(request, tmp_path_factory):
  """Starts the 4-device run in a subprocess as soon as this module's first test runs, when the
  data-parallel test is selected, so that it overlaps the other tests; yields (process, output)."""
  if not any(item.name == "test_data_parallel_matches_single_device"
             for item in request.session.items):
    yield None
    return
  out = str(tmp_path_factory.mktemp("dp") / "params.npz")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", _DP_SCRIPT, os.path.join(ROOT, "tests"), out],
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  yield proc, out
  if proc.poll() is None:
    proc.kill()
    proc.communicate()


def test_data_parallel_matches_single_device(_data_parallel_run):
  """StepSpec(mesh=make_mesh(4)) on 4 forced CPU devices, the batch of 32 sharded 4 ways, gives
  the one-device params of the same 30 steps to 1e-6 (measured: max |Δ| = 1.2e-7, one ulp,
  from the order of the gradient reduction)."""
  proc, out = _data_parallel_run
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  with np.load(out) as f:
    multi = [f[f"arr_{i}"] for i in range(len(f.files))]
  single = jax.tree.leaves(_trajectory()[0][STEPS].params)
  assert len(multi) == len(single)
  d = max(float(np.max(np.abs(a - b))) for a, b in zip(single, multi))
  print("max |Δparams| 4 devices vs 1:", d)
  assert d <= 1e-6
