"""The run's folders: atomic writes, writability checks and one run per workdir.

- :func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_savefig`: a reader (or a
  crash) sees the old file or the new one, never half of one: write a temp file in the same
  folder, fsync it, then ``os.replace`` it over the target.
- :func:`check_writable`: a folder from the command line or the config can be written, checked
  before any training, so a bad path costs seconds, not a trained model.
- :class:`WorkdirLock`: two runs on one workdir would overwrite each other's checkpoints and
  results; the second one refuses at once.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import tempfile
from typing import Any, Iterator

import numpy as np

from tmu_jax.errors import ConfigError


# ----------------------------------------------------------------------------- atomic writes


def _fsync_dir(folder: str) -> None:
  """Makes a rename in ``folder`` durable (best effort: some filesystems refuse)."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def _replacing(path: str, suffix: str = ".tmp") -> Iterator[str]:
  """Yields a temp path beside ``path``; on success fsyncs it and moves it over ``path``.

  The temp file keeps the target's permissions when it exists (else 0o644). On an error the
  temp file is removed and the target is untouched.
  """
  path = os.path.abspath(path)
  folder, name = os.path.split(path)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=suffix)
  try:
    try:
      mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
      mode = 0o644
    os.fchmod(fd, mode)
    os.close(fd)
    fd = -1
    yield tmp
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if fd >= 0:
      os.close(fd)
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  _fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically: temp file, fsync, ``os.replace``."""
  with _replacing(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def strict_json(obj: Any) -> Any:
  """``obj`` with NaN/inf floats as None and numpy/jax scalars and arrays as Python values.

  Strict JSON has no NaN or Infinity; Python's default output of them is rejected by other
  parsers (jq, JavaScript, most JSON libraries). Objects with ``__float__`` become floats; any
  other type is left for ``json`` to reject.
  """
  if isinstance(obj, (bool, int, str)) or obj is None:
    return obj
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {(k.item() if isinstance(k, np.generic) else k): strict_json(v)
            for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict_json(v) for v in obj]
  if isinstance(obj, np.generic):
    return strict_json(obj.item())
  if hasattr(obj, "__array__") and hasattr(obj, "shape"):  # np.ndarray, jax.Array
    return strict_json(np.asarray(obj).tolist())
  if hasattr(obj, "__float__"):
    return strict_json(float(obj))
  return obj


def atomic_write_json(path: str, obj: Any, indent: int | None = 1) -> None:
  """Writes ``obj`` as strict JSON (NaN/inf become null) to ``path`` atomically."""
  atomic_write_text(path, json.dumps(strict_json(obj), indent=indent, allow_nan=False) + "\n")


def atomic_savefig(fig, path: str, **savefig_kwargs) -> None:
  """Saves a matplotlib ``fig`` to ``path`` atomically (the format comes from the extension)."""
  ext = os.path.splitext(path)[1]
  with _replacing(path, suffix=ext or ".tmp") as tmp:
    if ext and "format" not in savefig_kwargs:
      savefig_kwargs["format"] = ext[1:].lower()
    fig.savefig(tmp, **savefig_kwargs)


# ----------------------------------------------------------------------------- writable folders


def check_writable(path: str, field: str) -> str:
  """Returns ``path`` made absolute once the folder exists (or was created) and a probe file
  could be written and removed in it; else raises a one-line ConfigError naming ``field``."""
  if not path:
    raise ConfigError(f"{field} is empty: give a folder that can be written")
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{field}={path!r} is not a folder: give a folder that can be written")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"{field}={path!r} cannot be created ({e.strerror or e}): "
                      f"give a folder that can be written") from None
  try:
    fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
    try:
      os.write(fd, b"probe")
      os.fsync(fd)
    finally:
      os.close(fd)
      os.remove(probe)
  except OSError as e:
    raise ConfigError(f"{field}={path!r} is not writable ({e.strerror or e}): "
                      f"give a folder that can be written") from None
  return path


# ----------------------------------------------------------------------------- one run per workdir


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class WorkdirLock:
  """An exclusive, non-blocking ``fcntl.flock`` on ``<workdir>/.lock`` for the run's lifetime.

  The lock file holds the holder's PID and start time, for the message a second run prints.
  The kernel drops a flock when its holder exits, however it dies (SIGKILL included), so a
  stale file never blocks the next run. Use as ``with WorkdirLock(workdir): ...``; a second
  lock on the same workdir (another process, or this one) raises ConfigError at once.
  """

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, ".lock")
    self._fd: int | None = None

  def holder(self) -> dict[str, Any]:
    """What the lock file says about its holder: ``pid`` and ``started`` ({} when unknown)."""
    try:
      with open(self.path, encoding="utf-8") as f:
        info = json.loads(f.read() or "{}")
      return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
      return {}

  def acquire(self) -> "WorkdirLock":
    """Takes the lock or raises ConfigError naming the process that holds it."""
    if self._fd is not None:
      return self
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      info = self.holder()
      who = (f"PID {info.get('pid')} (started {info.get('started', '?')})" if info.get("pid")
             else "another process")
      raise ConfigError(f"workdir {self.workdir} is in use by {who}: wait for that run to "
                        f"finish, or give another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(dict(pid=os.getpid(), started=_now())).encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    """Drops the lock (the file stays; without a flock on it, it holds nobody back)."""
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
