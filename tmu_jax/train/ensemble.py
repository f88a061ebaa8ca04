"""Ensembles: M members of one model trained as one program (METHODS §5b).

An ensemble is a :class:`TrainState` whose every leaf (step, params, BatchNorm statistics,
optimizer state) carries a leading member axis M. :func:`fit_ensemble` trains all members with
the one compiled update of :mod:`tmu_jax.train.step`, unchanged — the same streams, losses and
stop rules — each member with its own key: its batch order, augmentation and relabel draws
(initialisation is the caller's: :func:`new_ensemble` draws one per member key).

Members share the streams' arrays (held once) and may carry per-member example weights
(``weights``: f32[M, N_s] per stream, multiplied into the stream's own). A weight of 0 removes
an example from a member's loss — gold models of different forget sets can train together — but
not from its batches: a member's epoch still walks the whole stream, so its *effective* batch is
smaller (the loss is normalised by Σ|w| of the batch), and BatchNorm's batch statistics in
train mode still see the removed examples' activations. docs/scale.md states what that changes.

Two ways to run the member axis, chosen by ``how`` (the results agree to float rounding):

- ``"vmap"``: members in lockstep, ``vmap`` of the update inside one ``lax.while_loop``; a
  member whose stop rule fired is frozen (``where``) while the others go on. On a mesh with a
  ``models`` axis the member axis is sharded over devices (``spmd_axis_name``).
- ``"map"``: ``lax.map`` over members, each running the single-model chunk — no wider than one
  model, for compute-bound CPUs (docs/benchmarks.md measures both).

``"auto"`` takes vmap on an accelerator or a ``models`` mesh and map on a single CPU device.
Memory: every member's state is resident (M × state bytes, plus M × activations under vmap);
:func:`member_chunks` splits a large ensemble into groups that fit a byte budget.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from tmu_jax import rng
from tmu_jax.progress import Progress
from tmu_jax.train import loop as loop_lib
from tmu_jax.train import optim
from tmu_jax.train.mesh import models_size
from tmu_jax.train.state import TrainState, new_state
from tmu_jax.train.step import (Layout, StepSpec, Stream, apply_update, epoch_indices,
                                gather_batch)

HOW = ("auto", "vmap", "map")


# ----------------------------------------------------------------------------- member trees


def size(states: TrainState) -> int:
  """The number of members M of an ensemble state."""
  return int(states.step.shape[0])


def stack(states: Sequence[Any]) -> Any:
  """Single-model pytrees → one tree with a leading member axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def broadcast(state: Any, m: int) -> Any:
  """``m`` copies of one model's tree (e.g. M_o, where every unlearning member starts)."""
  return jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x)[None], m, axis=0), state)


def member(states: Any, i: int) -> Any:
  """Member ``i`` of an ensemble tree, as a single-model tree."""
  return jax.tree.map(lambda x: x[i], states)


def members(states: Any, start: int, stop: int) -> Any:
  """Members ``start:stop`` of an ensemble tree."""
  return jax.tree.map(lambda x: x[start:stop], states)


def concat(parts: Sequence[Any]) -> Any:
  """Ensembles → one ensemble, members in order."""
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def member_keys(key: jax.Array, m: int, start: int = 0) -> jax.Array:
  """The keys of members ``start … start+m−1`` under ``key``: member 0 is ``key`` itself (so a
  one-member ensemble is the single model of ``key``), member i > 0 is ``named(key,
  "member/i")``. Member i's key does not depend on M: growing an ensemble keeps its members."""
  return jnp.stack([key if i == 0 else rng.named(key, f"member/{i}")
                    for i in range(start, start + m)])


def new_ensemble(keys: jax.Array, model, input_shape: tuple[int, ...],
                 opt: optim.Optimizer) -> TrainState:
  """One freshly initialised member per key (as :func:`new_state` would make each)."""
  return stack([new_state(k, model, input_shape, opt) for k in keys])


def state_bytes(state: Any) -> int:
  """Bytes of one tree's arrays (of one member, when given a member)."""
  return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state)))


