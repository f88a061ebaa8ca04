"""The one compiled update: a batch from the streams, the loss, one optimizer step.

A method contributes only

- its *data mixing*: one or more :class:`Stream` s of on-device arrays with per-example
  ``weight`` (negative for gradient ascent) and ``relabel`` flags, and
- its *loss*: a pure ``loss_fn(logits, batch, aux) -> f32[B]`` per-example loss, plus an
  optional ``penalty_fn(params, aux) -> scalar``.

The step loss is ``Σ w_i ℓ_i / Σ |w_i|`` (+ penalty): a plain mean when all weights are 1,
L2UL's ``−CE·B_f/(B_a+B_f) + CE·B_a/(B_a+B_f)`` with weights ∓1 (METHODS §3).

Everything static about a step is one hashable :class:`StepSpec` — the model, the loss, the
optimizer *family* — so equal specs share one compiled program and nothing is keyed on object
identity. Batches are gathered inside the program from index matrices drawn inside it too
(:func:`epoch_indices`); keys derive from ``fold_in(key, epoch)`` and ``fold_in(key, step)``, so a
run resumed from a checkpoint replays exactly the same batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tmu_jax import data as data_lib
from tmu_jax.train import optim
from tmu_jax.train.state import TrainState

LossFn = Callable[[jax.Array, dict, Any], jax.Array]


def cross_entropy(logits: jax.Array, batch: dict, aux: Any = None) -> jax.Array:
  """Per-example softmax cross-entropy with ``batch['label']``: f32[B]."""
  del aux
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])


def binary_cross_entropy(logits: jax.Array, batch: dict, aux: Any = None) -> jax.Array:
  """Per-example sigmoid BCE for a one-logit model (TMU §2.4 label classifier): f32[B]."""
  del aux
  return optax.sigmoid_binary_cross_entropy(logits[:, 0], batch["label"].astype(logits.dtype))


class Stream(NamedTuple):
  """On-device arrays with a common leading axis N, drawn ``batch_size`` at a time.

  Required keys: ``image`` (uint8 or f32) and ``label`` (int32). Optional: ``weight`` f32
  (default 1; negative = gradient ascent), ``relabel`` bool (redraw a label ≠ y every epoch,
  METHODS §2.5 / §4 random labels), and anything a loss reads (e.g. ``soft`` teacher probs).
  Stream 0 defines the epoch; other streams cycle.
  """
  data: dict
  batch_size: int

  @property
  def size(self) -> int:
    return int(self.data["label"].shape[0])


@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Everything static about a step: the key of its one compiled program."""
  model: nn.Module
  optimizer: optim.Family = optim.Family()
  loss_fn: LossFn = cross_entropy
  penalty_fn: Callable | None = None
  augment: bool = False
  pad: int = 4
  flip: bool = True
  bn_train: bool = True  # BatchNorm in train mode (batch statistics, running averages updated)
  num_classes: int = 10
  mesh: Mesh | None = None  # batch-sharded data parallel over mesh axis "data"

  def replace(self, **changes) -> "StepSpec":
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Layout:
  """The static shape of an epoch: each stream's size and batch size, and steps per epoch."""
  sizes: tuple[int, ...]
  batch_sizes: tuple[int, ...]

  @classmethod
  def of(cls, streams: tuple[Stream, ...]) -> "Layout":
    return cls(tuple(s.size for s in streams), tuple(s.batch_size for s in streams))

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.sizes[0] / self.batch_sizes[0])


def steps_per_epoch(streams: tuple[Stream, ...]) -> int:
  """ceil(|stream 0| / its batch size)."""
  return Layout.of(tuple(streams)).steps_per_epoch


def _stream_rows(key: jax.Array, n: int, batch_size: int, steps: int) -> jax.Array:
  """int32[steps, batch_size]: concatenated permutations of range(n), cycled as needed.

  The permutations are one vmapped op, not ``reps`` unrolled ones: a 100-image forget stream
  beside a 468-step retain epoch needs 150 of them, and unrolled they took 35 s to compile
  (neg_grad_plus on the embedded default). The values are the same bit for bit.
  """
  reps = math.ceil(steps * batch_size / n)
  perms = jax.vmap(lambda r: jax.random.permutation(jax.random.fold_in(key, r), n))(
      jnp.arange(reps))
  return perms.reshape(-1)[: steps * batch_size].reshape(steps, batch_size)


