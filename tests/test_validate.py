"""Every validation error: one sentence naming the field, and exit code 2 from the launcher
before any training.

- every field of every registered method's settings (nested ones included) is given values its
  declared check must reject (wrong type, below its lower bound, above its upper bound, not one
  of its choices), and its bounds themselves;
- the cases of the issues, in-process (``check_config`` / ``check_against_data``) and through
  the launcher in a subprocess: exit 2, exactly one line on stderr, no model trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
import time

import ml_collections
import numpy as np
import pytest

from configs import default, fashion_mnist
from tmu_jax import data, methods, schema, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"
HAVE_FMNIST = all(os.path.exists(os.path.join(FMNIST, f)) for f in data.IDX_FILES)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> str:
  """A folder with the four IDX file names (empty: check_config only looks for them)."""
  folder = tmp_path_factory.mktemp("idx")
  for f in data.IDX_FILES:
    (folder / f).write_bytes(b"")
  return str(folder)


def _config(idx_dir: str, **fields) -> ml_collections.ConfigDict:
  """configs/fashion_mnist.py on the fake IDX folder, with dotted ``fields`` set (any type)."""
  c = fashion_mnist.get_config()
  c.data.dir = idx_dir
  for dotted, value in fields.items():
    _set(c, dotted, value)
  return c


def _set(c, dotted: str, value) -> None:
  """Sets ``c.<dotted>`` even to a value of another type, as a config file could: the field's
  section is rebuilt from a dict (a ConfigDict would cast True to 1.0 for a float field)."""
  *parents, leaf = dotted.split(".")
  if not parents:
    with c.ignore_type():
      c[leaf] = value
    return
  holder = c
  for part in parents[:-1]:
    holder = holder[part]
  with c.unlocked():
    holder[parents[-1]] = ml_collections.ConfigDict({**holder[parents[-1]].to_dict(),
                                                     leaf: value})


def _rejects(c, field: str) -> str:
  """check_config's one-line ConfigError naming ``field``: the message."""
  with pytest.raises(validate.ConfigError) as e:
    validate.check_config(c)
  msg = str(e.value)
  assert f"config field {field}" in msg and "\n" not in msg, msg
  return msg


@pytest.mark.parametrize("name,kwargs,says", [
    ("cnn", dict(conv="im2col"), "model.kwargs.conv must be one of auto, xla, patches"),
    ("cnn", dict(chanels=(4,)), "unexpected keyword argument 'chanels'"),
    ("resnet18", dict(width=0), "model.kwargs.width must be a positive int"),
    ("allcnn", dict(dropout=1.0), "model.kwargs.dropout must be in [0, 1)")])
def test_model_kwargs_are_checked_before_any_work(name, kwargs, says):
  """A constructor argument the model refuses (or does not have) is one ConfigError naming
  model.kwargs, not a traceback once training starts."""
  from configs import fashion_mnist
  c = fashion_mnist.get_config()
  c.model.name = name
  c.model.kwargs = ml_collections.ConfigDict(kwargs)
  assert says in _rejects(c, "model.kwargs")


# ----------------------------------------------------------------------------- every method field


def _leaves(cls, prefix: str = ""):
  """(dotted path, Check or None) of every field of settings class ``cls``, nested included."""
  for f in dataclasses.fields(cls):
    check = f.metadata.get(schema._CHECK)  # pylint: disable=protected-access
    path = prefix + f.name
    if check is not None and check.kind == "nested":
      yield from _leaves(f.default_factory, path + ".")
    else:
      yield path, check


def _sections(cls, prefix: str = ""):
  """Dotted paths of the nested settings sections of ``cls`` (e.g. ``twin``, ``unlearn``)."""
  for f in dataclasses.fields(cls):
    check = f.metadata.get(schema._CHECK)  # pylint: disable=protected-access
    if check is not None and check.kind == "nested":
      yield prefix + f.name
      yield from _sections(f.default_factory, prefix + f.name + ".")


def _below(check: schema.Check):
  if check.lo_open:
    return check.lo
  return check.lo - 1 if check.kind == "int" else math.nextafter(check.lo, -math.inf)


def _above(check: schema.Check):
  if check.hi_open:
    return check.hi
  return check.hi + 1 if check.kind == "int" else math.nextafter(check.hi, math.inf)


