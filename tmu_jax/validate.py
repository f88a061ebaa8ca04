"""Config validation: every field is checked before any work starts.

Each failure is one sentence naming the field, the value it had and what would be valid; the
launcher prints it and exits with code 2 (never a traceback from inside JAX or TFDS). Method
sections are checked by their registered typed settings (:mod:`tmu_jax.schema`), so a method's
fields are validated where they are declared.
"""

from __future__ import annotations

import numbers
import os

from tmu_jax import compile_cache, data as data_lib, methods, models, protocol, schema
from tmu_jax.evaluation.settings import Evaluation
from tmu_jax.errors import ConfigError
from tmu_jax.workdir import check_writable

__all__ = ["ConfigError", "check_against_data", "check_config", "check_workdir",
           "check_writable_dirs"]


def _fail(field: str, value, valid: str):
  raise ConfigError(f"config field {field} = {value!r} is not valid: {valid}")


def _get(c, field: str):
  node = c
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"config field {field} is missing (start from configs/default.py)")
    node = node[part]
  return node


def _check(c, field: str, check: schema.Check):
  """One field against a schema check (the same rules as method settings)."""
  return schema.check_value(check, field, _get(c, field))


def _int(c, field: str, lo=None, hi=None):
  return _check(c, field, schema.Check("int", lo, hi))


def _float(c, field: str, lo=None, hi=None, lo_open=False, hi_open=False):
  return _check(c, field, schema.Check("float", lo, hi, lo_open, hi_open))


def _choice(c, field: str, choices):
  return _check(c, field, schema.Check("str", choices=tuple(choices)))


def _bool(c, field: str):
  return _check(c, field, schema.Check("bool"))


def _ints(c, field: str, lo: int, hi: int | None = None) -> tuple:
  values = tuple(_get(c, field))
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or (
        hi is not None and v > hi):
      rng = f"[{lo}, {hi}]" if hi is not None else f"≥ {lo}"
      _fail(field, values, f"expected integers {rng}")
  return values


def check_workdir(workdir: str) -> str:
  """The absolute workdir, created if needed; ConfigError if it cannot hold results."""
  if not workdir:
    raise ConfigError("--workdir is empty: give a folder for results and checkpoints")
  return check_writable(os.path.abspath(os.path.expanduser(workdir)), "--workdir")


def check_writable_dirs(c, workdir: str) -> None:
  """The model cache folder can be written (checked before any training)."""
  check_writable(protocol.cache_dir(c, workdir),
                 "cache_dir" if c.cache_dir else "--workdir (its cache/ folder)")
  if c.compile_cache_dir:
    try:
      check_writable(compile_cache.resolve(c.compile_cache_dir), "compile_cache_dir")
    except ConfigError as e:
      raise ConfigError(f'{e}, or turn the compilation cache off with '
                        f'--config.compile_cache_dir=""') from None


def check_config(c) -> None:
  """Checks every field that can be checked without loading data."""
  _int(c, "seed", 0)
  _bool(c, "verbose")
  _check(c, "compile_cache_dir", schema.Check("str"))
  _check_data(c)
  _check_model(c)
  protocol.recipe_of(c)  # every train.* field, by the Recipe schema
  _int(c, "num_devices", 0)
  _check_experiment(c)
  schema.parse(Evaluation, _get(c, "evaluation"), "evaluation")
  _check_methods(c)
  _check_devices(c)


def _check_model(c) -> None:
  """model.name is registered and the constructor accepts model.kwargs (building a linen module
  runs no computation; each factory checks its own arguments and names the field)."""
  name = _choice(c, "model.name", models.available())
  kwargs = _get(c, "model.kwargs")
  try:
    models.get_model(name, 10, **(kwargs.to_dict() if hasattr(kwargs, "to_dict") else kwargs))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config field model.kwargs is not valid for {name}: {e}") from None


def _check_data(c) -> None:
  _float(c, "data.holdout_fraction", 0.0, 1.0, hi_open=True)
  scenario = _choice(c, "data.scenario", data_lib.SCENARIOS)
  _int(c, "data.forget_size", 1)
  _int(c, "data.train_subset", 0)
  _int(c, "data.subset_seed", 0)
  _choice(c, "data.mode", ("misclassify", "relabel"))
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
  if known is not None and scenario != "instance":
    _int(c, "data.forget_class", 0, known["classes"] - 1)
    _ints(c, "experiment.forget_classes", 0, known["classes"] - 1)


