"""The method registry: name -> (function, typed settings, metadata). A leaf module: the
method modules import it; importing :mod:`tmu_jax.methods` imports them all.

A method is ``fn(ctx: Context, settings) -> Result``; ``settings`` is an instance of the
method's frozen settings dataclass (:mod:`tmu_jax.schema`), parsed and checked from its config
section before any work. Registering::

    @register("finetune", Settings, group="baseline")
    def finetune(ctx, s: Settings) -> Result: ...

Metadata the rest of the code reads instead of hard-coding names a second time:

- ``group``: ``baseline`` | ``tmu`` | ``l2ul`` (which report tables show the method);
- ``paper``: True for the methods of the papers' main tables (False for ablation variants);
- ``ensemble``: True when the method trains through :func:`tmu_jax.methods.common.fit` only, so
  that N seeds of it run as one program (``Context.members``); False runs the seeds one after
  the other (L2UL: its per-instance bookkeeping reads each model on the host);
- ``needs``: the data beyond D_f the method uses: ``retain`` (D_r) and/or ``pool`` (the holdout
  pool P); :func:`tmu_jax.api.unlearn` says so when a user does not provide it. ``gold`` (the
  gold model M_g's correctness on D_f, ``Context.gold_easy``) marks an *oracle*: a reference
  that reads the answer, reported beside the methods and never a method itself (registered
  with ``paper=False``; the experiment passes gold only to these).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tmu_jax.errors import ConfigError

_REGISTRY: dict[str, "MethodInfo"] = {}
GROUPS = ("baseline", "tmu", "l2ul")
NEEDS = ("retain", "pool", "gold")


@dataclasses.dataclass(frozen=True)
class MethodInfo:
  """One registered method."""
  name: str
  fn: Callable
  settings: type
  group: str
  paper: bool = True
  needs: tuple[str, ...] = ("retain",)
  doc: str = ""
  ensemble: bool = True


def register(name: str, settings: type, *, group: str, paper: bool = True,
             needs: tuple[str, ...] = ("retain",), ensemble: bool = True):
  """Decorator registering ``fn(ctx, settings) -> Result`` under ``name``."""
  if group not in GROUPS:
    raise ValueError(f"method group {group!r} is not one of {GROUPS}")
  if set(needs) - set(NEEDS):
    raise ValueError(f"method needs {needs!r}: each must be one of {NEEDS}")

  def wrap(fn):
    doc = (fn.__doc__ or "").strip().splitlines()
    _REGISTRY[name] = MethodInfo(name, fn, settings, group, paper, tuple(needs),
                                 doc[0] if doc else "", ensemble)
    return fn

  return wrap


def available() -> list[str]:
  """Every registered method name."""
  return sorted(_REGISTRY)


def get(name: str) -> MethodInfo:
  """The registered method ``name``; KeyError naming the valid ones otherwise."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown method {name!r}; valid: {', '.join(available())}")
  return _REGISTRY[name]


def rng_name_of(name: str, section: Any) -> str:
  """The name whose random stream a config section's method draws: its ``rng_name`` key, or
  its own name. A variant with its parent's ``rng_name`` shares the parent's initialisations,
  batch orders and random draws (common random numbers), so the two differ by their settings
  alone; without it, two sections with equal settings differ by their randomness."""
  if section is not None and "rng_name" in section:
    value = section["rng_name"]
    if not isinstance(value, str) or not value:
      raise ConfigError(f"config field methods.{name}.rng_name = {value!r} is not valid: "
                        "expected a method section's name")
    return value
  return name


def base_of(name: str, section: Any) -> str:
  """The registered method a config section runs: its ``base`` key, or its own name."""
  if section is not None and "base" in section:
    return str(section["base"])
  return name
