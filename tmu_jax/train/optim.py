"""Optimizers from optax with their scalars as data (``optax.inject_hyperparams``).

An :class:`Optimizer` names a *family* (``sgd`` with or without momentum, ``adam``; a schedule
shape; an optional update mask) and its *values* (lr, momentum, weight decay, schedule length).
Only the family shapes the compiled update; the values sit in the optimizer state, so runs that
differ only in lr or λ share one compiled program (``chex.assert_max_traces`` pins this).

Weight decay is PyTorch's *coupled* form, ``g + wd·θ`` before momentum
(``optax.add_decayed_weights`` then ``optax.sgd``; METHODS §1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
NAMES = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")


@dataclasses.dataclass(frozen=True)
class Family:
  """What shapes the optimizer's code (hashable; part of the compiled update's key)."""
  name: str = "sgd"
  schedule: str = "constant"
  momentum: bool = True  # SGD with a momentum trace (its value is data)
  masked: bool = False  # multiply every update by a 0/1 mask held in the state (SalUn)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """A family and its values."""
  name: str = "sgd"
  lr: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 0.0
  schedule: str = "constant"
  total_steps: int = 1
  masked: bool = False

  @property
  def family(self) -> Family:
    return Family(self.name, self.schedule, self.name == "sgd" and self.momentum > 0,
                  self.masked)


def _schedule(kind: str, lr: jax.Array, total_steps: jax.Array):
  """``step``: lr ÷10 at 50% and 75% of the steps (METHODS §1); ``cosine``; ``constant``."""
  if kind == "constant":
    return lambda count: lr
  if kind == "step":
    total = total_steps.astype(jnp.float32)
    b1 = jnp.floor(0.5 * total).astype(jnp.int32)
    b2 = jnp.floor(0.75 * total).astype(jnp.int32)

    def step(count):  # the same products as optax.piecewise_constant_schedule
      v = jnp.where(count >= b1, lr * 0.1, lr)
      return jnp.where(count >= b2, v * 0.1, v)
    return step
  if kind == "cosine":
    total = jnp.maximum(total_steps, 1).astype(jnp.float32)
    return lambda count: lr * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count / total, 1.0)))
  raise ValueError(f"unknown schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


def _factory(learning_rate, momentum, weight_decay, total_steps, *, name: str, schedule: str,
             use_momentum: bool):
  rate = _schedule(schedule, learning_rate, total_steps)
  if name == "sgd":
    base = optax.sgd(rate, momentum=momentum if use_momentum else None)
  elif name == "adam":
    base = optax.adam(rate)
  else:
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(NAMES)}")
  return optax.chain(optax.add_decayed_weights(weight_decay), base)


class MaskState(NamedTuple):
  """The 0/1 update mask (a pytree like params); all ones after init."""
  mask: PyTree


def scale_by_mask() -> optax.GradientTransformation:
  """Multiplies every update by ``state.mask`` (SalUn: only salient weights move)."""

  def init(params):
    return MaskState(jax.tree.map(jnp.ones_like, params))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, state.mask), state

  return optax.GradientTransformation(init, update)


def transform(family: Family, opt: Optimizer | None = None) -> optax.GradientTransformation:
  """The optax transformation of ``family``; ``opt`` gives the initial values (for ``init``).

  ``update`` reads the values from the state, so any ``opt`` of the same family gives the same
  update: the compiled step builds this with ``opt=None``.
  """
  opt = opt or Optimizer(name=family.name, schedule=family.schedule)
  inner = optax.inject_hyperparams(_factory, static_args=("name", "schedule", "use_momentum"))(
      learning_rate=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
      # A strong int32, as a checkpoint restores it: a weak-typed int would make a restored
      # state a new jit cache key, compiling the update again on every resume.
      total_steps=jnp.asarray(opt.total_steps, jnp.int32), name=family.name,
      schedule=family.schedule,
      use_momentum=family.momentum)
  return optax.chain(inner, scale_by_mask()) if family.masked else inner


def init(opt: Optimizer, params: PyTree) -> PyTree:
  """The optimizer state of ``opt`` for ``params`` (its values stored as hyperparameters)."""
  return transform(opt.family, opt).init(params)


def with_mask(opt_state: PyTree, mask: PyTree) -> PyTree:
  """The state of a masked family with its update mask set to ``mask`` (0/1, like params)."""
  inner, _ = opt_state
  return (inner, MaskState(jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mask)))


def hyperparams(opt_state: PyTree) -> dict:
  """The stored values (learning_rate, momentum, weight_decay, total_steps)."""
  inner = opt_state[0] if isinstance(opt_state, tuple) and len(opt_state) == 2 and isinstance(
      opt_state[1], MaskState) else opt_state
  return dict(inner.hyperparams)
