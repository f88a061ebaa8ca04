"""Many models of a run as one program (METHODS §5b): the gold ensemble and a method's seeds.

**Gold ensemble.** Member 0 is the run's M_g, trained alone as before (its time is the RTE's
denominator). Members 1 … G−1 are retrainings on D_r that differ only in their key
(``named(seed_key(seed), "gold/member/i")``: initialisation and batch order), trained with
:func:`tmu_jax.train.ensemble.fit_ensemble` as one program per group of members within
``experiment.ensemble_memory_mb`` (``member_chunks``; a group per checkpoint, so that an
interrupted group resumes on its own). Each trained group is one Orbax checkpoint in the cache,
``gold-<model key>-members-<a>-<b>`` (members a … b−1), verified like every cached model; an
ensemble of G is covered by the groups cached so far and only the members not yet covered are
trained: growing G from 16 to 64 trains 48 models.

**A method's seeds.** The method runs once alone (the main row, its timing) and then as an
ensemble of the members 1 … N−1 (``Context.members``), or one seed after the other when its
registry entry says it cannot (``ensemble=False``); member 0 is the single run.
"""

from __future__ import annotations

import os
import re
import time

import jax

from tmu_jax import checkpoints, protocol, rng, train
from tmu_jax.protocol import Problem
from tmu_jax.train import ensemble as E
from tmu_jax.train.mesh import models_axis_for

MB = 1 << 20


def member_seed_key(seed: int, i: int) -> jax.Array:
  """The root key of gold member i ≥ 1 (member 0 is the seed's own, as protocol uses)."""
  return rng.named(rng.seed_key(seed), f"gold/member/{i}")


def _keys(seed: int, start: int, stop: int) -> tuple[jax.Array, jax.Array]:
  """(init keys, data keys) of gold members start … stop−1, as train_from_scratch splits."""
  pairs = [jax.random.split(member_seed_key(seed, i)) for i in range(start, stop)]
  return jax.numpy.stack([p[0] for p in pairs]), jax.numpy.stack([p[1] for p in pairs])


def _groups_cached(cache: str, prefix: str) -> dict[int, int]:
  """{start: stop} of the finished member groups under ``cache`` (one per start, the longest)."""
  out: dict[int, int] = {}
  if not os.path.isdir(cache):
    return out
  pattern = re.compile(re.escape(prefix) + r"-members-(\d+)-(\d+)$")
  for name in os.listdir(cache):
    m = pattern.match(name)
    if m and os.path.exists(os.path.join(cache, name, "done.json")):
      a, b = int(m.group(1)), int(m.group(2))
      if b > out.get(a, -1):
        out[a] = b
  return out


def _cover(groups: dict[int, int], start: int, stop: int) -> list[tuple[int, int]]:
  """Cached groups chained from ``start`` towards ``stop`` (greedy, longest first)."""
  chain, at = [], start
  while at < stop and at in groups:
    chain.append((at, groups[at]))
    at = groups[at]
  return chain


def gold_ensemble(config, workdir: str, problem: Problem, gold: train.TrainState,
                  gold_key: str, size: int) -> tuple[train.TrainState, dict]:
  """The run's gold ensemble of ``size`` members (member 0 = ``gold``), from cache or trained.

  Returns (ensemble, info) with ``trained`` (members trained now), ``cached`` (members loaded)
  and ``time_s`` (training time of the members trained now).
  """
  recipe = protocol.recipe_of(config)
  model = protocol.build_model(config, problem.dataset)
  retain = problem.split.retain
  stream = problem.stream(retain, recipe.batch_size)
  opt = recipe.optimizer_for(recipe.epochs * train.steps_per_epoch((stream,)))
  cache = protocol.cache_dir(config, workdir)
  prefix = f"gold-{gold_key}"
  make = lambda init_keys: E.new_ensemble(init_keys, model, problem.image_shape, opt)
  parts = [E.broadcast(gold, 1)]
  chain = _cover(_groups_cached(cache, prefix), 1, size)
  loaded = trained = 0
  seconds = 0.0
  at = 1
  for a, b in chain:
    init_keys, _ = _keys(problem.seed, a, b)
    with checkpoints.Checkpointer(os.path.join(cache, f"{prefix}-members-{a}-{b}")) as ck:
      restored = ck.restore_done(make(init_keys))
    if restored is None:  # damaged (said in one line and deleted): train from here on
      break
    parts.append(restored)
    loaded += b - a
    at = b
  if at < size:
    spec = protocol.train_spec(config, model, problem.dataset, recipe)
    budget = int(config.experiment.ensemble_memory_mb) * MB
    one = E.state_bytes(jax.eval_shape(make, _keys(problem.seed, at, at + 1)[0]))
    for a, b in E.member_chunks(size - at, one, budget):
      a, b = a + at, b + at
      init_keys, data_keys = _keys(problem.seed, a, b)
      path = os.path.join(cache, f"{prefix}-members-{a}-{b}")
      t0 = time.perf_counter()
      with checkpoints.Checkpointer(path) as ck:
        states, info = E.fit_ensemble(
            make(init_keys), stream, spec=spec.replace(mesh=ensemble_mesh(config, b - a)),
            epochs=recipe.epochs, keys=data_keys,
            checkpointer=ck, save_every_epochs=recipe.save_every_epochs,
            name=f"gold members {a}-{b - 1}", verbose=config.verbose,
            how=config.experiment.ensemble)
        ck.mark_done(dict(time_s=info["seconds"], members=b - a, how=info["how"]),
                     state=states)
      seconds += time.perf_counter() - t0
      parts.append(states)
      trained += b - a
  ens = E.concat(parts) if len(parts) > 1 else parts[0]
  return E.members(ens, 0, size), dict(trained=trained, cached=loaded, time_s=seconds)


def ensemble_mesh(config, members: int):
  """A ``models`` mesh for ``members`` members over ``experiment.ensemble_devices`` local
  devices (0 = all) when there are several, else None: on by default on a multi-device host."""
  n = config.experiment.ensemble_devices or len(jax.devices())
  if n <= 1:
    return None
  return train.make_mesh(n, models=models_axis_for(members, n))
