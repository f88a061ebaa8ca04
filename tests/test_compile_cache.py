"""The persistent compilation cache (``config.compile_cache_dir``): a second process loads the
programs a first one compiled, results are the same, a bad folder is one line before any work,
and the field names no result (it is left out of the config digest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from configs import default
from tmu_jax import compile_cache, experiment, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One process: the cache on in FOLDER, one jitted MLP-sized program, then what JAX's own
# monitoring counted (cache hits / misses) and the result.
PROGRAM = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, jax.monitoring as mon
    from tmu_jax import compile_cache
    counts = {}
    mon.register_event_listener(lambda e, **kw: counts.__setitem__(e, counts.get(e, 0) + 1))
    folder = compile_cache.enable(sys.argv[1])
    f = jax.jit(lambda w, x: jnp.tanh(x @ w).sum())
    y = f(jnp.full((64, 32), 0.01), jnp.arange(64 * 8, dtype=jnp.float32).reshape(8, 64))
    print(json.dumps(dict(folder=folder, y=float(y),
                          hits=counts.get("/jax/compilation_cache/cache_hits", 0),
                          misses=counts.get("/jax/compilation_cache/cache_misses", 0))))
""")


def _run(folder: str) -> dict:
  out = subprocess.run([sys.executable, "-c", PROGRAM, folder], cwd=ROOT, check=True,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_what_the_first_compiled(tmp_path):
  folder = tmp_path / "xla"
  first = _run(str(folder))
  assert first["folder"] == str(folder)
  assert first["hits"] == 0 and first["misses"] >= 1
  assert any(folder.iterdir())  # entries written
  second = _run(str(folder))
  assert second["hits"] >= 1 and second["misses"] == 0
  assert second["y"] == first["y"]


def test_empty_means_off(tmp_path):
  out = _run("")
  assert out["folder"] == "" and out["hits"] == 0


def test_resolve_expands_home():
  assert compile_cache.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
  assert compile_cache.resolve("") == ""


def test_unwritable_folder_is_one_line_before_any_work(tmp_path):
  c = default.get_config()
  c.compile_cache_dir = "/proc/tmu_xla"
  with pytest.raises(validate.ConfigError,
                     match=r"compile_cache_dir='/proc/tmu_xla' cannot be created.*"
                           r'compile_cache_dir=""'):
    validate.check_writable_dirs(c, str(tmp_path))


def test_not_a_string_is_rejected():
  c = default.get_config()
  with c.ignore_type():
    c.compile_cache_dir = 3
  with pytest.raises(validate.ConfigError, match="compile_cache_dir"):
    validate.check_config(c)


def test_not_in_the_config_digest():
  a, b = default.get_config(), default.get_config()
  b.compile_cache_dir = ""
  assert experiment.config_digest(a) == experiment.config_digest(b)
  b.seed = 1
  assert experiment.config_digest(a) != experiment.config_digest(b)