def epoch_indices(key: jax.Array, layout: Layout, epoch: jax.Array) -> tuple[jax.Array, ...]:
  """Each stream's index matrix int32[steps_per_epoch, B_s] for ``epoch`` (traceable)."""
  steps = layout.steps_per_epoch
  ekey = jax.random.fold_in(key, epoch)
  return tuple(_stream_rows(jax.random.fold_in(ekey, s), n, b, steps)
               for s, (n, b) in enumerate(zip(layout.sizes, layout.batch_sizes)))


def _relabel(key: jax.Array, labels: jax.Array, index: jax.Array, num_classes: int) -> jax.Array:
  """A uniform label ≠ y per example, fixed within an epoch (keyed by example index)."""
  shift = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 1,
                                                num_classes))(index)
  return (labels + shift) % num_classes


def gather_batch(spec: StepSpec, layout: Layout, streams: tuple[dict, ...],
                 idx: tuple[jax.Array, ...], i: jax.Array, key: jax.Array,
                 epoch: jax.Array) -> dict:
  """Step ``i`` of the epoch from every stream, concatenated into one batch dict."""
  parts = []
  for s, (data, rows) in enumerate(zip(streams, idx)):
    index = jax.lax.dynamic_index_in_dim(rows, i, keepdims=False)
    part = {k: jnp.take(v, index, axis=0) for k, v in data.items()}
    weight = part.get("weight", jnp.ones(index.shape, jnp.float32)).astype(jnp.float32)
    if s == 0:  # the last batch of an epoch may wrap around: count each example once
      position = i * layout.batch_sizes[0] + jnp.arange(layout.batch_sizes[0])
      weight = weight * (position < layout.sizes[0]).astype(jnp.float32)
    part["weight"] = weight
    if "relabel" in part:
      rkey = jax.random.fold_in(jax.random.fold_in(key, 1 + s), epoch)
      part["label"] = jnp.where(part["relabel"],
                                _relabel(rkey, part["label"], index, spec.num_classes),
                                part["label"])
      del part["relabel"]
    parts.append(part)
  keys = set.intersection(*(set(p) for p in parts))
  batch = {k: jnp.concatenate([p[k] for p in parts]) for k in keys}
  if spec.mesh is not None:
    batch = jax.lax.with_sharding_constraint(batch, NamedSharding(spec.mesh, P("data")))
  return batch


def apply_update(spec: StepSpec, state: TrainState, batch: dict, key: jax.Array,
                 aux: Any) -> tuple[TrainState, dict]:
  """One optimizer step of ``spec`` on ``batch``: (new state, metrics loss/accuracy/finite)."""
  images = data_lib.to_float(batch["image"])
  if spec.augment:
    images = data_lib.augment(jax.random.fold_in(key, 0), images, pad=spec.pad, flip=spec.flip)
  weight = batch["weight"]
  batch = dict(batch, input=images)  # what the model sees (augmented), for losses that need it

  def objective(params):
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    if state.batch_stats and spec.bn_train:
      (logits, _), updates = spec.model.apply(variables, images, train=True,
                                              mutable=["batch_stats"])
      new_stats = updates["batch_stats"]
    else:
      logits, _ = spec.model.apply(variables, images, train=False)
      new_stats = state.batch_stats
    per_example = spec.loss_fn(logits, batch, aux)
    chex.assert_equal_shape([per_example, weight])  # [B] · [B], never a [B, B] broadcast
    loss = jnp.sum(weight * per_example) / jnp.maximum(jnp.sum(jnp.abs(weight)), 1e-12)
    if spec.penalty_fn is not None:
      loss = loss + spec.penalty_fn(params, aux)
    return loss, (new_stats, logits)

  (loss, (new_stats, logits)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  tx = optim.transform(spec.optimizer)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  counted = weight != 0
  acc = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * counted) / jnp.maximum(
      jnp.sum(counted), 1)
  metrics = dict(loss=loss, accuracy=acc, finite=jnp.isfinite(loss))
  return state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                       opt_state=opt_state), metrics
