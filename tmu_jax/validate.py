"""Config validation: every field is checked before any work starts.

Each failure is one sentence naming the field, the value it had and what would be valid; the
launcher prints it and exits with code 2 (never a traceback from inside JAX or TFDS).
"""

from __future__ import annotations

import numbers
import os

from tmu_jax import data as data_lib
from tmu_jax import models


class ConfigError(ValueError):
  """A config field holds a value that cannot work."""


def _fail(field: str, value, valid: str):
  raise ConfigError(f"config field {field} = {value!r} is not valid: {valid}")


def _int(c, field: str, lo: int | None = None, hi: int | None = None):
  value = _get(c, field)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(field, value, "expected an integer")
  if (lo is not None and value < lo) or (hi is not None and value > hi):
    rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
    _fail(field, value, f"expected an integer in {rng}")
  return value


def _float(c, field: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False):
  value = _get(c, field)
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
    _fail(field, value, "expected a number")
  bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
  bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
  if bad_lo or bad_hi:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    _fail(field, value, f"expected a number in {left}{lo if lo is not None else '-inf'}, "
          f"{hi if hi is not None else 'inf'}{right}")
  return value


def _choice(c, field: str, choices):
  value = _get(c, field)
  if value not in choices:
    _fail(field, value, f"expected one of {', '.join(map(str, choices))}")
  return value


def _get(c, field: str):
  node = c
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"config field {field} is missing (start from configs/default.py)")
    node = node[part]
  return node


def check_workdir(workdir: str) -> str:
  """The absolute workdir, created if needed; ConfigError if it cannot hold results."""
  if not workdir:
    raise ConfigError("--workdir is empty: give a folder for results and checkpoints")
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir {workdir!r} is an existing file, not a folder")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir!r} cannot be created: {e.strerror}") from None
  if not os.access(path, os.W_OK):
    raise ConfigError(f"--workdir {workdir!r} is not writable")
  return path


def check_config(c) -> None:
  """Checks every field that can be checked without loading data."""
  _int(c, "seed", 0)
  _float(c, "data.holdout_fraction", 0.0, 1.0, hi_open=True)
  _choice(c, "data.scenario", data_lib.SCENARIOS)
  _int(c, "data.forget_size", 1)
  _int(c, "data.train_subset", 0)
  name = _get(c, "data.name")
  known = data_lib.DATASETS.get(name)
  source = _get(c, "data.source") or (known["source"] if known else "tfds")
  if source not in ("idx", "tfds"):
    _fail("data.source", _get(c, "data.source"), "expected idx, tfds or empty")
  if source == "idx":
    folder = _get(c, "data.dir")
    if not folder or not os.path.isdir(folder):
      _fail("data.dir", folder, "expected an existing folder with the four IDX files "
            "(for Fashion-MNIST: apt-get install dataset-fashion-mnist)")
    missing = [f for f in data_lib.IDX_FILES if not os.path.exists(os.path.join(folder, f))]
    if missing:
      _fail("data.dir", folder, f"folder lacks {', '.join(missing)}")
  else:
    _check_tfds_name(name)
    manual = _get(c, "data.manual_dir")
    if manual and not os.path.isdir(manual):
      _fail("data.manual_dir", manual, "expected an existing folder holding the dataset archive")
  if known is not None and c.data.scenario != "instance":
    _int(c, "data.forget_class", 0, known["classes"] - 1)
  for cls in _get(c, "experiment.forget_classes"):
    if known is not None and not (isinstance(cls, int) and 0 <= cls < known["classes"]):
      _fail("experiment.forget_classes", tuple(c.experiment.forget_classes),
            f"every class must be an integer in [0, {known['classes'] - 1}]")
  for s in _get(c, "experiment.seeds"):
    if isinstance(s, bool) or not isinstance(s, int) or s < 0:
      _fail("experiment.seeds", tuple(c.experiment.seeds), "expected non-negative integers")
  _choice(c, "model.name", models.available())
  _int(c, "train.epochs", 1)
  _int(c, "train.batch_size", 1)
  _choice(c, "train.optimizer", ("sgd", "adam"))
  _float(c, "train.lr", 0.0, lo_open=True)
  _float(c, "train.momentum", 0.0, 1.0, hi_open=True)
  _float(c, "train.weight_decay", 0.0)
  _choice(c, "train.schedule", ("step", "constant", "cosine"))
  _int(c, "train.save_every_epochs", 1)
  _int(c, "train.eval_batch_size", 1)
  _int(c, "num_devices", 0)
  _check_methods(c)
  _check_devices(c)
  _check_l2ul(c)