def member_chunks(m: int, member_bytes: int, budget_bytes: int) -> list[tuple[int, int]]:
  """Split ``m`` members into consecutive (start, stop) groups of at most
  ``budget_bytes // member_bytes`` members (at least one per group)."""
  per = max(1, budget_bytes // max(1, member_bytes))
  return [(s, min(m, s + per)) for s in range(0, m, per)]


# ----------------------------------------------------------------------------- compiled chunks


@dataclasses.dataclass(frozen=True)
class _Plan:
  layout: Layout
  stop: loop_lib.StopRule | None
  length: int
  how: str


def _merged(shared: tuple[dict, ...], mine: tuple[dict, ...]) -> tuple[dict, ...]:
  """Each stream's arrays with a member's own fields (its weights multiply the stream's)."""
  out = []
  for s, m in zip(shared, mine):
    d = dict(s)
    if "weight" in m:
      d["weight"] = m["weight"] * s["weight"] if "weight" in s else m["weight"]
    out.append(d)
  return tuple(out)


def _where(mask: jax.Array, a: Any, b: Any) -> Any:
  """Per member: a where mask else b (mask bool[M])."""
  pick = lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y)
  return jax.tree.map(pick, a, b)


def _lockstep(states, codes, idx, fresh, t, shared, mine, keys, aux, origin, total,
              spec: StepSpec, plan: _Plan):
  """``vmap``: all members advance together one step at a time; stopped ones stay frozen."""
  layout, rule = plan.layout, plan.stop
  spe = layout.steps_per_epoch
  axis = "models" if models_size(spec.mesh) > 1 else None
  vmap = functools.partial(jax.vmap, spmd_axis_name=axis)
  check = lambda variables, step: vmap(
      lambda v: rule.fn(spec, v, aux, step).astype(jnp.int32))(variables)
  if rule is not None and rule.check_start:
    codes = jnp.where((t == origin) & (codes == 0), check(states.variables, t), codes)

  def running(carry):
    _, codes, _, t, _, _, k = carry
    return (k < plan.length) & jnp.any(codes == 0) & (t < total)

  def body(carry):
    st, codes, idx, t, finite, _, k = carry
    epoch, i = (t - origin) // spe, (t - origin) % spe
    idx = jax.lax.cond((i == 0) | (fresh & (k == 0)),
                       lambda: vmap(lambda key: epoch_indices(key, layout, epoch))(keys),
                       lambda: idx)

    def one(s, ix, my, key):
      batch = gather_batch(spec, layout, _merged(shared, my), ix, i, key, epoch)
      return apply_update(spec, s, batch, jax.random.fold_in(key, t), aux)

    new, m = vmap(one)(st, idx, mine, keys)
    active = codes == 0
    st = _where(active, new, st)
    # A stopped member's step was computed and thrown away: its metrics are NaN, as under map.
    m = dict(m, loss=jnp.where(active, m["loss"], jnp.nan),
             accuracy=jnp.where(active, m["accuracy"], jnp.nan))
    finite = finite & jnp.all(m["finite"] | ~active)
    t = t + 1
    if rule is not None:
      codes = jax.lax.cond(t % rule.every == 0,
                           lambda: jnp.where(active, check(new.variables, t), codes),
                           lambda: codes)
    return st, codes, idx, t, finite, m, k + 1

  n = codes.shape[0]
  zero = dict(loss=jnp.full((n,), jnp.nan), accuracy=jnp.full((n,), jnp.nan),
              finite=jnp.ones((n,), bool))
  carry = (states, codes, idx, t, jnp.bool_(True), zero, jnp.int32(0))
  states, codes, idx, t, finite, metrics, _ = jax.lax.while_loop(running, body, carry)
  return states, codes, idx, t, finite, metrics


def _sequential(states, codes, idx, fresh, t, shared, mine, keys, aux, origin, total,
                spec: StepSpec, plan: _Plan):
  """``lax.map``: one member after the other, each the single-model chunk of :func:`fit`."""
  single = loop_lib._Plan(plan.layout, plan.stop, plan.length)  # pylint: disable=protected-access

  def one(args):
    s, c, ix, my, key = args
    return loop_lib._chunk(s, c, ix, fresh, _merged(shared, my), key, aux, origin, total,  # pylint: disable=protected-access
                           spec=spec, plan=single)

  states, codes, idx, finite, metrics = jax.lax.map(one, (states, codes, idx, mine, keys))
  return states, codes, idx, jnp.minimum(t + plan.length, total), jnp.all(finite), metrics


def _chunk(states, codes, idx, fresh, t, shared, mine, keys, aux, origin, total, spec, plan):
  """One chunk of every member; ``fresh``: the first chunk of a fit or a resume, which draws
  the current epoch's indices before its first step (see ``train.loop._chunk``)."""
  run = _lockstep if plan.how == "vmap" else _sequential
  return run(states, codes, idx, fresh, t, shared, mine, keys, aux, origin, total, spec, plan)


