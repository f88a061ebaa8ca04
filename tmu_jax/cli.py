"""The ``tmu-jax`` command (``python launch.py`` is the same): one experiment from a config file.

    tmu-jax --config=configs/fashion_mnist.py[:arg] [--config.FIELD=VALUE ...] --workdir=DIR

Writes DIR/results.json, DIR/report.md and DIR/plots/; rerunning with the same DIR reuses cached
models and resumes interrupted training. Exit codes, each failure reported in one line:

- 0 done; 2 bad command line or config (before any work);
- 1 the run failed (``RunFault`` such as a NaN loss, out of disk or memory); any other exception
  is a bug and prints its traceback, also with code 1;
- 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): rerun the same command to resume.

Config files are given by path. They import their siblings as a package (``from configs import
default``), so before a config file is loaded the folder holding its package (the checkout's root
for ``configs/fashion_mnist.py``) goes first on ``sys.path``: the folder Python itself would put
there for ``python launch.py`` in the checkout.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import os
import signal
import sys
import traceback
from typing import Any, Iterator, NoReturn, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from tmu_jax import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Folder for results, report, plots and the cache.")


def run_experiment(config, workdir: str) -> dict[str, Any]:
  """The experiment itself (tests replace this function to exercise the error handling)."""
  from tmu_jax import experiment  # pylint: disable=import-outside-toplevel  # keeps --help fast
  return experiment.run(config, workdir)


def add_config_root(path: str) -> None:
  """Puts the folder above ``path``'s package first on sys.path, if ``path`` is in a package."""
  package = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(package, "__init__.py")):
    root = os.path.dirname(package)
    if root not in [os.path.abspath(p) for p in sys.path]:
      sys.path.insert(0, root)


def load_config(spec: str):
  """Loads ``path[:arg]`` as ``--config`` does (``get_config(arg)``), for scripts: a ConfigDict."""
  path, *arg = spec.split(":", 1)
  if not os.path.isfile(path):
    raise errors.ConfigError(f"config file {path!r} does not exist")
  add_config_root(path)
  loader = importlib.machinery.SourceFileLoader("tmu_jax_config", path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
  loader.exec_module(module)
  return module.get_config(*arg)


def _config_specs(argv: Sequence[str]) -> Iterator[str]:
  """The values of ``--config=V`` and ``--config V`` in argv."""
  for i, a in enumerate(argv[1:], 1):
    if a == "--":
      return
    if a.startswith("--config="):
      yield a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(argv):
      yield argv[i + 1]


def _fail(line: str, code: int) -> NoReturn:
  print(line, file=sys.stderr)
  sys.exit(code)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Flag errors (bad config path, bad :arg, unknown override, stray argument): exit 2, one line."""
  for spec in _config_specs(argv):
    add_config_root(spec.split(":", 1)[0])
  try:
    rest = FLAGS(argv)
  except BrokenPipeError:  # --help into `| head`: _main ends quietly
    raise
  except (flags.Error, ValueError, OSError, AttributeError, KeyError) as e:
    inner: BaseException = e  # config_dict raises AttributeError(KeyError(message))
    while inner.args and isinstance(inner.args[0], BaseException):
      inner = inner.args[0]
    text = str(inner.args[0]) if isinstance(inner, KeyError) and inner.args else str(inner)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if isinstance(e, (AttributeError, KeyError)):
      lines = [f"unknown config field in {' '.join(argv[1:])}: {' '.join(lines)}"]
    # A config file's own error comes with its traceback: keep its first and last lines.
    _fail("error: " + (lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"), 2)
  if type(FLAGS.config).__name__ == "_ErrorConfig":  # config_flags defers a file's load error
    try:
      FLAGS.config.to_dict()
    except Exception as e:  # pylint: disable=broad-except
      missing = [p for p in (s.split(":", 1)[0] for s in _config_specs(argv))
                 if not os.path.exists(p)]
      reason = f"file {missing[0]!r} does not exist" if missing else str(e).splitlines()[0]
      _fail(f"error: --config: {reason}", 2)
  if len(rest) > 1:
    stray = " ".join(rest[1:])
    hint = (f"did you mean --config={stray}?" if stray.split(":")[0].endswith(".py")
            else "every option is a flag, e.g. --workdir=DIR")
    _fail(f"error: unexpected argument(s) {stray!r}: {hint}", 2)
  if FLAGS.config is None:
    _fail("error: --config is required, e.g. --config=configs/fashion_mnist.py", 2)
  return list(rest)


def _run(argv: Sequence[str]) -> None:
  """absl's main: the experiment on the parsed flags (parse_flags rejected stray arguments)."""
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  results = run_experiment(FLAGS.config, FLAGS.workdir)
  runs = results.get("runs") if isinstance(results, dict) else None
  print(f"wrote {FLAGS.workdir}/results.json and report.md"
        + (f" ({len(runs)} run(s))" if runs is not None else ""))


def _first_line(e: BaseException, containing: str = "") -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()] or [type(e).__name__]
  return next((l for l in lines if containing in l), lines[0])


def _failure(e: Exception) -> tuple[str, int] | None:
  """The one line and exit code of a known failure, or None for a bug."""
  if isinstance(e, errors.ConfigError):
    return f"error: {_first_line(e)}", 2
  if isinstance(e, errors.RunFault):
    return f"error: {_first_line(e)}", 1
  cause, seen = e, set()
  while cause is not None and id(cause) not in seen:  # also when wrapped (Orbax's saves)
    if ((isinstance(cause, OSError) and cause.errno == errno.ENOSPC)
        or "RESOURCE_EXHAUSTED" in str(cause)):
      return f"error: out of disk/memory: {_first_line(cause, 'RESOURCE_EXHAUSTED')}", 1
    seen.add(id(cause))
    cause = cause.__cause__ or cause.__context__
  return None


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
  """Unwinds the run (closing checkpoints on the way); a second SIGTERM kills at once."""
  del frame
  signal.signal(signum, signal.SIG_DFL)
  raise errors.Terminated()


def _main(argv: Sequence[str]) -> NoReturn:
  """The command on argv (argv[0] is the program name); always ends in SystemExit."""
  previous = signal.signal(signal.SIGTERM, _on_sigterm)
  saved_argv, sys.argv = sys.argv, list(argv)  # config_flags reads --config.X overrides there
  try:
    app.run(_run, argv=list(argv), flags_parser=parse_flags)  # exits with _run's result
  except errors.Terminated:  # before KeyboardInterrupt, its base class
    _fail("terminated: rerun the same command to resume", 143)
  except KeyboardInterrupt:
    _fail("interrupted: rerun the same command to resume", 130)
  except BrokenPipeError:  # the reader of stdout left (`tmu-jax --helpfull | head`): say nothing
    try:  # and keep the interpreter's final flush from complaining
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
      pass
    sys.exit(1)
  except Exception as e:  # pylint: disable=broad-except
    failure = _failure(e)
    if failure is None:
      traceback.print_exc()
      sys.exit(1)
    _fail(*failure)
  finally:
    signal.signal(signal.SIGTERM, previous)
    sys.argv = saved_argv


def main() -> NoReturn:
  """Entry point of the ``tmu-jax`` console script and of ``python launch.py``."""
  sys.modules["__main__"].__doc__ = __doc__  # what absl's --help prints above the flags
  _main(sys.argv)


if __name__ == "__main__":
  main()
