"""Launcher: ``python launch.py --config=configs/fashion_mnist.py --workdir=DIR``.

Writes DIR/results.json, DIR/report.md and DIR/plots/; rerunning with the same DIR reuses
cached models and resumes interrupted training. A bad config exits with code 2 and one line.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Folder for results, report, plots and the cache.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  from tmu_jax import experiment, validate  # after flag parsing: keeps --help fast
  try:
    results = experiment.run(FLAGS.config, FLAGS.workdir)
  except validate.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print("interrupted: rerun the same command to resume", file=sys.stderr)
    sys.exit(130)
  print(f"wrote {FLAGS.workdir}/results.json and report.md "
        f"({len(results['runs'])} run(s))")


def parse_flags(argv):
  """Flag errors (bad config path, bad :arg, unknown override) exit 2 with one line."""
  try:
    rest = FLAGS(argv)
  except (flags.Error, ValueError, OSError, AttributeError, KeyError) as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    if isinstance(e, (AttributeError, KeyError)):
      lines = [f"unknown config field in {' '.join(argv[1:])}: {' '.join(lines)}"]
    # A config file's own error comes with its traceback: keep its first and last lines.
    print("error: " + (lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"),
          file=sys.stderr)
    sys.exit(2)
  if type(FLAGS.config).__name__ == "_ErrorConfig":  # config_flags defers a file's load error
    try:
      FLAGS.config.to_dict()
    except Exception as e:  # pylint: disable=broad-except
      paths = [a.split("=", 1)[1].split(":")[0] for a in argv if a.startswith("--config=")]
      missing = [p for p in paths if not os.path.exists(p)]
      reason = (f"file {missing[0]!r} does not exist" if missing
                else str(e).splitlines()[0])
      print(f"error: --config: {reason}", file=sys.stderr)
      sys.exit(2)
  if FLAGS.config is None:
    print("error: --config is required, e.g. --config=configs/fashion_mnist.py", file=sys.stderr)
    sys.exit(2)
  return rest


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