_chunk_jit = jax.jit(_chunk, static_argnames=("spec", "plan"), donate_argnums=(0, 2))


def resolve_how(how: str, spec: StepSpec) -> str:
  """``"auto"`` → ``"vmap"`` on an accelerator or a ``models`` mesh, ``"map"`` on one CPU."""
  if how not in HOW:
    raise ValueError(f"fit_ensemble: how must be one of {HOW}, got {how!r}")
  if how != "auto":
    return how
  if models_size(spec.mesh) > 1 or jax.default_backend() != "cpu":
    return "vmap"
  return "map"


def _member_fields(weights, streams: tuple[Stream, ...], m: int) -> tuple[dict, ...]:
  if weights is None:
    return tuple({} for _ in streams)
  weights = (weights,) if not isinstance(weights, (tuple, list)) else tuple(weights)
  if len(weights) != len(streams):
    raise ValueError(f"fit_ensemble: {len(weights)} weight arrays for {len(streams)} streams")
  out = []
  for s, w in zip(streams, weights):
    if w is None:
      out.append({})
      continue
    w = jnp.asarray(w, jnp.float32)
    if w.shape != (m, s.size):
      raise ValueError(f"fit_ensemble: member weights must be f32[{m}, {s.size}], got "
                       f"{w.shape}")
    out.append({"weight": w})
  return tuple(out)


def fit_ensemble(states: TrainState, streams: Stream | tuple[Stream, ...], *, spec: StepSpec,
                 epochs: int, keys: jax.Array, weights=None, aux: Any = None,
                 stop: loop_lib.StopRule | None = None, max_steps: int | None = None,
                 checkpointer=None, save_every_epochs: int = 1, chunk_steps: int = 25,
                 name: str = "ensemble", verbose: bool = True, how: str = "auto",
                 cancel=None) -> tuple[TrainState, dict]:
  """Trains the M members of ``states`` as one program; returns (states, info).

  Like :func:`tmu_jax.train.fit` (same budget, stop rule, checkpoints, resume, Ctrl-C,
  ``cancel``), with
  ``keys`` (M keys: member i's batch order, augmentation and relabel draws are those
  ``fit(key=keys[i])`` would draw) and optional per-member ``weights``. A member stops on its
  own when its stop rule fires. ``info``: seconds, steps / stop_code / loss / accuracy per
  member (lists), stopped_early (any member), how.
  """
  streams = (streams,) if isinstance(streams, Stream) else tuple(streams)
  m = size(states)
  keys = jnp.asarray(keys)
  if keys.shape[:1] != (m,):
    raise ValueError(f"fit_ensemble: need {m} member keys, got shape {keys.shape}")
  shared = tuple(s.data for s in streams)
  mine = _member_fields(weights, streams, m)
  layout = Layout.of(streams)
  spe = layout.steps_per_epoch
  how = resolve_how(how, spec)
  steps0 = np.asarray(jax.device_get(states.step))
  if np.any(steps0 != steps0[0]):
    raise ValueError(f"fit_ensemble: members start at different steps {sorted(set(steps0))}")
  origin = int(steps0[0])
  budget = epochs * spe if max_steps is None else min(epochs * spe, max_steps)
  total = origin + budget
  if checkpointer is not None and checkpointer.latest_step() is not None:
    states = checkpointer.restore(states)
  member_steps = np.asarray(jax.device_get(states.step))
  start = int(member_steps.max())
  # A member behind the furthest one had stopped before the checkpoint: it stays stopped
  # (code −1: its own stop code was not saved).
  codes = jnp.asarray(np.where(member_steps < start, -1, 0).astype(np.int32))
  plan = _Plan(layout, stop, max(1, min(chunk_steps, budget)), how)
  if spec.mesh is not None:
    by_member = NamedSharding(spec.mesh, P("models") if models_size(spec.mesh) > 1 else P())
    replicated = NamedSharding(spec.mesh, P())
    shared, aux = jax.device_put((shared, aux), replicated)
    states, codes, mine, keys = jax.device_put((states, codes, mine, keys), by_member)
  else:  # committed (see fit): fresh, restored and grown ensembles hit one program
    by_member = jax.tree.leaves(states)[0].sharding
    states, codes, keys = jax.device_put((states, codes, keys), by_member)
  blank = jax.tree.map(lambda a: np.zeros((m,) + a.shape, a.dtype),
                       loop_lib.blank_indices(keys[0], layout))
  if spec.mesh is not None:
    idx = jax.device_put(blank, by_member)
    fresh, later = jax.device_put((np.bool_(True), np.bool_(False)), replicated)
  else:
    idx, fresh, later = jax.device_put((blank, np.bool_(True), np.bool_(False)), by_member)
  # The step counter is committed like the state (an uncommitted first t would make the first
  # chunk call a second program: measured by bench/ensemble.py before this line existed).
  t = jax.device_put(jnp.int32(start), replicated if spec.mesh is not None else by_member)
  progress = Progress(name, budget, unit="img", unit_per_step=m * sum(layout.batch_sizes),
                      verbose=verbose)
  progress.start(start - origin)

  def chunk(carry):
    states, codes, idx, fresh, t = carry
    states, codes, idx, t, finite, metrics = _chunk_jit(
        states, codes, idx, fresh, t, shared, mine, keys, aux, jnp.int32(origin),
        jnp.int32(total), spec=spec, plan=plan)
    step = int(t)  # the chunk's sync (finite, the stop codes and progress follow it)
    return ((states, codes, idx, later, t), step, bool(finite), metrics,
            bool(jnp.all(codes != 0)))

  def nonfinite(step, metrics, weights):
    del metrics
    return f"{name}: a member's {'weights' if weights else 'loss'} became NaN/inf by step {step}"

  (states, codes, _, _, _), metrics, timing = loop_lib.drive(
      chunk, (states, codes, idx, fresh, t), state_of=lambda c: c[0],
      stopped=lambda c: bool(jnp.any(c[1] != 0)), start=start, origin=origin, total=total,
      spe=spe, save_every_epochs=save_every_epochs, checkpointer=checkpointer,
      progress=progress, name=name, nonfinite=nonfinite,
      shown=lambda m: {k: jnp.nanmean(v) for k, v in m.items() if k != "finite"},
      cancel=cancel)
  codes_host = np.asarray(jax.device_get(codes))
  end_steps = np.asarray(jax.device_get(states.step))
  info = dict(**timing, how=how, members=m,
              steps=[int(s) - start for s in end_steps], stop_code=codes_host.tolist(),
              stopped_early=bool(np.any(codes_host != 0)))
  if metrics is not None:
    info.update(loss=np.asarray(metrics["loss"]).tolist(),
                accuracy=np.asarray(metrics["accuracy"]).tolist())
  return states, info


