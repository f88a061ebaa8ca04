"""Method results as JSON, their content-keyed cache, and compile-time accounting.

A method's scored result is cached under a key of its content — M_o's and M_g's cache keys,
the split, the method's registered name and settings, the scoring fields and
:data:`SCHEMA_VERSION` — so a rerun of an unchanged config returns at once and changing one
method's field recomputes that method alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from tmu_jax import checkpoints
from tmu_jax.workdir import atomic_write_json

SCHEMA_VERSION = 3  # bump when a method's metrics or their meaning change


def public(m: dict) -> dict:
  """JSON-able metrics: floats and small lists, without private (underscore) entries."""
  out = {}
  for k, v in m.items():
    if k.startswith("_"):
      continue
    if isinstance(v, (np.ndarray, jax.Array)):
      v = np.asarray(v).tolist()
    elif isinstance(v, (np.floating, np.integer, np.bool_)):
      v = v.item()
    out[k] = v
  return out


def method_key(**content) -> str:
  """The content key of one method's result."""
  return checkpoints.cache_key(dict(content, schema=SCHEMA_VERSION))


class MethodCache:
  """One JSON file per method result under ``<cache_dir>/methods``."""

  def __init__(self, cache_dir: str):
    self.folder = os.path.join(cache_dir, "methods")

  def path(self, name: str, key: str) -> str:
    return os.path.join(self.folder, f"{name}-{key}.json")

  def get(self, name: str, key: str) -> dict | None:
    """The cached result, or None (missing, or unreadable: then it is recomputed)."""
    try:
      with open(self.path(name, key), encoding="utf-8") as f:
        out = json.load(f)
      return out if isinstance(out, dict) else None
    except (OSError, ValueError):
      return None

  def put(self, name: str, key: str, result: dict) -> None:
    os.makedirs(self.folder, exist_ok=True)
    atomic_write_json(self.path(name, key), result)


class CompileTimer:
  """Sums XLA compile time inside a ``with`` block (to report it apart from run time)."""

  _active: list["CompileTimer"] = []
  _registered = False

  def __init__(self):
    self.seconds = 0.0

  @classmethod
  def _listener(cls, event: str, duration: float, **kwargs):
    del kwargs
    if "backend_compile" in event:
      for timer in cls._active:
        timer.seconds += duration

  def __enter__(self):
    if not CompileTimer._registered:
      jax.monitoring.register_event_duration_secs_listener(CompileTimer._listener)
      CompileTimer._registered = True
    CompileTimer._active.append(self)
    return self

  def __exit__(self, *exc):
    CompileTimer._active.remove(self)
