"""Every validation error: one clear sentence naming the field, and exit code 2 from launch.py."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs import default, fashion_mnist
from tmu_jax import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(tmp_path):
  c = fashion_mnist.get_config()
  c.data.dir = _fake_idx(tmp_path)
  return c


def _fake_idx(tmp_path):
  folder = tmp_path / "idx"
  folder.mkdir(exist_ok=True)
  from tmu_jax import data
  for f in data.IDX_FILES:
    (folder / f).write_bytes(b"")
  return str(folder)


BAD = [
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
    ("model.name", "resnet9000", "model.name"),
    ("train.epochs", 0, "train.epochs"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.lr", 0.0, "train.lr"),
    ("train.lr", -1.0, "train.lr"),
    ("train.momentum", 1.0, "train.momentum"),
    ("train.weight_decay", -1e-4, "train.weight_decay"),
    ("train.schedule", "linear-ish", "train.schedule"),
    ("train.optimizer", "lion", "train.optimizer"),
    ("seed", -3, "seed"),
    ("num_devices", 64, "num_devices"),
    ("experiment.forget_classes", (1, 12), "experiment.forget_classes"),
    ("experiment.seeds", (0, -1), "experiment.seeds"),
]


@pytest.mark.parametrize("field,value,named", BAD)
def test_bad_field_names_field_and_value(tmp_path, field, value, named):
  c = _cfg(tmp_path)
  node, leaf = c, field.split(".")
  for part in leaf[:-1]:
    node = node[part]
  with c.unlocked():
    node[leaf[-1]] = value
  with pytest.raises(validate.ConfigError) as e:
    validate.check_config(c)
  msg = str(e.value)
  assert named in msg and "\n" not in msg


def test_good_config_passes(tmp_path):
  validate.check_config(_cfg(tmp_path))
  c = default.get_config()
  c.data.name = "cifar10"
  validate.check_config(c)


def test_idx_folder_missing_files(tmp_path):
  c = _cfg(tmp_path)
  os.remove(os.path.join(c.data.dir, "t10k-images-idx3-ubyte.gz"))
  with pytest.raises(validate.ConfigError, match="t10k-images"):
    validate.check_config(c)


def test_forget_size_larger_than_class(tmp_path):
  c = _cfg(tmp_path)
  c.data.forget_size = 41
  labels = np.repeat(np.arange(10), 50)
  with pytest.raises(validate.ConfigError, match=r"data.forget_size = 41.*\[1, 40\]"):
    validate.check_against_data(c, 10, labels)


def test_every_forget_size_of_a_sweep_is_checked(tmp_path):
  c = _cfg(tmp_path)
  c.experiment.forget_sizes = (10, 41)
  labels = np.repeat(np.arange(10), 50)
  with pytest.raises(validate.ConfigError, match=r"experiment.forget_sizes = \(10, 41\).*41"):
    validate.check_against_data(c, 10, labels)


def test_class_out_of_range_for_loaded_data(tmp_path):
  c = default.get_config()
  c.data.name = "some_tfds_set"
  c.data.forget_class = 7
  with pytest.raises(validate.ConfigError, match="data.forget_class = 7"):
    validate.check_against_data(c, 5, np.repeat(np.arange(5), 10))


def test_workdir_checks(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(validate.ConfigError, match="existing file"):
    validate.check_workdir(str(f))
  with pytest.raises(validate.ConfigError, match="cannot be created"):
    validate.check_workdir(str(f / "sub"))
  with pytest.raises(validate.ConfigError, match="empty"):
    validate.check_workdir("")
  assert os.path.isabs(validate.check_workdir(str(tmp_path / "new")))


def _launch(*args):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_launch_exit_code_2_one_line(tmp_path):
  out = _launch("--config=configs/fashion_mnist.py", f"--workdir={tmp_path}/w",
                "--config.model.name=nope")
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: config field model.name")
  assert "Traceback" not in out.stderr
  out = _launch("--config=configs/fashion_mnist.py:bogus", f"--workdir={tmp_path}/w")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  out = _launch("--config=configs/missing.py")
  assert out.returncode == 2 and "Traceback" not in out.stderr
