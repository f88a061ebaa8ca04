"""The one training engine: TrainState, optimizers, a jitted step, ``fit`` and ``predict``.

Original, gold, twin, curriculum and label models, and every unlearning method, train through
:func:`fit`. A method contributes only

- its *data mixing*: one or more :class:`Stream` s of on-device arrays with per-example
  ``weight`` (negative for gradient ascent) and ``relabel`` flags, and
- its *loss*: a pure ``loss_fn(logits, batch, aux) -> f32[B]`` per-example loss, plus an optional
  ``penalty_fn(params, aux) -> scalar``.

The step loss is ``Σ w_i ℓ_i / Σ |w_i|`` (+ penalty): a plain mean when all weights are 1,
L2UL's ``−CE·B_f/(B_a+B_f) + CE·B_a/(B_a+B_f)`` with weights ∓1 (METHODS §3).

Data stays on device: each epoch's index matrix is drawn on device and every step gathers its
batch inside jit. Keys derive from ``fold_in(key, epoch)`` and ``fold_in(key, step)``, so a run
resumed from a checkpoint replays exactly the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import time
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tmu_jax import data as data_lib
from tmu_jax.progress import Progress

PyTree = Any
LossFn = Callable[[jax.Array, dict, Any], jax.Array]


class TrainState(flax.struct.PyTreeNode):
  """Parameters, BatchNorm statistics and optimizer state; ``apply_fn``/``tx`` are static."""
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def variables(self) -> dict:
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v


def create_train_state(key: jax.Array, model, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> TrainState:
  """Initialises ``model`` on a zero batch of ``input_shape`` (without the batch axis)."""
  variables = model.init(key, jnp.zeros((1,) + tuple(input_shape), jnp.float32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    apply_fn=model.apply, tx=tx)


def with_optimizer(state: TrainState, tx: optax.GradientTransformation) -> TrainState:
  """A *copy* of the weights with a fresh optimizer (step reset): how every method starts
  from M_o. Copying matters: the train step donates its state, which would delete M_o."""
  params = jax.tree.map(jnp.copy, state.params)
  return state.replace(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=jax.tree.map(jnp.copy, state.batch_stats),
                       opt_state=tx.init(params), tx=tx)


# ----------------------------------------------------------------------------- optimizers


def lr_schedule(lr: float, schedule: str, total_steps: int) -> optax.Schedule | float:
  """``step``: lr ÷10 at 50% and 75% of training (METHODS §1); ``constant``; ``cosine``."""
  if schedule == "constant":
    return lr
  if schedule == "step":
    return optax.piecewise_constant_schedule(
        lr, {int(0.5 * total_steps): 0.1, int(0.75 * total_steps): 0.1})
  if schedule == "cosine":
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  raise ValueError(f"unknown schedule {schedule!r}; valid: step, constant, cosine")


@functools.lru_cache(maxsize=256)
def make_optimizer(name: str, lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0,
                   schedule: str = "constant", total_steps: int = 1
                   ) -> optax.GradientTransformation:
  """SGD (or Adam) with PyTorch-style *coupled* weight decay: ``g + wd·θ`` before momentum.

  Cached: equal arguments give the *same* transformation object, so a TrainState built with
  it hits the jit cache of earlier runs instead of compiling the step again.
  """
  rate = lr_schedule(lr, schedule, total_steps)
  if name == "sgd":
    base = optax.sgd(rate, momentum=momentum or None)
  elif name == "adam":
    base = optax.adam(rate)
  else:
    raise ValueError(f"unknown optimizer {name!r}; valid: sgd, adam")
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), base)
  return base


# ----------------------------------------------------------------------------- losses


def cross_entropy(logits: jax.Array, batch: dict, aux: Any = None) -> jax.Array:
  """Per-example softmax cross-entropy with ``batch['label']``: f32[B]."""
  del aux
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])


def binary_cross_entropy(logits: jax.Array, batch: dict, aux: Any = None) -> jax.Array:
  """Per-example sigmoid BCE for a one-logit model (TMU §2.4 label classifier): f32[B]."""
  del aux
  return optax.sigmoid_binary_cross_entropy(logits[:, 0], batch["label"].astype(logits.dtype))


# ----------------------------------------------------------------------------- the step


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
  """Everything static about a step; hashable so equal specs share one compiled program."""
  loss_fn: LossFn = cross_entropy
  penalty_fn: Callable | None = None
  augment: bool = False
  pad: int = 4
  flip: bool = True
  bn_train: bool = True  # BatchNorm in train mode (batch statistics, running averages updated)
  num_classes: int = 10
  masked_update: bool = False  # multiply updates by aux['update_mask'] (SalUn)
  mesh: Mesh | None = None  # batch-sharded data parallel over mesh axis "data"


def _gather(stream_data: dict, idx: jax.Array) -> dict:
  return {k: jnp.take(v, idx, axis=0) for k, v in stream_data.items()}


def _relabel(key: jax.Array, labels: jax.Array, index: jax.Array, num_classes: int) -> jax.Array:
  """A uniform label ≠ y per example, fixed within an epoch (keyed by example index)."""
  shift = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 1,
                                                num_classes))(index)
  return (labels + shift) % num_classes


def _batch(spec: StepSpec, streams: tuple[dict, ...], idx: tuple[jax.Array, ...],
           valid: jax.Array, i: jax.Array, key: jax.Array, epoch: jax.Array) -> dict:
  """Gathers step ``i`` of every stream and concatenates them into one batch."""
  parts = []
  for s, (data, rows) in enumerate(zip(streams, idx)):
    index = jax.lax.dynamic_index_in_dim(rows, i, keepdims=False)
    part = _gather(data, index)
    weight = part.get("weight", jnp.ones(index.shape, jnp.float32)).astype(jnp.float32)
    if s == 0:
      weight = weight * jax.lax.dynamic_index_in_dim(valid, i, keepdims=False)
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


def _train_step(state: TrainState, streams, idx, valid, i, epoch, key, aux, spec: StepSpec):
  """One SGD step on batch ``i`` of the epoch's index matrices; returns (state, metrics)."""
  step_key = jax.random.fold_in(key, state.step)
  batch = _batch(spec, streams, idx, valid, i, key, epoch)
  images = data_lib.to_float(batch["image"])
  if spec.augment:
    images = data_lib.augment(jax.random.fold_in(step_key, 0), images, pad=spec.pad,
                              flip=spec.flip)
  weight = batch["weight"]

  def objective(params):
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    if state.batch_stats and spec.bn_train:
      (logits, _), updates = state.apply_fn(variables, images, train=True,
                                            mutable=["batch_stats"])
      new_stats = updates["batch_stats"]
    else:
      logits, _ = state.apply_fn(variables, images, train=False)
      new_stats = state.batch_stats
    per_example = spec.loss_fn(logits, batch, aux)
    loss = jnp.sum(weight * per_example) / jnp.maximum(jnp.sum(jnp.abs(weight)), 1e-12)
    if spec.penalty_fn is not None:
      loss = loss + spec.penalty_fn(params, aux)
    return loss, (new_stats, logits)

  (loss, (new_stats, logits)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  if spec.masked_update:
    updates = jax.tree.map(lambda u, m: u * m, updates, aux["update_mask"])
  params = optax.apply_updates(state.params, updates)
  counted = weight != 0
  acc = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * counted) / jnp.maximum(
      jnp.sum(counted), 1)
  metrics = dict(loss=loss, accuracy=acc, finite=jnp.isfinite(loss))
  state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                        opt_state=opt_state)
  return state, metrics


