"""The run's folders: atomic writes, strict JSON, writability checks, one run per workdir."""

import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

from tmu_jax import workdir  # pylint: disable=wrong-import-position
from tmu_jax.errors import ConfigError  # pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strict_loads(text: str):
  """json.loads that rejects NaN / Infinity, as strict parsers (jq, JavaScript) do."""
  return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def _temps(folder) -> list[str]:
  return [n for n in os.listdir(folder) if n.startswith(".")]


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_text_replaces_and_keeps_mode(tmp_path):
  path = tmp_path / "report.md"
  workdir.atomic_write_text(str(path), "first")
  assert path.read_text() == "first"
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  os.chmod(path, 0o600)
  workdir.atomic_write_text(str(path), "second ✓")
  assert path.read_text(encoding="utf-8") == "second ✓"
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
  assert _temps(tmp_path) == []


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  workdir.atomic_write_json(str(path), {"a": 1})
  with pytest.raises(TypeError):
    workdir.atomic_write_text(str(path), None)  # fails while writing
  def no_replace(src, dst):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "replace", no_replace)
  with pytest.raises(OSError, match="No space"):
    workdir.atomic_write_json(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 1}
  assert _temps(tmp_path) == []


def test_atomic_write_json_is_strict(tmp_path):
  path = tmp_path / "results.json"
  obj = dict(nan=float("nan"), inf=float("inf"), ninf=-math.inf, ok=1.5,
             np_nan=np.float32("nan"), np_int=np.int64(3), arr=np.array([1.0, np.inf]),
             nested=[{"x": (float("nan"), 2)}], flag=True, none=None)
  workdir.atomic_write_json(str(path), obj)
  got = _strict_loads(path.read_text())
  assert got == dict(nan=None, inf=None, ninf=None, ok=1.5, np_nan=None, np_int=3,
                     arr=[1.0, None], nested=[{"x": [None, 2]}], flag=True, none=None)


def test_atomic_write_json_rejects_what_json_cannot_hold(tmp_path):
  with pytest.raises(TypeError):
    workdir.atomic_write_json(str(tmp_path / "x.json"), {"f": object()})
  assert _temps(tmp_path) == []


@pytest.mark.parametrize("ext,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_atomic_savefig(tmp_path, ext, magic):
  fig, ax = plt.subplots(figsize=(2, 2))
  ax.plot([0, 1], [1, 0])
  path = tmp_path / f"fig{ext}"
  workdir.atomic_savefig(fig, str(path), dpi=50)
  plt.close(fig)
  assert path.read_bytes().startswith(magic)
  assert _temps(tmp_path) == []


# ----------------------------------------------------------------------------- writable folders


def test_check_writable_creates_missing_folders(tmp_path):
  path = tmp_path / "a" / "b"
  assert workdir.check_writable(str(path), "--workdir") == str(path)
  assert path.is_dir() and os.listdir(path) == []  # the probe is removed


def _one_line_error(path: str, field: str) -> str:
  with pytest.raises(ConfigError) as e:
    workdir.check_writable(path, field)
  message = str(e.value)
  assert "\n" not in message and field in message
  return message


def test_check_writable_rejects_a_file_and_a_path_under_a_file(tmp_path):
  (tmp_path / "f").write_text("x")
  assert "not a folder" in _one_line_error(str(tmp_path / "f"), "config.cache_dir")
  assert "cannot be created" in _one_line_error(str(tmp_path / "f" / "sub"), "--workdir")
  assert "empty" in _one_line_error("", "--workdir")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_check_writable_rejects_a_read_only_folder_even_as_root():
  assert "not writable" in _one_line_error("/proc", "config.cache_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder")
def test_check_writable_rejects_a_read_only_cache_dir(tmp_path):
  folder = tmp_path / "ro"
  folder.mkdir()
  folder.chmod(0o555)
  try:
    assert "not writable" in _one_line_error(str(folder), "config.cache_dir")
  finally:
    folder.chmod(0o755)


def test_check_writable_reports_a_failing_probe(tmp_path, monkeypatch):
  def read_only(*args, **kwargs):
    raise OSError(30, "Read-only file system")
  monkeypatch.setattr(workdir.tempfile, "mkstemp", read_only)
  assert "Read-only file system" in _one_line_error(str(tmp_path), "config.cache_dir")


# ----------------------------------------------------------------------------- one run per workdir


def test_second_lock_in_process_refuses_and_release_frees(tmp_path):
  with workdir.WorkdirLock(str(tmp_path)) as lock:
    assert lock.holder()["pid"] == os.getpid() and lock.holder()["started"]
    with pytest.raises(ConfigError, match=f"in use by PID {os.getpid()} \\(started "):
      workdir.WorkdirLock(str(tmp_path)).acquire()
  with workdir.WorkdirLock(str(tmp_path)):
    pass


_HOLDER = textwrap.dedent("""
  import sys, time
  from tmu_jax import workdir
  lock = workdir.WorkdirLock(sys.argv[1]).acquire()
  print("locked", flush=True)
  time.sleep(120)
""")


def test_lock_held_by_another_process_then_released_by_its_death(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError) as e:
      workdir.WorkdirLock(str(tmp_path)).acquire()
    message = str(e.value)
    assert f"workdir {tmp_path} is in use by PID {holder.pid} (started " in message
    assert "\n" not in message
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdout.close()
  # The kernel released the dead holder's flock: the stale file does not block the next run.
  with workdir.WorkdirLock(str(tmp_path)) as lock:
    assert lock.holder()["pid"] == os.getpid()
