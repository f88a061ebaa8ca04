"""``fit``: steps run in compiled chunks (``lax.while_loop``) with an in-graph stop flag.

One chunk is one call of one compiled program: up to ``chunk_steps`` steps, each drawing its
batch from index matrices that are themselves drawn inside the program at every epoch start. A
:class:`StopRule` runs inside the program after every ``every``-th step; the loop's condition
ends the chunk as soon as the rule fires or the step budget is spent, so the state is exactly
the one at the stop (and no step is computed and thrown away). The host syncs once per chunk: it reads the stop code, the
finiteness flag and the metrics, prints progress and saves checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tmu_jax.concurrent import Cancelled, Sharing
from tmu_jax.errors import RunFault, Terminated
from tmu_jax.progress import Progress
from tmu_jax.train.state import TrainState
from tmu_jax.train.step import (Layout, StepSpec, Stream, apply_update, epoch_indices,
                                gather_batch)

# A stop rule: (spec, variables, aux, step) -> int32 code, 0 = go on; any other value stops and
# is returned to the caller (e.g. 1 = forgotten, 2 = collapsed). Hashable (static).
StopFn = Callable[[StepSpec, dict, Any, jax.Array], jax.Array]


class NonFiniteLoss(RunFault):
  """A step produced a NaN/inf loss (a collapsed run must not pass silently)."""


@dataclasses.dataclass(frozen=True)
class StopRule:
  """``fn`` checked after every step whose (absolute) step count is a multiple of ``every``;
  with ``check_start`` also once before the first step."""
  fn: StopFn
  every: int = 1
  check_start: bool = False


@dataclasses.dataclass(frozen=True)
class _Plan:
  layout: Layout
  stop: StopRule | None
  length: int


def _chunk(state: TrainState, code: jax.Array, idx: tuple[jax.Array, ...], fresh: jax.Array,
           streams: tuple[dict, ...], key: jax.Array, aux: Any, origin: jax.Array,
           total: jax.Array, spec: StepSpec, plan: _Plan):
  """Up to ``plan.length`` steps (fewer if the budget or the stop rule ends them): the carry is
  the state, the stop code, the current epoch's index matrices ``idx`` (passed from chunk to
  chunk, redrawn in the loop at every epoch start, and at the first step when ``fresh``: a fit
  or a resume starting mid-epoch), the all-finite flag, the last step's metrics and the step
  count of the chunk. Drawing the first epoch's indices here, not in a jit of its own, saves a
  compilation per fit (0.4-1.2 s each on the embedded default's CPU, 11 per job)."""
  spe = plan.layout.steps_per_epoch
  rule = plan.stop

  def indices(step):
    return epoch_indices(key, plan.layout, (step - origin) // spe)

  if rule is not None and rule.check_start:
    code = jnp.where((state.step == origin) & (code == 0),
                     rule.fn(spec, state.variables, aux, state.step).astype(jnp.int32), code)

  def running(carry):
    st, code, _, _, _, k = carry
    return (k < plan.length) & (code == 0) & (st.step < total)

  def body(carry):
    st, code, idx, finite, _, k = carry
    epoch = (st.step - origin) // spe
    i = (st.step - origin) % spe
    idx = jax.lax.cond((i == 0) | (fresh & (k == 0)), lambda: indices(st.step), lambda: idx)
    batch = gather_batch(spec, plan.layout, streams, idx, i, key, epoch)
    new, m = apply_update(spec, st, batch, jax.random.fold_in(key, st.step), aux)
    finite = finite & m["finite"]
    if rule is not None:
      check = new.step % rule.every == 0
      code = jax.lax.cond(check, lambda: rule.fn(spec, new.variables, aux, new.step).astype(
          jnp.int32), lambda: code)
    return new, code, idx, finite, m, k + 1

  zero = dict(loss=jnp.float32(jnp.nan), accuracy=jnp.float32(jnp.nan), finite=jnp.bool_(True))
  carry = (state, code, idx, jnp.bool_(True), zero, jnp.int32(0))
  state, code, idx, finite, metrics, _ = jax.lax.while_loop(running, body, carry)
  return state, code, idx, finite, metrics


_chunk_jit = jax.jit(_chunk, static_argnames=("spec", "plan"), donate_argnums=(0, 2))


def blank_indices(key: jax.Array, layout: Layout) -> tuple[jax.Array, ...]:
  """Zero index matrices of the shapes :func:`epoch_indices` draws (no compilation): the
  first chunk of a fit, called with ``fresh``, replaces them before its first step."""
  shapes = jax.eval_shape(lambda k: epoch_indices(k, layout, jnp.int32(0)), key)
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def replicate(mesh: Mesh, tree):
  """``tree`` replicated over every device of ``mesh``."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _install_stop_handlers(flag: list, name: str) -> dict:
  """SIGTERM, and a first Ctrl-C, append to ``flag``: the host loop stops at the end of the
  chunk in flight, with the state whole (a KeyboardInterrupt raised inside a chunk call finds
  its donated state already deleted, so nothing could be saved). A second Ctrl-C raises at
  once; then the checkpoint is the last periodic save. Returns the old handlers (none off the
  main thread, where signals never arrive)."""
  if threading.current_thread() is not threading.main_thread():
    return {}

  def on_term(signum, frame):
    del signum, frame
    flag.append("SIGTERM")

  def on_int(signum, frame):
    if flag:
      signal.default_int_handler(signum, frame)
    flag.append("Ctrl-C")
    print(f"\n[{name}] Ctrl-C: stopping at the end of this chunk (Ctrl-C again to stop at "
          "once)", flush=True)

  old = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
  if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    old[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
  return old


@jax.jit
def _all_finite(tree) -> jax.Array:
  """Whether every entry of ``tree`` is finite (True for an empty tree): one program per tree,
  not one per leaf shape."""
  return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in
                                            jax.tree.leaves(tree)], jnp.bool_(True))


def _whole(tree) -> bool:
  """Whether no array of ``tree`` was deleted (donated to a chunk call that never returned)."""
  return not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(tree))


def drive(chunk: Callable, carry: Any, *, state_of: Callable, stopped: Callable, start: int,
          origin: int, total: int, spe: int, save_every_epochs: int, checkpointer,
          progress: Progress, name: str, nonfinite: Callable, shown: Callable = lambda m: m,
          cancel: threading.Event | None = None, sharing: Sharing | None = None
          ) -> tuple[Any, dict | None, dict]:
  """The host loop of :func:`fit` and of ``train.ensemble.fit_ensemble``; returns (carry, the
  last chunk's metrics, timing).

  ``chunk(carry) -> (carry, step, finite, metrics, done)`` is one compiled chunk and its host
  sync; the loop runs until ``done`` or step ``total``. Per chunk: a NaN/inf loss raises
  :class:`NonFiniteLoss` (``nonfinite(step, metrics, weights=False)`` says it), progress shows
  ``shown(metrics)``, the state (``state_of(carry)``) is saved at least every
  ``save_every_epochs`` epochs. SIGTERM or a first Ctrl-C stops at the end of the chunk in
  flight, saves and raises KeyboardInterrupt (``errors.Terminated`` for SIGTERM; a second Ctrl-C
  raises at once, keeping the last periodic save). So does ``cancel`` being set, raising
  :class:`Cancelled` (checked after every chunk: how a fit on a worker thread, which no signal
  reaches, is stopped). At the end, when ``stopped(carry)`` (a stop rule fired), NaN/inf
  weights raise too: a stop rule reads predictions, and NaN weights (a finite last loss, then a
  bad update) would pass it silently, since argmax of NaN is 0. Then a last save.

  Timing: every save records the run's training seconds so far (:meth:`Checkpointer.save`), and
  a run resumed from a checkpoint (``start > origin``) starts from the seconds recorded there,
  so ``timing`` = {seconds: the whole training time, earlier sessions included;
  resumed_seconds: their part; wall_seconds: this session's wall time}. With ``sharing``, the
  fits given the same :class:`~tmu_jax.concurrent.Sharing` run at once and each chunk's seconds
  are divided by how many of them are running (sampled at the chunk's end): each is charged
  its share of the machine.
  """
  prior = checkpointer.elapsed(start) if checkpointer is not None and start > origin else 0.0
  t0 = time.perf_counter()
  spent, mark = [prior], [t0]

  def clock() -> float:
    now = time.perf_counter()
    spent[0] += (now - mark[0]) / (sharing.active() if sharing is not None else 1)
    mark[0] = now
    return spent[0]

  def save(carry, force=False):
    checkpointer.save(state_of(carry), force=force, seconds=clock())

  metrics, interrupted = None, []
  old_handlers = _install_stop_handlers(interrupted, name)
  last_save = (start - origin) // (spe * save_every_epochs)
  step, done = start, False
  if sharing is not None:
    sharing.enter()

  def stop_if_asked():
    if interrupted:
      raise Terminated("SIGTERM") if interrupted[0] == "SIGTERM" else KeyboardInterrupt("Ctrl-C")

  try:
    while step < total and not done:
      carry, step, finite, metrics, done = chunk(carry)
      clock()
      if not finite:
        raise NonFiniteLoss(nonfinite(step, metrics, False))
      progress.update(step - origin, shown(metrics))
      stop_if_asked()
      if cancel is not None and cancel.is_set():
        raise Cancelled(name)
      period = (step - origin) // (spe * save_every_epochs)
      if checkpointer is not None and (period > last_save or step >= total):
        save(carry)
        last_save = period
    stop_if_asked()  # asked during the last chunk's save
  except KeyboardInterrupt:
    if checkpointer is not None:
      if _whole(state_of(carry)):
        save(carry, force=True)
        print(f"\n[{name}] interrupted at step {step}; checkpoint saved in "
              f"{checkpointer.directory}", flush=True)
      else:
        print(f"\n[{name}] interrupted inside a chunk; the last checkpoint in "
              f"{checkpointer.directory} stands", flush=True)
      checkpointer.close()
    raise
  finally:
    if sharing is not None:
      clock()
      sharing.leave()
    for signum, handler in old_handlers.items():
      if handler is not None:  # None: a handler installed from C, which Python cannot restore
        signal.signal(signum, handler)
  if stopped(carry) and not bool(_all_finite(state_of(carry).params)):
    raise NonFiniteLoss(nonfinite(step, metrics, True))
  if checkpointer is not None:
    save(carry)
  progress.finish()
  return carry, metrics, dict(seconds=clock(), resumed_seconds=prior,
                              wall_seconds=time.perf_counter() - t0)


def fit(state: TrainState, streams: Stream | tuple[Stream, ...], *, spec: StepSpec, epochs: int,
        key: jax.Array, aux: Any = None, stop: StopRule | None = None,
        max_steps: int | None = None, checkpointer=None, save_every_epochs: int = 1,
        chunk_steps: int = 25, name: str = "train", verbose: bool = True,
        cancel: threading.Event | None = None, sharing: Sharing | None = None
        ) -> tuple[TrainState, dict]:
  """Trains ``state`` for ``epochs`` over ``streams``; returns (state, info).

  ``max_steps`` caps the steps; ``stop`` ends training early, inside the compiled loop. With a
  ``checkpointer``, resumes from its latest step, saves at least every ``save_every_epochs``
  epochs (at the first chunk boundary after), at the end, and on Ctrl-C / SIGTERM (at the end of
  the chunk in flight; then raises KeyboardInterrupt), and when ``cancel`` is set
  (:class:`Cancelled`, at a chunk boundary). ``info``: steps, seconds, wall_seconds, stop_code
  (0 = ran to the end), stopped_early, and the last step's loss and accuracy. ``seconds`` is the
  whole training time: a resumed run adds the time its checkpoint recorded (``resumed_seconds``)
  to this session's; with ``sharing`` (fits at once on host threads) this session's part is its
  share of the machine (:func:`drive`), ``wall_seconds`` its wall time.
  """
  streams = (streams,) if isinstance(streams, Stream) else tuple(streams)
  data = tuple(s.data for s in streams)
  layout = Layout.of(streams)
  spe = layout.steps_per_epoch
  if spec.mesh is not None:
    data, state, aux = replicate(spec.mesh, (data, state, aux))
  # Steps count from the state's step on entry, so fit can continue a trained state; a
  # checkpoint holds the absolute step, so a resumed run picks up where it stopped.
  origin = int(jax.device_get(state.step))
  budget = epochs * spe if max_steps is None else min(epochs * spe, max_steps)
  total = origin + budget
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state = checkpointer.restore(state)
  start = int(jax.device_get(state.step))
  plan = _Plan(layout, stop, max(1, min(chunk_steps, budget)))
  progress = Progress(name, budget, unit="img", unit_per_step=sum(layout.batch_sizes),
                      verbose=verbose)
  progress.start(start - origin)
  # Each chunk's outputs feed the next call, and they come back committed to a device whenever
  # an input is (a restored or replicated state); whether an argument is committed is part of the
  # jit cache key. Committing the state and the stop code before the first call lets every call,
  # from a fresh, restored or replicated state, hit the one compiled program (not two).
  where = (NamedSharding(spec.mesh, P()) if spec.mesh is not None
           else jax.tree.leaves(state)[0].sharding)
  state, code = jax.device_put((state, jnp.int32(0)), where)
  idx, fresh, later = jax.device_put((blank_indices(key, layout), np.bool_(True),
                                      np.bool_(False)), where)

  def chunk(carry):
    state, code, idx, fresh = carry
    state, code, idx, finite, metrics = _chunk_jit(state, code, idx, fresh, data, key, aux,
                                                   jnp.int32(origin), jnp.int32(total),
                                                   spec=spec, plan=plan)
    step = int(jax.device_get(state.step))  # the one host sync of the chunk
    return (state, code, idx, later), step, bool(finite), metrics, int(code) != 0

  def nonfinite(step, metrics, weights):
    if weights:
      return f"{name}: the weights became NaN/inf by step {step}"
    return f"{name}: the loss became {float(metrics['loss'])} by step {step}"

  (state, code, _, _), metrics, timing = drive(
      chunk, (state, code, idx, fresh), state_of=lambda c: c[0], stopped=lambda c: int(c[1]) != 0,
      start=start, origin=origin, total=total, spe=spe, save_every_epochs=save_every_epochs,
      checkpointer=checkpointer, progress=progress, name=name, nonfinite=nonfinite,
      cancel=cancel, sharing=sharing)
  info = dict(steps=int(jax.device_get(state.step)) - start, **timing,
              stop_code=int(code), stopped_early=int(code) != 0)
  if metrics is not None:
    info.update(loss=float(metrics["loss"]), accuracy=float(metrics["accuracy"]))
  return state, info