train_step = jax.jit(_train_step, static_argnames=("spec",), donate_argnums=(0,))


def _train_chunk(state, streams, idx, valid, i0, epoch, key, aux, spec: StepSpec, length: int):
  """``length`` consecutive steps i0, i0+1, ... in one compiled ``lax.scan``.

  Same keys and batches as calling the single step ``length`` times; it saves the host a
  dispatch per step, which dominates for small models on a GPU.
  """

  def body(st, j):
    return _train_step(st, streams, idx, valid, i0 + j, epoch, key, aux, spec)

  state, metrics = jax.lax.scan(body, state, jnp.arange(length, dtype=jnp.int32))
  return state, jax.tree.map(lambda m: m[-1], metrics)


train_chunk = jax.jit(_train_chunk, static_argnames=("spec", "length"), donate_argnums=(0,))


def _stream_rows(key: jax.Array, n: int, batch_size: int, steps: int) -> jax.Array:
  """int32[steps, batch_size]: concatenated permutations of range(n), cycled as needed."""
  reps = math.ceil(steps * batch_size / n)
  perms = [jax.random.permutation(jax.random.fold_in(key, r), n) for r in range(reps)]
  return jnp.concatenate(perms)[: steps * batch_size].reshape(steps, batch_size)


@jax.jit
def _valid_mask(steps_batch: jax.Array, n: jax.Array) -> jax.Array:
  return (jnp.arange(steps_batch.size).reshape(steps_batch.shape) < n).astype(jnp.float32)


