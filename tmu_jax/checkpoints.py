"""Orbax checkpoints: cache keys for trained models, periodic saves, resume and verified reuse.

A finished model is reused without retraining only after :meth:`Checkpointer.restore_done`
has checked it against the ``done.json`` written when training finished (final step, sha256 of
the weights and of the whole state). A damaged cache costs a retraining, never a wrong model
and never a crash.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from tmu_jax.errors import RunFault
from tmu_jax.workdir import atomic_write_json, strict_json

DONE_FORMAT = 1  # version of done.json's layout; another value is treated as damaged
DONE_FILE = "done.json"

# Orbax numbers its save operations with one process-wide counter (OperationIdGenerator), so two
# asynchronous saves in flight on two threads wait for each other's signals: here one failed
# with "TimeoutError: Timeout waiting for key 'awaitable_signals_contract_75/
# step_directory_creation'". While trainings run side by side (:func:`one_save_at_a_time`),
# every save takes this lock and finishes before it is released.
_SAVE_LOCK = threading.Lock()
_SERIAL = [0]  # how many one_save_at_a_time blocks are open
_QUIET_LOCK = threading.Lock()
_QUIET: list = [None, 0]  # the hook _quiet_abandoned_reads replaced, and how many are inside


@contextlib.contextmanager
def one_save_at_a_time() -> Iterator[None]:
  """Within the block, :meth:`Checkpointer.save` on any thread is synchronous and exclusive
  (one save in flight in the process); outside it, saves are asynchronous as usual."""
  with _SAVE_LOCK:
    _SERIAL[0] += 1
  try:
    yield
  finally:
    with _SAVE_LOCK:
      _SERIAL[0] -= 1


def cache_key(spec: dict[str, Any]) -> str:
  """A short stable hash of a JSON-able description (dataset, arch, recipe, split, seed...)."""
  blob = json.dumps(spec, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _savable(state) -> dict[str, Any]:
  """The array fields of a TrainState (step, params, batch_stats, opt_state) as a dict."""
  return dict(step=state.step, params=state.params, batch_stats=state.batch_stats,
              opt_state=state.opt_state)


def _abstract(tree) -> Any:
  """``tree`` as ShapeDtypeStructs (with shardings): the target of a restore."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _host_leaves(tree) -> list[tuple[str, np.ndarray]]:
  """(path, host array) of every leaf of ``tree``, sorted by path: an order set by names only."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  leaves = [(jax.tree_util.keystr(p), np.asarray(jax.device_get(x))) for p, x in flat]
  return sorted(leaves, key=lambda kv: kv[0])


def tree_digest(tree) -> str:
  """sha256 (hex) over each leaf's path, dtype, shape and C-order bytes, in sorted path order."""
  h = hashlib.sha256()
  for path, x in _host_leaves(tree):
    h.update(f"{path}|{x.dtype.str}|{x.shape}\n".encode())
    h.update(np.ascontiguousarray(x).tobytes())
  return h.hexdigest()


def _weights(state) -> dict[str, Any]:
  """params and batch_stats of a TrainState (or of its dict from _savable / a restore)."""
  if isinstance(state, dict):
    return dict(params=state["params"], batch_stats=state["batch_stats"])
  return dict(params=state.params, batch_stats=state.batch_stats)


def weights_digest(state) -> str:
  """sha256 of a TrainState's weights (params and batch_stats), see :func:`tree_digest`."""
  return tree_digest(_weights(state))


def nonfinite_weight(state) -> str | None:
  """The path of the first params/batch_stats leaf holding NaN/inf, or None when all are finite."""
  for path, x in _host_leaves(_weights(state)):
    if jnp.issubdtype(x.dtype, jnp.inexact) and not np.isfinite(x).all():
      return path
  return None


def _one_line(e: BaseException) -> str:
  """``Type: first line of the message`` (at most 200 characters) of the root cause of ``e``."""
  while e.__cause__ is not None:
    e = e.__cause__
  text = str(e).strip().splitlines()
  return type(e).__name__ + (f": {text[0][:200]}" if text else "")