def _check_experiment(c) -> None:
  _ints(c, "experiment.forget_classes", 0)
  _ints(c, "experiment.seeds", 0)
  _ints(c, "experiment.forget_sizes", 1)
  _int(c, "experiment.mia_samples", 1)
  rounds = _int(c, "experiment.rounds", 1)
  if rounds > 1 and c.data.scenario != "instance":
    _fail("experiment.rounds", rounds, "continual rounds need data.scenario = 'instance'")
  _bool(c, "experiment.gold")
  _bool(c, "experiment.concurrent_models")
  _int(c, "experiment.gold_models", 1)
  n = _int(c, "experiment.epsilon", 0)
  if n in (1, 2):
    _fail("experiment.epsilon", n, "0 (off) or >= 3 (ε needs ln(N − 1) > 0)")
  if (n or _get(c, "experiment.gold_models") > 1) and not _get(c, "experiment.gold"):
    _fail("experiment.gold", False, "True: a gold ensemble or the ε score needs gold models")
  _choice(c, "experiment.ensemble", ("auto", "vmap", "map"))
  _int(c, "experiment.ensemble_devices", 0)
  _int(c, "experiment.ensemble_memory_mb", 1)
  names = tuple(_get(c, "experiment.methods"))
  for r in tuple(_get(c, "experiment.recompute")):
    if r != "all" and r not in names:
      _fail("experiment.recompute", tuple(c.experiment.recompute),
            f"expected 'all' or names from experiment.methods ({', '.join(names)})")


def _check_methods(c) -> None:
  """Each method of experiment.methods exists and its section parses by its settings schema."""
  valid = methods.available()
  for name in _get(c, "experiment.methods"):
    section = c.methods[name] if name in c.methods else None
    base = methods.base_of(name, section)
    if base not in valid:
      _fail("experiment.methods", tuple(c.experiment.methods),
            f"{name!r} is not a method; valid: {', '.join(valid)} (or a section with a base)")
    if section is None:
      raise ConfigError(f"config section methods.{name} is missing (see configs/default.py)")
    schema.parse(methods.get(base).settings, section, f"methods.{name}")
    methods.rng_name_of(name, section)


def _check_tfds_name(name: str) -> None:
  if name in data_lib.DATASETS:
    return
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  (slow import)
  try:
    tfds.builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError:
    _fail("data.name", name, f"expected one of {', '.join(sorted(data_lib.DATASETS))} or a "
          "TFDS dataset name")


def _check_devices(c) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  available = len(jax.devices())
  n = c.num_devices or available
  if n > available:
    _fail("num_devices", c.num_devices, f"only {available} device(s) are available")
  if c.train.batch_size % n:
    _fail("train.batch_size", c.train.batch_size, f"must be a multiple of the {n} devices")


def check_against_data(c, num_classes: int, labels) -> None:
  """Checks the fields that depend on the loaded dataset (class range, forget sizes, and what
  the methods need of the split: TMU needs class-c samples in the pool and in D_r)."""
  classes = list(c.experiment.forget_classes) or [c.data.forget_class]
  needs = {n for name in c.experiment.methods
           for n in methods.get(methods.base_of(name, c.methods[name])).needs}
  tmu_like = [name for name in c.experiment.methods
              if methods.get(methods.base_of(name, c.methods[name])).group == "tmu"]
  for cls in classes:
    if c.data.scenario != "instance" and not 0 <= cls < num_classes:
      field = "experiment.forget_classes" if c.experiment.forget_classes else "data.forget_class"
      _fail(field, cls, f"expected a class in [0, {num_classes - 1}]")
    if c.data.scenario == "class":
      continue
    sizes = tuple(c.experiment.forget_sizes)
    rounds = c.experiment.rounds
    for size in sizes or (c.data.forget_size,):
      field = "experiment.forget_sizes" if sizes else "data.forget_size"
      try:
        split = data_lib.make_split(labels, num_classes, scenario=c.data.scenario,
                                    forget_class=cls, forget_size=size * rounds,
                                    holdout_fraction=c.data.holdout_fraction, seed=c.seed)
      except ValueError as e:
        what = f"{size} × {rounds} rounds" if rounds > 1 else size
        _fail(field, sizes or c.data.forget_size, f"|D_f| = {what}: {e}")
      if "pool" in needs and c.data.scenario == "subclass" and not (
          labels[split.holdout] == cls).any():
        _fail("data.holdout_fraction", c.data.holdout_fraction,
              f"methods {', '.join(tmu_like) or 'that use the pool'} need class-{cls} samples "
              "in the holdout pool (TMU's twin data): use a fraction > 0")
      if tmu_like and c.data.scenario == "subclass" and not (labels[split.retain] == cls).any():
        _fail(field, sizes or c.data.forget_size,
              f"|D_f| takes every class-{cls} training sample, so D_r has none and "
              f"{', '.join(tmu_like)} cannot compute NF (use a smaller forget size)")