def epoch_indices(key: jax.Array, streams: tuple[Stream, ...], epoch: int
                  ) -> tuple[tuple[jax.Array, ...], jax.Array, int]:
  """Index matrices for one epoch, the validity mask of stream 0 and the number of steps."""
  steps = steps_per_epoch(streams)
  ekey = jax.random.fold_in(key, epoch)
  idx = tuple(_stream_rows(jax.random.fold_in(ekey, s), st.size, st.batch_size, steps)
              for s, st in enumerate(streams))
  valid = _valid_mask(idx[0], streams[0].size)
  return idx, valid, steps


def steps_per_epoch(streams: tuple[Stream, ...]) -> int:
  return math.ceil(streams[0].size / streams[0].batch_size)


# ----------------------------------------------------------------------------- fit


class NonFiniteLoss(RuntimeError):
  """Raised when a step produced a NaN/inf loss (a collapsed run must not pass silently)."""


def fit(state: TrainState, streams: Stream | tuple[Stream, ...], *, epochs: int,
        key: jax.Array, spec: StepSpec = StepSpec(), aux: Any = None, checkpointer=None,
        save_every_epochs: int = 1, name: str = "train", verbose: bool = True,
        stop_fn: Callable[[TrainState], bool] | None = None, stop_every: int = 1,
        max_steps: int | None = None, scan_steps: int = 25) -> tuple[TrainState, dict]:
  """Trains ``state`` for ``epochs`` over ``streams`` with ``spec``; returns (state, info).

  With a ``checkpointer``, resumes from its latest step and saves every ``save_every_epochs``
  epochs, at the end, and on Ctrl-C / SIGTERM (then re-raises). ``stop_fn(state)`` is checked
  every ``stop_every`` steps and ends training early when it returns True; ``max_steps`` caps
  the total number of steps. Without a ``stop_fn``, steps run ``scan_steps`` at a time in one
  compiled scan (the same batches and keys as one at a time). ``info``: steps, seconds, stopped_early, final loss/accuracy.
  """
  streams = (streams,) if isinstance(streams, Stream) else tuple(streams)
  data = tuple(s.data for s in streams)
  if spec.mesh is not None:
    data, state, aux = _replicate(spec.mesh, (data, state, aux))
  spe = steps_per_epoch(streams)
  # Steps count from the state's step on entry, so fit can continue a trained state; a
  # checkpoint holds the absolute step, so a resumed run picks up where it stopped.
  origin = int(jax.device_get(state.step))
  total = origin + (epochs * spe if max_steps is None else min(epochs * spe, max_steps))
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
  start = int(jax.device_get(state.step))
  images_per_step = sum(s.batch_size for s in streams)
  progress = Progress(name, total - origin, unit="img", unit_per_step=images_per_step,
                      verbose=verbose)
  progress.start(start - origin)
  metrics, stopped, t0 = None, False, time.perf_counter()
  interrupted = []
  old_handler = _install_sigterm(interrupted)
  try:
    step = start
    while step < total and not stopped:
      epoch = (step - origin) // spe
      idx, valid, _ = epoch_indices(key, streams, epoch)
      i = step - origin - epoch * spe
      while i < spe:
        if step >= total or interrupted:
          break
        # Chunks of scan_steps steps in one program where no per-step check is needed.
        fits = i + scan_steps <= spe and step + scan_steps <= total
        n = scan_steps if stop_fn is None and fits else 1
        if n > 1:
          state, metrics = train_chunk(state, data, idx, valid, jnp.int32(i), jnp.int32(epoch),
                                       key, aux, spec=spec, length=n)
        else:
          state, metrics = train_step(state, data, idx, valid, jnp.int32(i), jnp.int32(epoch),
                                      key, aux, spec=spec)
        step += n
        i += n
        if stop_fn is not None and step % stop_every == 0 and stop_fn(state):
          stopped = True
          break
        progress.update(step - origin, metrics)
      if interrupted:
        raise KeyboardInterrupt("SIGTERM")
      if metrics is not None and not bool(metrics["finite"]):
        raise NonFiniteLoss(f"{name}: loss became {float(metrics['loss'])} at step {step}")
      if checkpointer is not None and ((step - origin) % (spe * save_every_epochs) == 0
                                       or step >= total):
        checkpointer.save(state)
  except KeyboardInterrupt:
    if checkpointer is not None:
      checkpointer.save(state, force=True)
      checkpointer.close()
      print(f"\n[{name}] interrupted at step {int(jax.device_get(state.step))}; "
            f"checkpoint saved in {checkpointer.directory}", flush=True)
    raise
  finally:
    signal.signal(signal.SIGTERM, old_handler)
  if checkpointer is not None:
    checkpointer.save(state)
  progress.finish()
  info = dict(steps=int(jax.device_get(state.step)) - start,
              seconds=time.perf_counter() - t0, stopped_early=stopped)
  if metrics is not None:
    info.update({k: float(v) for k, v in metrics.items()})
  return state, info


