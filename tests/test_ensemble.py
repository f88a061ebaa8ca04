"""Ensembles (tmu_jax.train.ensemble): M members as one program equal M single-model fits with
the same keys, stop on their own, carry per-member weights, compile once per member count,
resume after SIGTERM, and shard over a ``models`` mesh axis.

Measured on this CPU: every comparison with sequential fits is bit-identical (max |Δ| = 0.0),
for vmap and map alike; the tests allow 1e-6 (float re-association in a vmapped matmul).
"""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_train as t
from tmu_jax import checkpoints, train
from tmu_jax.errors import Terminated
from tmu_jax.train import ensemble as E

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = 4
KEYS = E.member_keys(t.KEY, M)
TOL = 1e-6


def _members(seeds=range(M), opt=t.OPT, model=t.MODEL):
  return E.stack([t._fresh(opt, seed=s, model=model) for s in seeds])


def _max_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _sequential(streams=None, **kw):
  out = []
  for i in range(M):
    st, info = train.fit(t._fresh(seed=i), streams or t._stream(), spec=t.SPEC,
                         key=KEYS[i], verbose=False, **kw)
    out.append((st, info))
  return out


def test_member_keys_keep_member_zero_and_do_not_depend_on_m():
  """Member 0's key is the key itself; member i's key is the same in an ensemble of 4 and of 8,
  and all keys differ."""
  k4, k8 = E.member_keys(t.KEY, 4), E.member_keys(t.KEY, 8)
  data = lambda k: np.asarray(jax.random.key_data(k))
  np.testing.assert_array_equal(data(k4[0]), data(t.KEY))
  np.testing.assert_array_equal(data(k4), data(k8[:4]))
  np.testing.assert_array_equal(data(E.member_keys(t.KEY, 4, start=4)), data(k8[4:]))
  assert len({tuple(r) for r in data(k8).reshape(8, -1).tolist()}) == 8


@pytest.mark.parametrize("how", ["vmap", "map"])
def test_ensemble_equals_sequential_fits(how):
  """4 members (own init, own key) trained as one program = 4 train.fit runs with those keys:
  params, optimizer state and steps."""
  seq = _sequential(epochs=t.EPOCHS)
  out, info = E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=t.EPOCHS, keys=KEYS,
                             verbose=False, how=how)
  assert info["steps"] == [t.STEPS] * M and info["how"] == how
  for i, (st, _) in enumerate(seq):
    assert _max_diff(E.member(out, i).params, st.params) <= TOL
    assert _max_diff(E.member(out, i).opt_state, st.opt_state) <= TOL
  assert _max_diff(E.member(out, 0).params, E.member(out, 1).params) > 1e-3  # members differ


def test_one_member_ensemble_is_the_single_model():
  """An ensemble of one, with the key itself, is train.fit's model bit for bit."""
  single, _ = train.fit(t._fresh(), t._stream(), spec=t.SPEC, epochs=t.EPOCHS, key=t.KEY,
                        verbose=False)
  out, _ = E.fit_ensemble(_members([0]), t._stream(), spec=t.SPEC, epochs=t.EPOCHS,
                          keys=E.member_keys(t.KEY, 1), verbose=False, how="vmap")
  t._assert_same(E.member(out, 0), single)


def _loss_below(spec, variables, aux, step):
  """Stops (code 1) once the mean CE on the training set is below aux['limit']."""
  del step
  logits, _ = spec.model.apply(variables, jnp.asarray(aux["x"], jnp.float32) / 255.0,
                               train=False)
  ce = train.cross_entropy(logits, dict(label=aux["y"]))
  return (jnp.mean(ce) < aux["limit"]).astype(jnp.int32)


STOP = train.StopRule(_loss_below, every=1)


