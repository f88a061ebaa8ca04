"""The launcher (tmu_jax.cli, ``python launch.py``, ``tmu-jax``): flags, exit codes, one-line errors.

The experiment is replaced by a test double (``cli.run_experiment``), so nothing trains here.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

from absl import flags
import pytest

from tmu_jax import cli, errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "fashion_mnist.py") + ":smoke"


@pytest.fixture(autouse=True)
def _fresh_flags():
  yield
  flags.FLAGS.unparse_flags()  # each test parses its own command line


def _launch(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=60, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _main(monkeypatch, fake, *args: str) -> int:
  """cli._main on SMOKE with ``fake`` as the experiment; its exit code."""
  monkeypatch.setattr(cli, "run_experiment", fake)
  with pytest.raises(SystemExit) as e:
    cli._main(["tmu-jax", f"--config={SMOKE}", *args])  # pylint: disable=protected-access
  return e.value.code or 0


def test_stray_argument_exits_2_with_one_line():
  out = _launch("--config=configs/fashion_mnist.py:smoke", "stray")
  assert out.returncode == 2, out.stderr
  assert out.stderr.startswith("error: unexpected argument(s) 'stray'")
  assert out.stderr.count("\n") == 1


def test_missing_config_exits_2_with_one_line(tmp_path):
  out = _launch(f"--workdir={tmp_path}")
  assert out.returncode == 2, out.stderr
  assert out.stderr == "error: --config is required, e.g. --config=configs/fashion_mnist.py\n"


def test_runs_the_experiment_with_the_locked_config(monkeypatch, capsys, tmp_path):
  seen = {}

  def fake(config, workdir):
    seen.update(config=config, workdir=workdir)
    return {"runs": [{}, {}]}

  assert _main(monkeypatch, fake, f"--workdir={tmp_path}", "--config.train.epochs=3") == 0
  assert seen["workdir"] == str(tmp_path)
  assert seen["config"].train.epochs == 3 and seen["config"].data.forget_size == 20  # smoke
  assert seen["config"].is_locked
  assert capsys.readouterr().out == f"wrote {tmp_path}/results.json and report.md (2 run(s))\n"


def _raises(e: BaseException):
  """An experiment that raises ``e``."""
  def fake(config, workdir):
    raise e
  return fake


def _disk_full_in_save(config, workdir):
  try:
    raise OSError(errno.ENOSPC, "No space left on device", "/w/ckpt")
  except OSError as e:
    raise RuntimeError("checkpoint save failed") from e


def _sigterm(config, workdir):
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(10)  # the handler's exception ends this at once


@pytest.mark.parametrize("fake, code, line", [
    (_raises(errors.ConfigError("config field x = 1 is not valid: 0")), 2,
     "error: config field x = 1 is not valid: 0"),
    (_raises(errors.RunFault("NaN loss in finetune at step 3")), 1,
     "error: NaN loss in finetune at step 3"),
    (_raises(OSError(errno.ENOSPC, "No space left on device", "/w")), 1,
     "error: out of disk/memory: [Errno 28] No space left on device: '/w'"),
    (_disk_full_in_save, 1,
     "error: out of disk/memory: [Errno 28] No space left on device: '/w/ckpt'"),
    (_raises(RuntimeError("jit(step) failed\nRESOURCE_EXHAUSTED: Out of memory allocating 9.0GiB"
                          "\nBuffers: ...")), 1,
     "error: out of disk/memory: RESOURCE_EXHAUSTED: Out of memory allocating 9.0GiB"),
    (_raises(KeyboardInterrupt()), 130, "interrupted: rerun the same command to resume"),
    (_sigterm, 143, "terminated: rerun the same command to resume"),
], ids=["config", "run_fault", "enospc", "enospc_wrapped", "resource_exhausted", "ctrl_c",
        "sigterm"])
def test_known_failures_exit_with_one_line(monkeypatch, capsys, tmp_path, fake, code, line):
  before = signal.getsignal(signal.SIGTERM)
  t0 = time.perf_counter()
  assert _main(monkeypatch, fake, f"--workdir={tmp_path}") == code
  assert capsys.readouterr().err == line + "\n"
  assert signal.getsignal(signal.SIGTERM) is before  # the handler is only ours while we run
  assert time.perf_counter() - t0 < 5


def test_a_bug_prints_its_traceback(monkeypatch, capsys, tmp_path):
  def fake(config, workdir):
    raise ValueError("a bug is a bug")

  assert _main(monkeypatch, fake, f"--workdir={tmp_path}") == 1
  err = capsys.readouterr().err
  assert err.startswith("Traceback") and err.endswith("ValueError: a bug is a bug\n")


def test_config_package_found_from_any_folder(monkeypatch, tmp_path):
  """The console script's sys.path holds neither the cwd nor the checkout: the CLI adds it."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != ROOT])
  for name in [m for m in sys.modules if m == "configs" or m.startswith("configs.")]:
    monkeypatch.delitem(sys.modules, name)
  assert _main(monkeypatch, lambda c, w: {"runs": []}, "--workdir=w") == 0
  assert sys.path[0] == ROOT


def test_load_config():
  assert cli.load_config(SMOKE).train.epochs == 2
  with pytest.raises(errors.ConfigError, match="does not exist"):
    cli.load_config("configs/nope.py")