@contextlib.contextmanager
def _quiet_abandoned_reads(linger_s: float = 0.5) -> Iterator[None]:
  """Drops the stray tracebacks of a failed Orbax restore, during it and ``linger_s`` after.

  When one read fails, Orbax closes its event loop while other TensorStore reads are in flight;
  as they finish they report "Event loop is closed" through ``sys.unraisablehook`` and asyncio
  logs "exception was never retrieved". The restore's own exception already says what failed,
  and the caller prints one line for it.
  """
  def keep(record: logging.LogRecord) -> bool:
    return "never retrieved" not in record.getMessage()

  log = logging.getLogger("asyncio")
  with _QUIET_LOCK:  # restores on two threads at once (M_o beside M_g): the first one in
    if not _QUIET[1]:  # swaps the hook, the last one out puts it back
      _QUIET[0], sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    _QUIET[1] += 1
  log.addFilter(keep)
  try:
    yield
  except BaseException:
    deadline = time.monotonic() + linger_s
    while time.monotonic() < deadline:
      gc.collect()
      time.sleep(0.05)
    raise
  finally:
    with _QUIET_LOCK:
      _QUIET[1] -= 1
      if not _QUIET[1]:
        sys.unraisablehook = _QUIET[0]
    log.removeFilter(keep)


def _step_of(state) -> int:
  """A state's step; an ensemble's (leading member axis) is its furthest member's."""
  return int(np.max(jax.device_get(state.step)))


class _Damaged(Exception):
  """Why a cached model cannot be reused (one line)."""


