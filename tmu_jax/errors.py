"""The project's exception types, in a leaf module every other module may import.

- :class:`ConfigError`: a config field or an input file cannot work. The launcher prints its one
  line and exits with code 2, before any training.
- :class:`RunFault`: the run itself failed (a NaN loss, a full disk, a lost lock). The launcher
  prints its one line and exits with code 1; what finished before is kept.
"""


class ConfigError(ValueError):
  """A config field (or a file it names) holds a value that cannot work: exit code 2."""


class RunFault(RuntimeError):
  """A fault during the run, reported in one line: exit code 1."""
