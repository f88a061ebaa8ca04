"""Orbax checkpoints: cache keys for trained models, periodic saves and resume."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def cache_key(spec: dict[str, Any]) -> str:
  """A short stable hash of a JSON-able description (dataset, arch, recipe, split, seed...)."""
  blob = json.dumps(spec, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _savable(state) -> dict[str, Any]:
  """The array part of a TrainState (its apply_fn and tx are code, not data)."""
  return dict(step=state.step, params=state.params, batch_stats=state.batch_stats,
              opt_state=state.opt_state)


class Checkpointer:
  """A CheckpointManager for one training run in ``directory`` (made absolute).

  ``save`` is asynchronous; ``close`` waits for pending writes (ENVIRONMENT.md: exiting without
  waiting loses the checkpoint). A ``done.json`` marker records that the run finished, with
  whatever metadata the caller passes, so a finished model is reused without retraining.
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, state, force: bool = False) -> None:
    step = int(jax.device_get(state.step))
    if self._manager.latest_step() == step:
      return
    self._manager.save(step, args=ocp.args.StandardSave(_savable(state)), force=force)

  def restore(self, state, step: int | None = None):
    """Restores into the structure of ``state`` (a freshly initialised TrainState)."""
    step = self._manager.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _savable(state))
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return state.replace(**restored)

  @property
  def done_path(self) -> str:
    return os.path.join(self.directory, "done.json")

  def is_done(self) -> bool:
    return os.path.exists(self.done_path)

  def mark_done(self, metadata: dict[str, Any]) -> None:
    self._manager.wait_until_finished()
    with open(self.done_path, "w") as f:
      json.dump(metadata, f, indent=1)

  def done_metadata(self) -> dict[str, Any]:
    with open(self.done_path) as f:
      return json.load(f)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
