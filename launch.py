"""Launcher: ``python launch.py --config=configs/fashion_mnist.py --workdir=DIR``.

Writes DIR/results.json, DIR/report.md and DIR/plots/; rerunning with the same DIR reuses
cached models and resumes interrupted training. A bad config exits with code 2 and one line.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Folder for results, report, plots and the cache.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
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


def _config_error_exit():
  """Errors while *loading* the config file (bad path, bad :arg) also exit 2 with one line."""
  try:
    FLAGS(sys.argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.config is None:
    print("error: --config is required, e.g. --config=configs/fashion_mnist.py", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _config_error_exit()
  app.run(main)
