"""Jobs at once on host threads (tmu_jax.concurrent): M_o beside M_g, stopped together."""

import os
import signal
import threading
import time

import chex
import jax
import numpy as np
import pytest

from tmu_jax import checkpoints, concurrent, protocol, train
from tmu_jax.experiment import runs
from tmu_jax.models import get_model
from tmu_jax.progress import Progress
from tmu_jax.train import loop

SHAPE = (4, 4, 1)


def test_jobs_run_at_once_and_return_in_order():
  """Each job waits for the other at a barrier: done one after the other, they would time out."""
  barrier = threading.Barrier(2, timeout=10)
  seen = []

  def job(i):
    def run(cancel):
      barrier.wait()
      seen.append(threading.current_thread() is threading.main_thread())
      return i * 10
    return run

  assert concurrent.run_together([job(0), job(1)]) == [0, 10]
  assert sorted(seen) == [False, True]  # job 0 on the calling thread, job 1 on a worker


def _fit(cancel, directory, epochs, key=3):
  """A tiny MLP fit (3 steps an epoch, chunks of 3 steps) with a checkpointer in ``directory``."""
  rng = np.random.default_rng(0)
  data = dict(image=rng.integers(0, 255, (90,) + SHAPE).astype(np.uint8),
              label=rng.integers(0, 3, 90).astype(np.int32))
  model = get_model("mlp", 3, hidden=(8,))
  opt = train.Optimizer(lr=0.1, momentum=0.9, total_steps=3 * epochs)
  spec = train.StepSpec(model=model, optimizer=opt.family, num_classes=3)
  state = train.new_state(jax.random.key(0), model, SHAPE, opt)
  with checkpoints.Checkpointer(directory) as ck:
    return train.fit(state, train.Stream(data, 32), spec=spec, epochs=epochs,
                     key=jax.random.key(key), checkpointer=ck, chunk_steps=3,
                     save_every_epochs=1000, verbose=False, cancel=cancel)


def test_a_failing_job_stops_the_others_which_save_and_resume_bit_for_bit(tmp_path):
  """A worker's error sets the shared cancel event: the fit on the main thread stops at its next
  chunk boundary, saves its checkpoint there (save_every_epochs would not have saved yet) and
  the worker's own error is what is raised, not the fit's Cancelled. A rerun resumes from
  that checkpoint and ends where an uninterrupted fit ends, bit for bit."""
  def fails(cancel):
    raise ValueError("boom")

  with pytest.raises(ValueError, match="boom"):
    concurrent.run_together([lambda cancel: _fit(cancel, str(tmp_path / "a"), epochs=50),
                             fails])
  with checkpoints.Checkpointer(str(tmp_path / "a")) as ck:
    saved = ck.latest_step()
  assert saved is not None and 0 < saved < 150 and saved % 3 == 0
  resumed, info = _fit(None, str(tmp_path / "a"), epochs=50)
  assert info["steps"] == 150 - saved and info["resumed_seconds"] > 0
  straight, _ = _fit(None, str(tmp_path / "b"), epochs=50)
  chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(straight))


def test_cancelled_alone_is_raised_when_nothing_else_failed():
  def cancelled(cancel):
    raise train.Cancelled("x")

  with pytest.raises(train.Cancelled):
    concurrent.run_together([lambda cancel: 1, cancelled])


def test_concurrent_models_are_bit_identical_to_sequential(tiny, tmp_path):
  """The session's tiny M_o and M_g trained at once (experiment.concurrent_models, the
  default) have the same weights as trained one after the other; each concurrent model's
  time_s is its share of the machine (wall ÷ share, 1 < share <= 2), a sequential one's is its
  wall and says nothing of a share."""
  assert runs.concurrent_here(tiny.config)
  c = tiny.config.copy_and_resolve_references()
  c.experiment.concurrent_models = False
  seq, _, _ = runs.train_models(c, str(tmp_path), tiny.problem)
  assert checkpoints.weights_digest(seq.original) == checkpoints.weights_digest(tiny.original)
  retain = tiny.problem.split.retain
  gold_s, info_s = protocol.train_from_scratch(c, str(tmp_path), tiny.problem, "gold", retain)
  gold_c, info_c = protocol.train_from_scratch(tiny.config, tiny.workdir, tiny.problem, "gold",
                                               retain)
  assert info_s["cached"] and info_c["cached"]
  assert checkpoints.weights_digest(gold_s) == checkpoints.weights_digest(gold_c)
  assert 1.0 < info_c["share"] <= 2.0
  assert info_c["time_s"] == pytest.approx(info_c["wall_s"] / info_c["share"])
  assert "share" not in info_s and "wall_s" not in info_s