def _bad_values(check: schema.Check) -> list[tuple[str, object]]:
  """(label, value) pairs ``check`` must reject, derived from its kind, bounds and choices."""
  wrong = dict(int=[("str", "3"), ("float", 2.5), ("bool", True), ("none", None)],
               float=[("str", "0.5"), ("bool", True), ("nan", math.nan), ("inf", math.inf),
                      ("none", None)],
               bool=[("int", 1), ("str", "True"), ("none", None)],
               str=[("int", 3), ("none", None)], list=[("int", 3), ("none", None)])
  out = list(wrong[check.kind])
  if check.lo is not None:
    out.append(("below_lo", _below(check)))
  if check.hi is not None:
    out.append(("above_hi", _above(check)))
  if check.choices is not None:
    first = str(check.choices[0])
    out.append(("not_a_choice", "bogus"))
    if first.upper() != first:
      out.append(("wrong_case", first.upper()))
    if check.kind == "list":
      out += [("unknown_item", f"{first},bogus"), ("repeated", f"{first},{first}"),
              ("empty", ""), ("trailing_comma", f"{first},")]
  return out


def _good_bounds(check: schema.Check) -> list[tuple[str, object]]:
  """Values at the edges of ``check``'s range that it must accept."""
  out = []
  for label, bound, is_open, inward in (("at_lo", check.lo, check.lo_open, 1),
                                        ("at_hi", check.hi, check.hi_open, -1)):
    if bound is None:
      continue
    if check.kind == "int":
      out.append((label, int(bound) + (inward if is_open else 0)))
    else:
      out.append((label, math.nextafter(bound, inward * math.inf) if is_open else float(bound)))
  return out


FIELDS = [(name, path, check) for name in methods.available()
          for path, check in _leaves(methods.get(name).settings)]
BAD = [pytest.param(name, path, value, id=f"{name}.{path}={label}")
       for name, path, check in FIELDS if check is not None
       for label, value in _bad_values(check)]
EDGES = [pytest.param(name, path, value, id=f"{name}.{path}={label}")
         for name, path, check in FIELDS if check is not None
         for label, value in _good_bounds(check)]

SECTIONS = [(name, path) for name in methods.available()
            for path in _sections(methods.get(name).settings)]


def test_every_method_field_declares_a_check():
  """Each registered method has settings fields, each declared with schema.field/nested."""
  assert set(methods.available()) >= {"finetune", "neg_grad", "neg_grad_plus", "random_label",
                                      "bad_teacher", "scrub", "salun", "tmu", "tmu_plus", "l2ul"}
  for name in methods.available():
    assert any(n == name for n, _, _ in FIELDS), name
  assert [f"{n}.{p}" for n, p, check in FIELDS if check is None] == []
  # Every field gets at least its wrong-type cases, bounded ones their bounds too.
  assert len(BAD) > 3 * len(FIELDS)


@pytest.mark.parametrize("name,path,value", BAD)
def test_every_method_field_rejects_bad_values(idx_dir, name, path, value):
  """A bad value of methods.<name>.<path> fails check_config in one line naming the field."""
  c = _config(idx_dir, **{"experiment.methods": (name,), f"methods.{name}.{path}": value})
  msg = _rejects(c, f"methods.{name}.{path} = ")
  assert "expected" in msg


@pytest.mark.parametrize("name,path,value", EDGES)
def test_every_method_field_accepts_its_bounds(idx_dir, name, path, value):
  """The edges of each field's declared range are valid."""
  validate.check_config(_config(idx_dir, **{"experiment.methods": (name,),
                                            f"methods.{name}.{path}": value}))


def test_default_sections_are_valid(idx_dir):
  """Every method section of the defaults (with the L2UL ablation variants) passes."""
  c = _config(idx_dir)
  c.experiment.methods = tuple(c.methods.keys())
  validate.check_config(c)


def test_a_variant_section_is_checked_by_its_base(idx_dir):
  """l2ul_adv (base l2ul) is checked with L2UL's settings, named by its own section."""
  c = _config(idx_dir, **{"experiment.methods": ("l2ul_adv",), "methods.l2ul_adv.num_adv": 0})
  _rejects(c, "methods.l2ul_adv.num_adv = 0")
  c = _config(idx_dir, **{"experiment.methods": ("l2ul_adv",), "methods.l2ul_adv.base": "nope"})
  _rejects(c, "experiment.methods")


@pytest.mark.parametrize("section", ["methods.tmu", "methods.tmu.twin", "methods.tmu.unlearn"])
def test_unknown_key_in_a_method_section(idx_dir, section):
  """An unknown key inside a method section (or a nested one) is named with the valid keys."""
  c = _config(idx_dir, **{f"{section}.bogus_key": 1})
  msg = _rejects(c, f"{section}.bogus_key is not a setting")
  assert "valid:" in msg