def _check_l2ul(c) -> None:
  """Fields of the instance scenario, size sweeps, continual rounds and the L2UL sections."""
  if "mode" in c.data:
    _choice(c, "data.mode", ("misclassify", "relabel"))
  if "forget_sizes" in c.experiment:
    sizes = tuple(_get(c, "experiment.forget_sizes"))
    if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in sizes):
      _fail("experiment.forget_sizes", sizes, "expected positive integers (|D_f| or k)")
  if "rounds" in c.experiment:
    rounds = _int(c, "experiment.rounds", 1)
    if rounds > 1 and c.data.scenario != "instance":
      _fail("experiment.rounds", rounds, "continual rounds need data.scenario = 'instance'")
  if "gold" in c.experiment and not isinstance(_get(c, "experiment.gold"), bool):
    _fail("experiment.gold", c.experiment.gold, "expected True or False")
  for name in _get(c, "experiment.methods"):
    section = c.methods[name]
    if section.get("base", name) == "l2ul" or name == "l2ul":
      from tmu_jax.methods import l2ul  # pylint: disable=import-outside-toplevel
      _choice(c, f"methods.{name}.case", l2ul.CASES)
      if "forget_loss" in section:
        _choice(c, f"methods.{name}.forget_loss", l2ul.FORGET_LOSSES)
      for key in ("num_adv", "adv_steps", "adv_batch_size", "retain_batch_size",
                  "collapse_every", "probe_size", "mas_chunk", "adv_chunk"):
        if key in section:
          _int(c, f"methods.{name}.{key}", 1)
      for key in ("eps", "adv_step", "lam", "weight_decay"):
        if key in section:
          _float(c, f"methods.{name}.{key}", 0.0)
      if "collapse_share" in section:
        _float(c, f"methods.{name}.collapse_share", 0.0, 1.0, lo_open=True)
    if name == "scrub" or section.get("base", name) == "scrub":
      _int(c, f"methods.{name}.msteps", 0)
      _float(c, f"methods.{name}.temperature", 0.0, lo_open=True)
      _float(c, f"methods.{name}.gamma", 0.0)
    if name == "salun" or section.get("base", name) == "salun":
      _float(c, f"methods.{name}.mask_fraction", 0.0, 1.0, lo_open=True)


def _check_methods(c) -> None:
  from tmu_jax import methods  # pylint: disable=import-outside-toplevel
  names = methods.available()
  for name in _get(c, "experiment.methods"):
    base = c.methods[name].get("base", name) if name in c.methods else name
    if base not in names:
      _fail("experiment.methods", tuple(c.experiment.methods),
            f"{name!r} is not a method; valid: {', '.join(names)}")
    if name not in c.methods:
      raise ConfigError(f"config section methods.{name} is missing (see configs/default.py)")
    section = c.methods[name]
    for key in ("epochs", "max_steps", "batch_size", "forget_batch_size"):
      if key in section:
        _int(c, f"methods.{name}.{key}", 1)
    if "lr" in section:
      _float(c, f"methods.{name}.lr", 0.0, lo_open=True)
    for key in ("retain_fraction", "alpha", "fraction"):
      if key in section:
        _float(c, f"methods.{name}.{key}", 0.0, 1.0)


def _check_tfds_name(name: str) -> None:
  if name in data_lib.DATASETS:
    return
  import tensorflow_datasets as tfds
  try:
    tfds.builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError:
    _fail("data.name", name, f"expected one of {', '.join(sorted(data_lib.DATASETS))} or a "
          "TFDS dataset name")


def _check_devices(c) -> None:
  import jax
  available = len(jax.devices())
  n = c.num_devices or available
  if n > available:
    _fail("num_devices", c.num_devices, f"only {available} device(s) are available")
  if c.train.batch_size % n:
    _fail("train.batch_size", c.train.batch_size, f"must be a multiple of the {n} devices")


def check_against_data(c, num_classes: int, labels) -> None:
  """Checks the fields that depend on the loaded dataset (class range, forget size)."""
  classes = list(c.experiment.forget_classes) or [c.data.forget_class]
  for cls in classes:
    if c.data.scenario != "instance" and not 0 <= cls < num_classes:
      field = "experiment.forget_classes" if c.experiment.forget_classes else "data.forget_class"
      _fail(field, cls, f"expected a class in [0, {num_classes - 1}]")
    if c.data.scenario == "class":
      continue
    sizes = tuple(c.experiment.get("forget_sizes", ()))
    rounds = c.experiment.get("rounds", 1)
    for size in sizes or (c.data.forget_size,):
      field = "experiment.forget_sizes" if sizes else "data.forget_size"
      try:
        data_lib.make_split(labels, num_classes, scenario=c.data.scenario, forget_class=cls,
                            forget_size=size * rounds, holdout_fraction=c.data.holdout_fraction,
                            seed=c.seed)
      except ValueError as e:
        what = f"{size} × {rounds} rounds" if rounds > 1 else size
        _fail(field, sizes or c.data.forget_size, f"|D_f| = {what}: {e}")