def test_saves_on_two_threads_at_once_all_land(tmp_path):
  """Inside checkpoints.one_save_at_a_time, two threads save 15 states each into their own
  folders at once: every save has finished when it returns (no Orbax save is left in flight
  for the other thread's to collide with: Orbax numbers saves with one process-wide counter,
  and such a collision timed out once in bench/concurrent_models.py; it is too rare to
  reproduce in a test), and each folder's latest state reads back bit for bit."""
  w = np.arange(1000, dtype=np.float32)
  state = lambda step, scale: train.TrainState(step=np.asarray(step, np.int32),
                                               params=dict(w=w * scale), batch_stats={},
                                               opt_state=())

  def saver(name):
    def run(cancel):
      with checkpoints.Checkpointer(str(tmp_path / name)) as ck:
        for step in range(1, 16):
          ck.save(state(step, step + (name == "b")))
          assert not ck._manager.is_saving_in_progress()  # pylint: disable=protected-access
      return name
    return run

  with checkpoints.one_save_at_a_time():
    assert concurrent.run_together([saver("a"), saver("b")]) == ["a", "b"]
  for name in ("a", "b"):
    with checkpoints.Checkpointer(str(tmp_path / name)) as ck:
      assert ck.latest_step() == 15
      back = ck.restore(state(0, 0))
    np.testing.assert_array_equal(np.asarray(back.params["w"]), w * (15 + (name == "b")))


def _sleepy_drive(chunks: int, sharing, seconds: float = 0.05) -> dict:
  """drive over a fake chunk that sleeps ``seconds`` per step (one step a chunk); its timing."""
  def chunk(carry):
    time.sleep(seconds)
    return carry + 1, carry + 1, True, {}, False

  _, _, timing = loop.drive(chunk, 0, state_of=lambda c: c, stopped=lambda c: False, start=0,
                            origin=0, total=chunks, spe=1, save_every_epochs=1,
                            checkpointer=None, progress=Progress("t", chunks, verbose=False),
                            name="t", nonfinite=lambda *a: "", sharing=sharing)
  return timing


def test_sharing_charges_each_fit_its_share_of_the_machine():
  """Two host loops given one Sharing: while both run each is charged half of every second; the
  longer one, alone at the end, is charged its whole time (20 × 50 ms beside 10 × 50 ms: about
  10·0.05/2 + 10·0.05 = 0.75 s of its 1 s wall, the shorter about 0.25 s of 0.5 s). Without a
  Sharing a loop is charged its wall time."""
  sharing = concurrent.Sharing()
  long, short = concurrent.run_together([lambda cancel: _sleepy_drive(20, sharing),
                                         lambda cancel: _sleepy_drive(10, sharing)])
  assert long["wall_seconds"] == pytest.approx(1.0, rel=0.3)
  assert long["seconds"] == pytest.approx(0.75, rel=0.2)
  assert short["seconds"] == pytest.approx(short["wall_seconds"] / 2, rel=0.2)
  alone = _sleepy_drive(10, None)
  assert alone["seconds"] == pytest.approx(alone["wall_seconds"], rel=1e-3)
  assert sharing.active() == 1  # both left


def _ctrl_c_after(*delays: float) -> None:
  """Sends this process SIGINT after each delay (seconds, from a helper thread)."""
  def send():
    for d in delays:
      time.sleep(d)
      os.kill(os.getpid(), signal.SIGINT)
  threading.Thread(target=send, daemon=True).start()


def test_a_ctrl_c_while_waiting_lets_the_worker_finish_its_chunk_and_save():
  """Job 0 is done, the worker trains on: a Ctrl-C sets cancel, and run_together waits until
  the worker has stopped and saved (here 0.3 s after cancel) before it raises the Ctrl-C.
  (A Ctrl-C inside Thread.join can leave is_alive() wrongly False in CPython, which would
  abandon the worker unsaved: the wait must not rely on it.)"""
  saved = []

  def worker(cancel):
    cancel.wait(30)
    time.sleep(0.3)  # the end of its chunk, then the save
    saved.append(True)
    raise train.Cancelled("worker")

  _ctrl_c_after(0.3)
  with pytest.raises(KeyboardInterrupt) as e:
    concurrent.run_together([lambda cancel: None, worker])
  assert saved == [True]
  assert not isinstance(e.value, train.Cancelled)  # the user's Ctrl-C, not the worker's stop


def test_a_second_ctrl_c_while_waiting_for_a_stuck_worker_stops_at_once():
  """Job 0 is done and the worker ignores ``cancel`` (stuck, say, in a compilation): the first
  Ctrl-C sets cancel and waits on, the second raises at once instead of waiting for it."""
  release = threading.Event()

  def stuck(cancel):
    release.wait(30)

  _ctrl_c_after(0.5, 0.5)
  t0 = time.monotonic()
  try:
    with pytest.raises(KeyboardInterrupt):
      concurrent.run_together([lambda cancel: None, stuck])
    assert 0.9 < time.monotonic() - t0 < 10  # the first did not stop the wait, the second did
  finally:
    release.set()