class Checkpointer:
  """A CheckpointManager for one training run in ``directory`` (made absolute).

  ``save`` is asynchronous; ``close`` waits for pending writes (ENVIRONMENT.md: exiting without
  waiting loses the checkpoint). ``mark_done`` records that the run finished in ``done.json``:
  the caller's metadata, the final step and digests of the final state; ``restore_done`` reuses
  a finished model only when all of them check out.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.max_to_keep = max_to_keep
    self._template = None  # abstract state of the last save/restore: what mark_done reads back
    self._done: dict[str, Any] | None = None
    with _SAVE_LOCK if _SERIAL[0] else contextlib.nullcontext():
      self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep,
                                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state, force: bool = False, seconds: float | None = None) -> None:
    """Starts an asynchronous save of ``state`` at its step (nothing when that step is saved).

    ``seconds``: the training time that reached this state, across every earlier interrupted
    session of the run; a resumed run reads it back with :meth:`elapsed`, so a model's training
    time (RTE's denominator) does not restart at zero after an interruption. Synchronous
    inside :func:`one_save_at_a_time`."""
    if _SERIAL[0]:
      with _SAVE_LOCK:
        self._save(state, force, seconds)
        self._manager.wait_until_finished()
    else:
      self._save(state, force, seconds)

  def _save(self, state, force: bool, seconds: float | None) -> None:
    self._template = _abstract(_savable(state))
    step = _step_of(state)
    if self._manager.latest_step() == step:
      return
    self._manager.save(step, args=ocp.args.StandardSave(_savable(state)), force=force)
    if seconds is not None:  # kept for the steps Orbax still holds (max_to_keep), and this one
      held = {str(s) for s in self._manager.all_steps()}
      times = {k: v for k, v in self._times().items() if k in held}
      times[str(step)] = float(seconds)
      atomic_write_json(self._times_path, times)

  @property
  def _times_path(self) -> str:
    return os.path.join(self.directory, "elapsed.json")

  def _times(self) -> dict[str, float]:
    try:
      with open(self._times_path) as f:
        times = json.load(f)
      return {str(k): float(v) for k, v in times.items()} if isinstance(times, dict) else {}
    except (OSError, ValueError, TypeError):
      return {}

  def elapsed(self, step: int) -> float:
    """Training seconds recorded by :meth:`save` for the checkpoint at ``step``; 0.0 when none
    was recorded (a fresh run, or a checkpoint written without ``seconds``)."""
    return self._times().get(str(int(step)), 0.0)

  def restore(self, state, step: int | None = None):
    """Restores step ``step`` (default: the latest) into the structure of ``state`` (a freshly
    initialised TrainState). Unverified: a finished model is reused through restore_done."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    self._template = _abstract(_savable(state))
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(self._template))
    return state.replace(**restored)

  @property
  def done_path(self) -> str:
    return os.path.join(self.directory, DONE_FILE)

  def is_done(self) -> bool:
    """Whether a done.json exists (unverified: reuse the model through restore_done)."""
    return os.path.exists(self.done_path)

  def mark_done(self, metadata: dict[str, Any], state=None) -> None:
    """Records in done.json (atomically) that training finished, with ``metadata``.

    Waits for pending saves, then records the final step and the sha256 of the weights and of
    the whole state as read back from disk. With ``state`` (the final TrainState; recommended)
    it is saved first when its step is not, and must read back bit for bit; without it the
    latest saved step is the final one. Raises RunFault when the read-back differs, the weights
    hold NaN/inf, or nothing was saved.
    """
    self._manager.wait_until_finished()
    if state is not None:
      self.save(state, force=True)
      self._manager.wait_until_finished()
    step = self._manager.latest_step()
    if step is None or self._template is None:
      raise RunFault(f"checkpoint {self.directory}: no state was saved, so none can be "
                     f"marked done")
    if state is not None and step != _step_of(state):
      raise RunFault(f"checkpoint {self.directory}: the latest saved step is {step}, not the "
                     f"final step {_step_of(state)}")
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(self._template))
    record = dict(format=DONE_FORMAT, final_step=step,
                  weights_sha256=weights_digest(restored),
                  state_sha256=tree_digest(restored), metadata=metadata)
    if state is not None and tree_digest(_savable(state)) != record["state_sha256"]:
      raise RunFault(f"checkpoint {self.directory}: step {step} did not read back from disk "
                     f"bit for bit")
    bad = nonfinite_weight(restored)
    if bad is not None:
      raise RunFault(f"checkpoint {self.directory}: the final weights hold NaN/inf at {bad}")
    atomic_write_json(self.done_path, record)
    self._done = strict_json(record)  # as a later run reads it back: NaN as None

  def restore_done(self, state):
    """The finished model restored into the structure of ``state``, or None to retrain.

    None without a word when the run has not finished (no done.json). When done.json does not
    parse, the final step is missing or does not restore, the step or a digest differs from the
    record, or a weight is NaN/inf, prints one line saying so to stderr, deletes the damaged
    folder and returns None: a damaged cache is never loaded and never fatal.
    """
    if not os.path.exists(self.done_path):
      return None
    try:
      record = self._read_done()
      restored = self._verified(state, record)
    except _Damaged as e:
      self._discard(str(e))
      return None
    self._done = record
    return restored

  def _read_done(self) -> dict[str, Any]:
    """done.json's record, or _Damaged when it does not parse or lacks a field."""
    try:
      with open(self.done_path, encoding="utf-8") as f:
        record = json.load(f)
    except (OSError, ValueError) as e:
      raise _Damaged(f"done.json cannot be read ({_one_line(e)})") from None
    if not (isinstance(record, dict) and record.get("format") == DONE_FORMAT
            and type(record.get("final_step")) is int
            and isinstance(record.get("weights_sha256"), str)
            and isinstance(record.get("state_sha256"), str)
            and isinstance(record.get("metadata"), dict)):
      raise _Damaged("done.json lacks the final step or the digests (damaged, or written by an "
                     "older version)")
    return record

  def _verified(self, state, record: dict[str, Any]):
    """The final step restored into ``state``'s structure once it matches ``record``."""
    step = record["final_step"]
    if not os.path.isdir(os.path.join(self.directory, str(step))):
      raise _Damaged(f"the final step {step} is missing")
    try:
      with _quiet_abandoned_reads():
        restored = self.restore(state, step)
      got = _step_of(restored)
      weights, whole = weights_digest(restored), tree_digest(_savable(restored))
      bad = nonfinite_weight(restored)
    except Exception as e:  # pylint: disable=broad-except  # any read error means damage
      raise _Damaged(f"restoring step {step} failed ({_one_line(e)})") from None
    if got != step:
      raise _Damaged(f"the restored step is {got}, not the final step {step}")
    if weights != record["weights_sha256"]:
      raise _Damaged(f"the weights of step {step} differ from those recorded when training "
                     f"finished (sha256)")
    if whole != record["state_sha256"]:
      raise _Damaged(f"the optimizer state of step {step} differs from the one recorded when "
                     f"training finished (sha256)")
    if bad is not None:
      raise _Damaged(f"the weights hold NaN/inf at {bad}")
    return restored

  def _discard(self, reason: str) -> None:
    """Says in one stderr line why the cache is unusable, then deletes it and starts afresh."""
    print(f"checkpoint {self.directory}: {reason}; the model will be retrained",
          file=sys.stderr, flush=True)
    try:
      self._manager.close()
    except Exception:  # pylint: disable=broad-except  # a damaged manager must not block this
      pass
    shutil.rmtree(self.directory, ignore_errors=True)
    self._done = None
    self._manager = self._open()

  def done_metadata(self) -> dict[str, Any]:
    """The metadata the caller passed to mark_done (an older done.json: its whole content)."""
    record = self._done
    if record is None:
      with open(self.done_path, encoding="utf-8") as f:
        record = json.load(f)
    if isinstance(record, dict) and record.get("format") == DONE_FORMAT:
      return dict(record["metadata"])
    return record

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

