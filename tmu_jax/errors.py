"""The project's exception types, in a leaf module every other module may import.

- :class:`ConfigError`: a config field or an input file cannot work. The launcher prints its one
  line and exits with code 2, before any training.
- :class:`RunFault`: the run itself failed (a NaN loss, a full disk, a lost lock). The launcher
  prints its one line and exits with code 1; what finished before is kept.
- :class:`Terminated`: SIGTERM stopped the run (exit code 143); a KeyboardInterrupt, so every
  handler that saves on Ctrl-C saves on it too.
"""


class ConfigError(ValueError):
  """A config field (or a file it names) holds a value that cannot work: exit code 2."""


class RunFault(RuntimeError):
  """A fault during the run, reported in one line: exit code 1."""


class Terminated(KeyboardInterrupt):
  """SIGTERM stopped the run (exit code 143, where Ctrl-C gives 130); checkpoints are saved on
  the way out as for Ctrl-C."""
