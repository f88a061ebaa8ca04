"""Checkpoints: a finished model is reused only when it is intact; a damaged cache means retraining."""

import json
import os
import shutil
from typing import Any

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorstore as ts

from tmu_jax import checkpoints
from tmu_jax.errors import RunFault


class _State(flax.struct.PyTreeNode):
  """The engine's TrainState fields, nothing else."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


class _Net(nn.Module):
  """Dense 128 -> 256 (a 128 KiB kernel: data files bigger than 64 KiB), BatchNorm, Dense -> 10."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train)(nn.Dense(256)(x))
    return nn.Dense(10)(x)


def _state(seed: int = 0, step: int = 7) -> _State:
  """A state whose every leaf is non-trivial: random weights, statistics and momentum."""
  k_init, k_grad, k_stats = jax.random.split(jax.random.key(seed), 3)
  variables = _Net().init(k_init, jnp.zeros((1, 128)))
  params = variables["params"]
  tx = optax.sgd(0.1, momentum=0.9)
  grads = jax.tree.map(lambda p: jax.random.normal(k_grad, p.shape), params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  stats = jax.tree.map(lambda s: s + jax.random.uniform(k_stats, s.shape), variables["batch_stats"])
  return _State(jnp.int32(step), params, stats, opt_state)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A pristine finished run (steps 3 and 7, done at 7); tests damage copies of it."""
  path = str(tmp_path_factory.mktemp("pristine") / "run")
  with checkpoints.Checkpointer(path) as ck:
    ck.save(_state(step=3))
    ck.save(_state(step=7))
    ck.mark_done(dict(time_s=1.5, steps=7, final_loss=float("nan")), _state(step=7))
  return path


@pytest.fixture
def run(finished, tmp_path):
  """A fresh copy of the finished run."""
  path = str(tmp_path / "run")
  shutil.copytree(finished, path)
  return path


def _restore_done(path: str):
  with checkpoints.Checkpointer(path) as ck:
    return ck.restore_done(_state(seed=5, step=0))


def _assert_retrains(path: str, capfd, what: str) -> None:
  """The damaged run restores as None with one stderr line naming ``what``, and is deleted."""
  capfd.readouterr()
  assert _restore_done(path) is None
  err = capfd.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert what in err[0] and "will be retrained" in err[0], err[0]
  assert not os.path.exists(os.path.join(path, "done.json"))
  left = os.listdir(path) if os.path.isdir(path) else []
  assert not [name for name in left if name.isdigit()], left


def _value_ranges(step_dir: str) -> list[tuple[str, int, int]]:
  """(file, offset, length) of every array chunk stored out of line in the OCDBT data files."""
  base = os.path.join(step_dir, "default")
  kv = ts.KvStore.open({"driver": "file", "path": base + "/"}).result()
  manifest = ts.ocdbt.dump(kv).result()
  nodes, ranges = [manifest["versions"][-1]["root"]["location"]], []
  while nodes:
    for entry in ts.ocdbt.dump(kv, nodes.pop()).result()["entries"]:
      if "node" in entry:
        nodes.append(entry["node"]["location"])
      elif "indirect_value" in entry:
        _, prefix, name, offset, length = entry["indirect_value"].split(":")
        ranges.append((os.path.join(base, prefix, name), int(offset), int(length)))
  assert ranges, "the test net is meant to have chunks stored out of line"
  return ranges


def _overwrite(path: str, offset: int, data: bytes) -> None:
  with open(path, "r+b") as f:
    f.seek(offset)
    old = f.read(len(data))
    assert old != data and len(old) == len(data)
    f.seek(offset)
    f.write(data)


# ----------------------------------------------------------------------------- clean reuse


def test_clean_finished_run_restores_bit_identically(run, capfd):
  restored = _restore_done(run)
  want = _state(step=7)
  chex.assert_trees_all_equal(restored.params, want.params)
  chex.assert_trees_all_equal(restored.batch_stats, want.batch_stats)
  chex.assert_trees_all_equal(restored.opt_state, want.opt_state)
  assert int(restored.step) == 7
  assert checkpoints.tree_digest(checkpoints._savable(restored)) == checkpoints.tree_digest(
      checkpoints._savable(want))
  assert "retrained" not in capfd.readouterr().err


def test_done_json_is_strict_and_records_step_and_digest(run):
  with open(os.path.join(run, "done.json")) as f:
    record = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
  assert record["final_step"] == 7
  assert record["weights_sha256"] == checkpoints.weights_digest(_state(step=7))
  assert record["metadata"] == dict(time_s=1.5, steps=7, final_loss=None)
  assert not [n for n in os.listdir(run) if n.startswith(".done.json")]  # no temp file left
  with checkpoints.Checkpointer(run) as ck:
    assert ck.restore_done(_state(seed=5)) is not None
    assert ck.done_metadata() == dict(time_s=1.5, steps=7, final_loss=None)


def test_digest_ignores_container_order_but_not_values():
  a = _state()
  shuffled = a.replace(params=dict(reversed(list(a.params.items()))))
  assert checkpoints.weights_digest(shuffled) == checkpoints.weights_digest(a)
  bumped = jax.tree.map(lambda x: x.at[(0,) * x.ndim].add(1e-7), a.params)
  assert checkpoints.weights_digest(a.replace(params=bumped)) != checkpoints.weights_digest(a)


# ----------------------------------------------------------------------------- damage


def test_64k_random_bytes_in_largest_file(run, capfd):
  files = [os.path.join(r, n) for r, _, names in os.walk(os.path.join(run, "7")) for n in names]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  # OCDBT compresses (the 128 KiB kernel stores as ~122 KiB) and how many arrays share a data
  # file depends on write concurrency, so the largest file holds at least one ~120 KiB chunk but
  # not necessarily two: 64 KiB written from that chunk's start stay inside it.
  chunk = max((r for r in _value_ranges(os.path.join(run, "7")) if r[0] == largest),
              key=lambda r: r[2])
  assert chunk[2] > 65536, chunk
  offset = chunk[1]
  _overwrite(largest, offset, np.random.default_rng(0).bytes(65536))
  _assert_retrains(run, capfd, "step 7")


def _four_byte_targets(step_dir: str) -> list[tuple[str, int]]:
  """Offsets inside every out-of-line chunk (start, middle, end), the root b-tree node and the
  JSON metadata files: places whose change alters weights or makes the checkpoint unreadable."""
  targets = []
  for path, offset, length in _value_ranges(step_dir):
    targets += [(path, offset + 8), (path, offset + length // 2), (path, offset + length - 8)]
  base = os.path.join(step_dir, "default")
  root = [os.path.join(base, "d", n) for n in os.listdir(os.path.join(base, "d"))]
  for path in root + [os.path.join(base, "_METADATA"),
                      os.path.join(base, "array_metadatas", "process_0")]:
    targets.append((path, os.path.getsize(path) // 2))
  return targets


def test_4_byte_overwrites_each_detected(finished, tmp_path, capfd):
  targets = _four_byte_targets(os.path.join(finished, "7"))
  assert len(targets) >= 8
  for i, (path, offset) in enumerate(targets):
    run = str(tmp_path / f"run{i}")
    shutil.copytree(finished, run)
    _overwrite(os.path.join(run, os.path.relpath(path, finished)), offset, b"\xde\xad\xbe\xef")
    _assert_retrains(run, capfd, "step 7")


def test_missing_final_step_does_not_fall_back_to_an_earlier_one(run, capfd):
  assert os.path.isdir(os.path.join(run, "3"))
  shutil.rmtree(os.path.join(run, "7"))
  _assert_retrains(run, capfd, "final step 7 is missing")
  with checkpoints.Checkpointer(run) as ck:
    assert ck.latest_step() is None  # the earlier step is gone too: nothing unverified resumes


def test_step_folder_holding_another_step(run, capfd):
  shutil.rmtree(os.path.join(run, "7"))
  shutil.copytree(os.path.join(run, "3"), os.path.join(run, "7"))
  _assert_retrains(run, capfd, "restored step is 3, not the final step 7")


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "old_format", "digest"])
def test_damaged_done_json(run, capfd, damage):
  path = os.path.join(run, "done.json")
  with open(path) as f:
    text = f.read()
  if damage == "truncate":
    text = text[:len(text) // 2]
  elif damage == "garble":
    text = text.replace('"final_step"', '"fi\x00al_step"')
  elif damage == "empty":
    text = ""
  elif damage == "old_format":
    text = json.dumps(dict(time_s=1.0, steps=7))
  else:
    record = json.loads(text)
    record["weights_sha256"] = "0" * 64
    text = json.dumps(record)
  with open(path, "w") as f:
    f.write(text)
  what = "weights of step 7 differ" if damage == "digest" else "done.json"
  _assert_retrains(run, capfd, what)


def test_nonfinite_weights_are_never_reused(tmp_path, capfd):
  bad = _state()
  bad = bad.replace(params=dict(bad.params, Dense_1=dict(bad.params["Dense_1"],
                                                          bias=jnp.full((10,), jnp.nan))))
  path = str(tmp_path / "run")
  with checkpoints.Checkpointer(path) as ck:
    ck.save(bad)
    with pytest.raises(RunFault, match="NaN/inf"):
      ck.mark_done({}, bad)
  # A done.json whose digests match NaN weights (written by hand) is still refused.
  checkpoints.atomic_write_json(os.path.join(path, "done.json"), dict(
      format=checkpoints.DONE_FORMAT, final_step=7, metadata={},
      weights_sha256=checkpoints.weights_digest(bad),
      state_sha256=checkpoints.tree_digest(checkpoints._savable(bad))))
  _assert_retrains(path, capfd, "NaN/inf")


def test_after_discarding_the_checkpointer_trains_and_saves_again(run, capfd):
  shutil.rmtree(os.path.join(run, "7"))
  with checkpoints.Checkpointer(run) as ck:
    assert ck.restore_done(_state(seed=5)) is None
    assert ck.latest_step() is None
    ck.save(_state(seed=1, step=9))
    ck.mark_done({"again": True}, _state(seed=1, step=9))
  restored = _restore_done(run)
  chex.assert_trees_all_equal(restored.params, _state(seed=1).params)
  assert int(restored.step) == 9


# ----------------------------------------------------------------------------- periodic saves


def test_unfinished_run_is_kept_for_resume(tmp_path, capfd):
  path = str(tmp_path / "run")
  with checkpoints.Checkpointer(path) as ck:
    ck.save(_state(step=3))
  with checkpoints.Checkpointer(path) as ck:
    assert not ck.is_done()
    assert ck.restore_done(_state(seed=5)) is None
    assert ck.latest_step() == 3
    restored = ck.restore(_state(seed=5, step=0))
  chex.assert_trees_all_equal(restored.params, _state().params)
  assert "retrained" not in capfd.readouterr().err


def test_mark_done_waits_for_pending_saves_and_saves_the_final_state(tmp_path):
  path = str(tmp_path / "run")
  final = _state(step=11)
  with checkpoints.Checkpointer(path) as ck:
    ck.save(_state(step=5))  # asynchronous: still being written when mark_done starts
    ck.mark_done({"steps": 11}, final)  # step 11 was never saved: mark_done saves it
    assert ck.latest_step() == 11
  with open(os.path.join(path, "done.json")) as f:
    record = json.load(f)
  assert record["final_step"] == 11
  assert record["weights_sha256"] == checkpoints.weights_digest(final)
  assert int(_restore_done(path).step) == 11


def test_mark_done_without_state_records_the_latest_save(tmp_path):
  path = str(tmp_path / "run")
  with checkpoints.Checkpointer(path) as ck:
    ck.save(_state(step=4))
    ck.mark_done({"steps": 4, "loss": float("nan")})
    assert ck.is_done() and ck.done_metadata() == {"steps": 4, "loss": None}
  restored = _restore_done(path)
  chex.assert_trees_all_equal(restored.params, _state().params)
  assert int(restored.step) == 4


def test_mark_done_with_nothing_saved_is_a_fault(tmp_path):
  with checkpoints.Checkpointer(str(tmp_path / "run")) as ck:
    with pytest.raises(RunFault, match="no state was saved"):
      ck.mark_done({})