@pytest.mark.parametrize("name,path", SECTIONS, ids=[f"{n}.{p}" for n, p in SECTIONS])
def test_a_section_that_is_not_a_mapping(idx_dir, name, path):
  """A nested section replaced by a number (as a config file could) is one ConfigError."""
  assert ("tmu", "twin") in SECTIONS
  c = _config(idx_dir, **{"experiment.methods": (name,), f"methods.{name}.{path}": 5})
  assert "section of settings" in _rejects(c, f"methods.{name}.{path} = 5")


def test_missing_method_section(idx_dir):
  """A method in experiment.methods without its section is named."""
  c = _config(idx_dir)
  del c.methods["scrub"]
  c.experiment.methods = ("scrub",)
  with pytest.raises(validate.ConfigError, match="methods.scrub is missing"):
    validate.check_config(c)


# ----------------------------------------------------------------------------- the issues' cases

ISSUE = [  # (field, value, the field the message names)
    ("methods.tmu.threshold", "twinrate", "methods.tmu.threshold"),
    ("methods.tmu.features", "nf,xf", "methods.tmu.features"),
    ("methods.tmu.unlearn.mechanism", "bogus", "methods.tmu.unlearn.mechanism"),
    ("methods.bad_teacher.optimizer", "lion", "methods.bad_teacher.optimizer"),
    ("methods.tmu.n_twins", 0, "methods.tmu.n_twins"),
    ("methods.tmu.clf.lr", -1.0, "methods.tmu.clf.lr"),
    ("methods.tmu.unlearn.lr", -1.0, "methods.tmu.unlearn.lr"),
    ("methods.tmu.nf.k", 0, "methods.tmu.nf.k"),
    ("methods.tmu.twin.epochs", 0, "methods.tmu.twin.epochs"),
    ("methods.tmu.twin.repeat", 0, "methods.tmu.twin.repeat"),
    ("methods.tmu.unlearn.hard_repeat", -3, "methods.tmu.unlearn.hard_repeat"),
    ("experiment.mia_samples", 0, "experiment.mia_samples"),
    ("experiment.recompute", ("scrub",), "experiment.recompute"),
    ("methods.tmu_plus.unlearn.mechanism", "runnerup", "methods.tmu_plus.unlearn.mechanism"),
]