def _install_sigterm(flag: list):
  def handler(signum, frame):
    del signum, frame
    flag.append(True)
  try:
    return signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread
    return signal.getsignal(signal.SIGTERM)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D ``("data",)`` mesh over the first ``num_devices`` devices (all by default)."""
  devices = jax.devices()[: num_devices or len(jax.devices())]
  return Mesh(np.array(devices), ("data",))


def _replicate(mesh: Mesh, tree):
  return jax.device_put(tree, NamedSharding(mesh, P()))


# ----------------------------------------------------------------------------- predict


@jax.jit
def _predict_batch(variables, images, apply_fn_holder):
  logits, features = apply_fn_holder.apply_fn(variables, data_lib.to_float(images), train=False)
  return logits, features


class _ApplyHolder(flax.struct.PyTreeNode):
  apply_fn: Callable = flax.struct.field(pytree_node=False)


def predict(apply_fn: Callable, variables: dict, images: jax.Array, batch_size: int = 1024
            ) -> tuple[jax.Array, jax.Array]:
  """Eval-mode (logits f32[N, K], features f32[N, D]) over ``images`` in fixed-size batches.

  The last batch is padded, so one compiled program serves every call with this batch size.
  """
  n = images.shape[0]
  if n == 0:
    raise ValueError("predict on an empty set")
  holder = _ApplyHolder(apply_fn)
  bs = min(batch_size, n)
  outs = []
  for lo in range(0, n, bs):
    chunk = images[lo:lo + bs]
    if chunk.shape[0] < bs:
      pad = [(0, bs - chunk.shape[0])] + [(0, 0)] * (chunk.ndim - 1)
      chunk = jnp.pad(chunk, pad)
    outs.append(_predict_batch(variables, chunk, holder))
  logits = jnp.concatenate([o[0] for o in outs])[:n]
  features = jnp.concatenate([o[1] for o in outs])[:n]
  return logits, features


def evaluate(state: TrainState, images: jax.Array, labels: jax.Array, batch_size: int = 1024
             ) -> float:
  """Accuracy in percent of ``state`` on (images, labels)."""
  logits, _ = predict(state.apply_fn, state.variables, images, batch_size)
  return float(100.0 * jnp.mean(jnp.argmax(logits, -1) == labels))
