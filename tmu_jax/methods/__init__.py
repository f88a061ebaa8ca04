"""Unlearning methods, registered by name.

A method is ``fn(ctx: Context, cfg: ConfigDict) -> (unlearned TrainState, info dict)``. It sees
the original model, the data of the request (D_f, D_r, the holdout pool P) and its own config
section ``config.methods.<name>``; never the gold model, which exists only to score it.
Methods train through :func:`tmu_jax.engine.fit`, contributing a loss and data mixing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import engine

_REGISTRY: dict[str, Callable] = {}


def register(name: str):
  """Decorator registering ``fn(ctx, cfg) -> (state, info)`` under ``name``."""

  def wrap(fn):
    _REGISTRY[name] = fn
    return fn

  return wrap


def _import_all():
  from tmu_jax.methods import baselines  # noqa: F401  pylint: disable=import-outside-toplevel
  for optional in ("tmu", "l2ul", "scrub", "salun"):
    try:
      __import__(f"tmu_jax.methods.{optional}")
    except ModuleNotFoundError as e:
      if e.name != f"tmu_jax.methods.{optional}":
        raise


def available() -> list[str]:
  _import_all()
  return sorted(_REGISTRY)


def get(name: str) -> Callable:
  _import_all()
  if name not in _REGISTRY:
    raise KeyError(f"unknown method {name!r}; valid: {', '.join(available())}")
  return _REGISTRY[name]


@dataclasses.dataclass
class Context:
  """What an unlearning method may use. ``problem`` is an ``experiment.Problem``."""
  config: Any  # the whole experiment config
  problem: Any
  original: engine.TrainState  # M_o
  key: jax.Array
  build_model: Callable[[], Any]  # a fresh, uninitialised model of the same architecture
  workdir: str = ""
  verbose: bool = True

  def spec(self, **overrides) -> engine.StepSpec:
    """The training StepSpec of this problem (augmentation as configured), with overrides."""
    from tmu_jax import experiment  # pylint: disable=import-outside-toplevel
    return dataclasses.replace(experiment.train_spec(self.config, self.problem), **overrides)

  def fresh_state(self, key: jax.Array, tx) -> engine.TrainState:
    """A randomly initialised model of the same architecture (e.g. Bad Teacher's teacher)."""
    return engine.create_train_state(key, self.build_model(), self.problem.image_shape, tx)


def optimizer(cfg, total_steps: int = 1):
  """The method's optimizer from its config section (``optimizer``, ``lr``, ``momentum``,
  ``weight_decay``, ``schedule``)."""
  return engine.make_optimizer(cfg.get("optimizer", "sgd"), cfg.lr,
                               momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg.get("weight_decay", 5e-4),
                               schedule=cfg.get("schedule", "constant"), total_steps=total_steps)


def start_from(state: engine.TrainState, cfg, total_steps: int = 1) -> engine.TrainState:
  """A copy of ``state``'s weights with the method's fresh optimizer."""
  return engine.with_optimizer(state, optimizer(cfg, total_steps))


def forget_loss_stop(ctx: Context, threshold: float | None = None
                     ) -> Callable[[engine.TrainState], bool]:
  """Stop rule for gradient ascent (METHODS §4): mean CE on D_f ≥ ln(num_classes).

  It never looks at the gold model: chance-level loss is the target.
  """
  threshold = math.log(ctx.problem.num_classes) if threshold is None else threshold
  x_f, y_f = ctx.problem.take(ctx.problem.split.forget)

  def stop(state: engine.TrainState) -> bool:
    logits, _ = engine.predict(state.apply_fn, state.variables, x_f)
    ce = engine.cross_entropy(logits, dict(label=y_f))
    return bool(jnp.mean(ce) >= threshold)

  return stop


def timed(fn: Callable[[], tuple]) -> tuple[Any, float]:
  t0 = time.perf_counter()
  out = fn()
  jax.block_until_ready(jax.tree.leaves(out[0].params) if hasattr(out[0], "params") else out)
  return out, time.perf_counter() - t0


def retain_subset(ctx: Context, fraction: float, key: jax.Array) -> np.ndarray:
  """A random ``fraction`` of D_r's indices (all of it for fraction ≥ 1)."""
  retain = ctx.problem.split.retain
  if fraction >= 1.0:
    return retain
  n = max(1, int(round(fraction * len(retain))))
  pick = np.asarray(jax.random.choice(key, len(retain), (n,), replace=False))
  return np.sort(retain[pick])