OTHER = [  # fields outside the method sections
    ("data.name", "imagenet_nope", "data.name"),
    ("data.scenario", "everything", "data.scenario"),
    ("data.forget_class", 10, "data.forget_class"),
    ("data.forget_class", -1, "data.forget_class"),
    ("data.forget_size", 0, "data.forget_size"),
    ("data.holdout_fraction", 1.0, "data.holdout_fraction"),
    ("data.holdout_fraction", -0.1, "data.holdout_fraction"),
    ("data.dir", "/nonexistent/folder", "data.dir"),
    ("data.source", "ftp", "data.source"),
    ("data.train_subset", -5, "data.train_subset"),
    ("data.mode", "forget", "data.mode"),
    ("model.name", "resnet9000", "model.name"),
    ("train.epochs", 0, "train.epochs"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.lr", 0.0, "train.lr"),
    ("train.lr", -1.0, "train.lr"),
    ("train.lr", math.inf, "train.lr"),
    ("train.momentum", 1.0, "train.momentum"),
    ("train.weight_decay", -1e-4, "train.weight_decay"),
    ("train.schedule", "linear-ish", "train.schedule"),
    ("train.optimizer", "lion", "train.optimizer"),
    ("train.augment", "yes", "train.augment"),
    ("train.bogus", 1, "train.bogus"),
    ("seed", -3, "seed"),
    ("verbose", 1, "verbose"),
    ("num_devices", 64, "num_devices"),
    ("experiment.forget_classes", (1, 12), "experiment.forget_classes"),
    ("experiment.seeds", (0, -1), "experiment.seeds"),
    ("experiment.forget_sizes", (0,), "experiment.forget_sizes"),
    ("experiment.rounds", 2, "experiment.rounds"),
    ("experiment.methods", ("tmu", "nope"), "experiment.methods"),
]


@pytest.mark.parametrize("field,value,named", ISSUE + OTHER,
                         ids=[f"{f}={v!r}" for f, v, _ in ISSUE + OTHER])
def test_bad_field_names_field_and_value(idx_dir, field, value, named):
  """A bad field fails check_config with one line naming it."""
  _rejects(_config(idx_dir, **{field: value}), named)


def test_good_config_passes(idx_dir):
  """The embedded default and the CIFAR-10 variant of the defaults pass."""
  validate.check_config(_config(idx_dir))
  c = default.get_config()
  c.data.name = "cifar10"
  validate.check_config(c)


def test_recompute_all_and_listed_methods_pass(idx_dir):
  """experiment.recompute takes 'all' or names from experiment.methods."""
  validate.check_config(_config(idx_dir, **{"experiment.recompute": ("all",)}))
  validate.check_config(_config(idx_dir, **{"experiment.recompute": ("tmu", "finetune")}))


def test_idx_folder_missing_files(idx_dir, tmp_path):
  """An IDX folder without one of its files is named with the file."""
  folder = tmp_path / "partial"
  folder.mkdir()
  for f in data.IDX_FILES[:-1]:
    (folder / f).write_bytes(b"")
  with pytest.raises(validate.ConfigError, match=data.IDX_FILES[-1]):
    validate.check_config(_config(idx_dir, **{"data.dir": str(folder)}))


LABELS = np.repeat(np.arange(10), 50)  # 50 per class; holdout 0.2 leaves 40 in training


def test_forget_size_larger_than_class(idx_dir):
  """|D_f| above the class's training portion is named with the valid range."""
  c = _config(idx_dir, **{"data.forget_size": 41})
  with pytest.raises(validate.ConfigError, match=r"data.forget_size = 41.*\[1, 40\]"):
    validate.check_against_data(c, 10, LABELS)


def test_every_forget_size_of_a_sweep_is_checked(idx_dir):
  """Each size of experiment.forget_sizes is checked against the data."""
  c = _config(idx_dir, **{"experiment.forget_sizes": (10, 41)})
  with pytest.raises(validate.ConfigError, match=r"experiment.forget_sizes = \(10, 41\).*41"):
    validate.check_against_data(c, 10, LABELS)


def test_forget_size_of_the_whole_class_with_tmu(idx_dir):
  """|D_f| = every class-c training sample leaves D_r none: TMU cannot compute NF."""
  c = _config(idx_dir, **{"data.forget_size": 40})
  with pytest.raises(validate.ConfigError, match=r"data.forget_size = 40 .*tmu, tmu_plus") as e:
    validate.check_against_data(c, 10, LABELS)
  assert "\n" not in str(e.value)
  c.data.forget_size = 39
  validate.check_against_data(c, 10, LABELS)
  c = _config(idx_dir, **{"data.forget_size": 40, "experiment.methods": ("finetune",)})
  validate.check_against_data(c, 10, LABELS)  # only TMU needs class-c samples in D_r


def test_holdout_zero_with_tmu(idx_dir):
  """holdout_fraction 0 leaves TMU no twin data; methods without the pool do not mind."""
  c = _config(idx_dir, **{"data.holdout_fraction": 0.0, "data.forget_size": 10})
  with pytest.raises(validate.ConfigError, match=r"data.holdout_fraction = 0.0 .*tmu") as e:
    validate.check_against_data(c, 10, LABELS)
  assert "\n" not in str(e.value)
  c.experiment.methods = ("finetune", "bad_teacher")
  validate.check_against_data(c, 10, LABELS)


def test_class_out_of_range_for_loaded_data():
  """A forget class beyond a TFDS dataset's classes is named once the data is loaded."""
  c = default.get_config()
  c.data.name = "some_tfds_set"
  c.data.forget_class = 7
  with pytest.raises(validate.ConfigError, match="data.forget_class = 7"):
    validate.check_against_data(c, 5, np.repeat(np.arange(5), 10))


def test_workdir_checks(tmp_path):
  """--workdir: a file, an uncreatable path and an empty value are refused in one line."""
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(validate.ConfigError, match="is not a folder"):
    validate.check_workdir(str(f))
  with pytest.raises(validate.ConfigError, match="cannot be created"):
    validate.check_workdir(str(f / "sub"))
  with pytest.raises(validate.ConfigError, match="empty"):
    validate.check_workdir("")
  assert os.path.isabs(validate.check_workdir(str(tmp_path / "new")))


def test_unwritable_cache_dir(tmp_path):
  """A cache_dir that cannot be created (under /proc, even for root) is named."""
  c = default.get_config()
  c.cache_dir = "/proc/tmu_cache"
  with pytest.raises(validate.ConfigError, match=r"cache_dir='/proc/tmu_cache' cannot be created"):
    validate.check_writable_dirs(c, str(tmp_path))
  assert not os.path.exists("/proc/tmu_cache")


# ----------------------------------------------------------------------------- the launcher

# Runs the launcher's own entry (tmu_jax.cli._main, which `python launch.py` calls) once per
# case in one interpreter, so that JAX is imported once: file descriptor 2 goes to a file per
# case, so whatever any library writes to stderr counts too. Prints one JSON line per case.
DRIVER = textwrap.dedent("""
    import json, os, sys, tempfile, time
    from absl import flags
    from tmu_jax import cli
    sys.modules["__main__"].__doc__ = cli.__doc__
    for argv in json.loads(sys.stdin.read()):
      sys.stderr.flush()
      saved = os.dup(2)
      with tempfile.TemporaryFile() as err:
        os.dup2(err.fileno(), 2)
        t0 = time.perf_counter()
        try:
          cli._main(["tmu-jax"] + argv)
          code = 0
        except SystemExit as e:
          code = e.code if isinstance(e.code, int) else 1
        seconds = time.perf_counter() - t0
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        err.seek(0)
        text = err.read().decode(errors="replace")
      for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)  # the next case's overrides define them again
      flags.FLAGS.unparse_flags()
      print(json.dumps(dict(argv=argv, code=code, stderr=text, seconds=seconds)), flush=True)
""")

UNKNOWN_KEY_CONFIG = textwrap.dedent("""
    from configs import fashion_mnist
    def get_config(arg=None):
      c = fashion_mnist.get_config(arg)
      c.methods.tmu.bogus_key = 1
      return c
""")


def _class_portion(labels: np.ndarray, cls: int = 6, holdout: float = 0.2) -> int:
  """The class-``cls`` samples left in training after the holdout pool: |D_f| that takes all."""
  n = int((labels == cls).sum())
  return n - int(round(holdout * n))


# The issues' cases as command-line overrides of configs/fashion_mnist.py:smoke.
OVERRIDES = [
    ("methods.tmu.threshold", "twinrate"), ("methods.tmu.features", "nf,xf"),
    ("methods.tmu.unlearn.mechanism", "bogus"), ("methods.bad_teacher.optimizer", "lion"),
    ("methods.tmu.n_twins", "0"), ("methods.tmu.clf.lr", "-1"), ("methods.tmu.unlearn.lr", "-1"),
    ("methods.tmu.nf.k", "0"), ("methods.tmu.twin.epochs", "0"), ("methods.tmu.twin.repeat", "0"),
    ("methods.tmu.unlearn.hard_repeat", "-3"), ("experiment.mia_samples", "0"),
    ("experiment.recompute", "('scrub',)"), ("model.name", "nope"),
]
OTHER_CASES = ["unknown_key_in_file", "unknown_key_override", "cache_dir_under_proc"]
DATA_CASES = ["holdout_zero_with_tmu", "forget_size_whole_class_with_tmu"]  # need real data
LAUNCH_IDS = [f for f, _ in OVERRIDES] + OTHER_CASES + DATA_CASES


def _fake_idx(folder) -> str:
  os.makedirs(folder, exist_ok=True)
  for f in data.IDX_FILES:
    open(os.path.join(folder, f), "wb").close()
  return str(folder)


def _launcher_cases(tmp_path) -> list[tuple[str, list[str], str]]:
  """(id, launcher arguments, what the one line names), each with its own workdir."""
  data_dir = FMNIST if HAVE_FMNIST else _fake_idx(tmp_path / "idx")
  smoke = [f"--config={ROOT}/configs/fashion_mnist.py:smoke", f"--config.data.dir={data_dir}"]
  cases = [(f, smoke + [f"--config.{f}={v}"], f"config field {f} = ") for f, v in OVERRIDES]
  config = tmp_path / "unknown_key.py"
  config.write_text(UNKNOWN_KEY_CONFIG)
  cases.append(("unknown_key_in_file", [f"--config={config}:smoke",
                                        f"--config.data.dir={data_dir}"],
                "config field methods.tmu.bogus_key is not a setting"))
  cases.append(("unknown_key_override", smoke + ["--config.methods.tmu.bogus_key=1"],
                "unknown config field"))
  cases.append(("cache_dir_under_proc", smoke + ["--config.cache_dir=/proc/tmu_cache"],
                "cache_dir='/proc/tmu_cache' cannot be created"))
  if HAVE_FMNIST:  # the data-dependent checks run once the real data is loaded
    labels = data.read_idx(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz"))
    whole = _class_portion(labels)  # 4 800: 6 000 shirts less the 20% holdout
    full = [f"--config={ROOT}/configs/fashion_mnist.py", f"--config.data.dir={FMNIST}"]
    cases.append(("holdout_zero_with_tmu", smoke + ["--config.data.holdout_fraction=0"],
                  "config field data.holdout_fraction = 0.0"))
    cases.append(("forget_size_whole_class_with_tmu",
                  full + [f"--config.data.forget_size={whole}"],
                  f"config field data.forget_size = {whole} "))
  return [(name, args + [f"--workdir={tmp_path / name}"], named) for name, args, named in cases]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
  """Every launcher case run once in one subprocess: {id: (result, workdir, named)}."""
  tmp = tmp_path_factory.mktemp("launch")
  cases = _launcher_cases(tmp)
  out = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       input=json.dumps([args for _, args, _ in cases]))
  assert out.returncode == 0, out.stderr[-3000:]
  results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert len(results) == len(cases), out.stdout[-3000:]
  return {name: (r, tmp / name, named) for (name, _, named), r in zip(cases, results)}


def _assert_refused(result: dict, workdir, named: str) -> None:
  """Exit 2, one stderr line naming ``named``, fast, and no model cached or results written."""
  lines = result["stderr"].splitlines()
  assert result["code"] == 2, result
  assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result
  assert result["seconds"] < 20, result
  cache = os.path.join(workdir, "cache")
  assert not os.path.isdir(cache) or os.listdir(cache) == [], os.listdir(cache)
  assert not os.path.exists(os.path.join(workdir, "results.json"))


@pytest.mark.parametrize("case", LAUNCH_IDS)
def test_launcher_refuses_before_training(launched, case):
  """The launcher exits 2 with one line on stderr, in seconds, with no model trained."""
  if case not in launched:
    pytest.skip("needs the real Fashion-MNIST (apt-get install dataset-fashion-mnist)")
  result, workdir, named = launched[case]
  _assert_refused(result, workdir, named)
  if case == "cache_dir_under_proc":
    assert not os.path.exists("/proc/tmu_cache")


def test_launch_py_exits_2_with_one_line(tmp_path):
  """`python launch.py` itself: a read-only cache_dir is one line and exit code 2."""
  data_dir = FMNIST if HAVE_FMNIST else _fake_idx(tmp_path / "idx")
  t0 = time.perf_counter()
  out = subprocess.run([sys.executable, "launch.py", "--config=configs/fashion_mnist.py:smoke",
                        f"--workdir={tmp_path}/w", f"--config.data.dir={data_dir}",
                        "--config.cache_dir=/proc/tmu_cache"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 2, out.stderr
  assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: cache_dir="), out.stderr
  assert time.perf_counter() - t0 < 20
  assert not os.path.exists(tmp_path / "w" / "cache")


@pytest.mark.parametrize("arg", [
    None, "smoke", "sweep", "sweep_full", "sizes", "epsilon", "epsilon3", "epsilon_full",
    "epsilon_cost", "cost", "study", "study_cnn", "study_full", "scrub_bn", "cnn_unlearn_dev",
    "study_cnn_tuned", "baseline_dev", "baseline_report", "unlearn_dev", "unlearn_report",
    "clf_dev", "clf_dev2", "clf_report", "mech_dev", "mech_report", "norm_dev", "kf_dev",
    "kf_report", "random10"])
def test_every_named_fashion_mnist_config_validates(arg):
  """Each documented configs/fashion_mnist.py argument passes the checks run before any work."""
  from configs import fashion_mnist
  validate.check_config(fashion_mnist.get_config(arg))


def test_redefault_keeps_the_base_fields_check():
  """A settings subclass's redefaulted field (TMU+ over TMU) has a new default and the base
  field's check, doc included; a default of another kind is refused at definition."""
  from tmu_jax.methods.tmu.settings import Twin, TwinPlus
  base = {f.name: f for f in dataclasses.fields(Twin)}
  plus = {f.name: f for f in dataclasses.fields(TwinPlus)}
  assert (plus["retain_fraction"].default, plus["epochs"].default) == (0.1, 2)
  for name in ("retain_fraction", "epochs", "disjoint"):
    assert plus[name].metadata == base[name].metadata
  with pytest.raises(validate.ConfigError, match="twin.retain_fraction = 0.0 "):
    schema.parse(TwinPlus, dict(retain_fraction=0.0), "twin")
  with pytest.raises(TypeError, match="not of kind int"):
    schema.redefault(Twin, "epochs", 2.5)