@pytest.mark.parametrize("how", ["vmap", "map"])
def test_members_stop_on_their_own(how):
  """With an in-graph stop rule, each member stops at the step its single fit stops at (they
  differ), and its state is the single fit's state at that step."""
  aux = dict(x=t.X, y=t.Y, limit=jnp.float32(0.6))
  seq = _sequential(epochs=t.EPOCHS, aux=aux, stop=STOP, chunk_steps=4)
  steps = [info["steps"] for _, info in seq]
  assert len(set(steps)) > 1 and max(steps) < t.STEPS, steps  # the case is not trivial
  out, info = E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=t.EPOCHS, keys=KEYS,
                             aux=aux, stop=STOP, chunk_steps=4, verbose=False, how=how)
  assert info["steps"] == steps and info["stop_code"] == [1] * M
  for i, (st, _) in enumerate(seq):
    assert _max_diff(E.member(out, i).params, st.params) <= TOL


def test_member_weights_equal_per_model_weighted_streams():
  """Per-member weights f32[M, N] (0 drops an example from that member) give the models that
  single fits on streams carrying those weights give."""
  w = np.ones((M, t.N), np.float32)
  for i in range(M):
    w[i, i * 10:(i + 1) * 10] = 0.0  # member i forgets its own 10 examples
  out, _ = E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=t.EPOCHS, keys=KEYS,
                          weights=jnp.asarray(w), verbose=False, how="vmap")
  for i in range(M):
    stream = train.Stream(dict(t.DATA, weight=jnp.asarray(w[i])), t.B)
    st, _ = train.fit(t._fresh(seed=i), stream, spec=t.SPEC, epochs=t.EPOCHS, key=KEYS[i],
                      verbose=False)
    assert _max_diff(E.member(out, i).params, st.params) <= TOL
  plain, _ = E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=t.EPOCHS, keys=KEYS,
                            verbose=False, how="vmap")
  assert _max_diff(plain.params, out.params) > 1e-3  # the weights did change the members


@pytest.mark.parametrize("how", ["vmap", "map"])
def test_one_trace_per_member_count(how):
  """Ensembles of one size M with other keys, other initialisations and another learning rate
  reuse the one compiled chunk: chex.assert_max_traces(n=1) on the traced chunk body."""
  counted = chex.assert_max_traces(E._chunk, n=1)
  jitted = jax.jit(counted, static_argnames=("spec", "plan"), donate_argnums=(0, 2))
  old = E._chunk_jit
  E._chunk_jit = jitted
  try:
    for seed, lr in [(0, 0.1), (10, 0.05), (20, 0.2)]:
      opt = train.Optimizer(lr=lr, momentum=0.9, weight_decay=5e-4, schedule="step",
                            total_steps=t.STEPS)
      keys = E.member_keys(jax.random.key(seed), M)
      E.fit_ensemble(_members(range(seed, seed + M), opt), t._stream(), spec=t.SPEC, epochs=2,
                     keys=keys, verbose=False, how=how)
  finally:
    E._chunk_jit = old
    chex.clear_trace_counter()


def test_member_chunks_bound_the_resident_members():
  """member_chunks splits M members into groups within a byte budget; fit_members trains the
  groups one after the other and equals one ensemble."""
  assert E.member_chunks(10, 100, 350) == [(0, 3), (3, 6), (6, 9), (9, 10)]
  assert E.member_chunks(3, 100, 10) == [(0, 1), (1, 2), (2, 3)]
  one = E.state_bytes(t._fresh())
  states_fn = lambda keys: E.new_ensemble(keys, t.MODEL, t.SHAPE, t.OPT)
  whole, _ = E.fit_ensemble(states_fn(KEYS), t._stream(), spec=t.SPEC, epochs=2, keys=KEYS,
                            verbose=False, how="vmap")
  grouped, info = E.fit_members(states_fn, t._stream(), spec=t.SPEC, epochs=2, keys=KEYS,
                                budget_bytes=2 * one, verbose=False, how="vmap")
  assert info["groups"] == 2 and info["steps"] == [6] * M
  assert _max_diff(grouped.params, whole.params) <= TOL


