"""JAX's persistent compilation cache, turned on by ``config.compile_cache_dir``.

On the embedded default (2-core CPU) a first job compiles 231 programs, about 30 s of its
178 s (``docs/benchmarks.md``). Every method has its
own loss and data shapes, so each compiles once per job; with the cache on, a second job — a
new seed, class or workdir — loads them from disk instead. The cache is JAX's own (keyed by the
program, the compile options, XLA flags and the jax version); results are the same bit for bit.
It is bounded (least recently used entries go past ``MAX_BYTES``) and locked for concurrent
processes by ``filelock`` (without it installed: unbounded and unlocked). Like every JAX flag
it holds for the whole process.
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache

MAX_BYTES = 1 << 30  # 1 GiB; the embedded default's 231 programs take 3 MB


def resolve(path: str) -> str:
  """``path`` absolute, ``~`` expanded ("" stays "": the cache is off)."""
  return os.path.abspath(os.path.expanduser(path)) if path else ""


def enable(path: str) -> str:
  """Points JAX's persistent cache at ``path`` (every program, however fast it compiles);
  "" leaves the process as it is. Returns the folder in use ("" when off)."""
  path = resolve(path)
  if not path:
    return jax.config.jax_compilation_cache_dir or ""
  if jax.config.jax_compilation_cache_dir != path:
    if jax.config.jax_compilation_cache_dir:
      compilation_cache.reset_cache()  # the folder is read once; a new one needs a reset
    jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  # JAX bounds (and locks) the folder only with filelock installed (a dependency of ours);
  # without it, a bound would make every read fail, so the cache stays unbounded.
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES if _have_filelock() else -1)
  return path


def _have_filelock() -> bool:
  try:
    import filelock  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True