def fit_members(state_fn, streams, *, spec: StepSpec, epochs: int, keys: jax.Array,
                budget_bytes: int | None = None, weights=None, **kwargs
                ) -> tuple[TrainState, dict]:
  """:func:`fit_ensemble` in groups of members that fit ``budget_bytes`` of state.

  ``state_fn(keys) -> ensemble`` builds the starting states of a group when it starts; groups
  run one after the other and are concatenated. The budget bounds the group in training (its
  states, optimizer states and, under vmap, activations scale with its size); finished groups
  stay resident until the concatenation at the end, which briefly holds all M twice. Without
  a budget it is one group.
  """
  m = int(keys.shape[0])
  if budget_bytes is None or m == 1:
    groups = [(0, m)]
  else:
    one = state_bytes(jax.eval_shape(state_fn, keys[:1]))  # one member, nothing allocated
    groups = member_chunks(m, one, budget_bytes)
  parts, infos = [], []
  for a, b in groups:
    w = None if weights is None else jax.tree.map(lambda x: x[a:b], weights)
    st, info = fit_ensemble(state_fn(keys[a:b]), streams, spec=spec, epochs=epochs,
                            keys=keys[a:b], weights=w, **kwargs)
    parts.append(st)
    infos.append(info)
  info = dict(infos[0], seconds=sum(i["seconds"] for i in infos), groups=len(groups), members=m)
  for k in ("steps", "stop_code", "loss", "accuracy"):
    if k in infos[0]:
      info[k] = [v for i in infos for v in i[k]]
  info["stopped_early"] = any(i["stopped_early"] for i in infos)
  return (parts[0] if len(parts) == 1 else concat(parts)), info


__all__ = ["HOW", "broadcast", "concat", "fit_ensemble", "fit_members", "member",
           "member_chunks", "member_keys", "members", "new_ensemble", "resolve_how", "size",
           "stack", "state_bytes"]