def test_ensemble_resumes_after_sigterm(tmp_path, monkeypatch):
  """SIGTERM after the first chunk saves the ensemble; a new fit_ensemble resumes from it and
  ends with the uninterrupted ensemble bit for bit, its training time the interrupted part's
  plus its own."""
  kw = dict(spec=t.SPEC, epochs=4, keys=KEYS, chunk_steps=4, verbose=False, how="vmap")
  straight, _ = E.fit_ensemble(_members(), t._stream(), **kw)
  with monkeypatch.context() as m:
    m.setattr(E, "Progress", t._SigtermAtFirstChunk)
    with pytest.raises(Terminated):
      E.fit_ensemble(_members(), t._stream(),
                     checkpointer=checkpoints.Checkpointer(str(tmp_path)), **kw)
  with checkpoints.Checkpointer(str(tmp_path)) as ck:
    assert ck.latest_step() == 4
    before = ck.elapsed(4)
    resumed, info = E.fit_ensemble(_members(), t._stream(), checkpointer=ck, **kw)
  assert info["steps"] == [8] * M
  assert before > 0 and info["resumed_seconds"] == before and info["seconds"] > before
  t._assert_same(resumed, straight)


def test_bad_inputs_are_one_clear_error():
  with pytest.raises(ValueError, match="member keys"):
    E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=1, keys=KEYS[:2],
                   verbose=False)
  with pytest.raises(ValueError, match=r"f32\[4, 90\]"):
    E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=1, keys=KEYS,
                   weights=jnp.ones((M, 3)), verbose=False)
  with pytest.raises(ValueError, match="how must be"):
    E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=1, keys=KEYS, how="pmap",
                   verbose=False)


_MESH_SCRIPT = """
import sys
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
import test_ensemble as te, test_train as t
from tmu_jax import train
from tmu_jax.train import ensemble as E
assert len(jax.devices()) == 4
out = {}
for models in (4, 2):
  mesh = train.make_mesh(4, models=models)
  assert mesh.axis_names == ("models", "data") and mesh.shape["models"] == models
  states, info = E.fit_ensemble(te._members(), t._stream(), spec=t.SPEC.replace(mesh=mesh),
                                epochs=t.EPOCHS, keys=te.KEYS, verbose=False)
  assert info["how"] == "vmap" and info["steps"] == [t.STEPS] * te.M, info
  leaf = jax.tree.leaves(states.params)[0]
  assert len(leaf.sharding.device_set) == 4, leaf.sharding
  assert leaf.addressable_shards[0].data.shape[0] == te.M // models  # members split by device
  for i, a in enumerate(jax.tree.leaves(states.params)):
    out[f"m{models}_{i}"] = np.asarray(a)
np.savez(sys.argv[2], **out)
"""


def test_models_mesh_matches_one_device(tmp_path):
  """On 4 forced CPU devices, members sharded 4 ways (models=4) and 2×2 (models=2, data=2)
  give the one-device ensemble's params to 1e-6."""
  out = str(tmp_path / "mesh.npz")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, os.path.join(ROOT, "tests"), out],
                        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  single, _ = E.fit_ensemble(_members(), t._stream(), spec=t.SPEC, epochs=t.EPOCHS, keys=KEYS,
                             verbose=False, how="vmap")
  leaves = jax.tree.leaves(single.params)
  with np.load(out) as f:
    for models in (4, 2):
      d = max(float(np.max(np.abs(f[f"m{models}_{i}"] - np.asarray(a))))
              for i, a in enumerate(leaves))
      print(f"max |Δparams| models={models} vs 1 device:", d)
      assert d <= TOL


@pytest.mark.parametrize("how", ["vmap", "map"])
def test_one_compile_across_chunks_and_calls(how):
  """A 3-member ensemble (a size no other test uses) over 6 chunks compiles the chunk program
  once, and a second fit of that size compiles nothing (an uncommitted step counter used to make
  the chunks after the first a second program)."""
  keys = E.member_keys(jax.random.key(5), 3)
  kw = dict(spec=t.SPEC, epochs=2, keys=keys, chunk_steps=1, verbose=False, how=how)
  with t._compiles() as compiled:
    E.fit_ensemble(_members(range(3)), t._stream(), **kw)
  assert compiled.count("jit(_chunk)") == 1, compiled
  with t._compiles() as compiled:
    E.fit_ensemble(_members(range(3, 6)), t._stream(), **kw)
  assert "jit(_chunk)" not in compiled, compiled
